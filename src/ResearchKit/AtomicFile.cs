namespace ResearchKit;

/// <summary>Writes that never leave a half-written file: write a temporary sibling, then rename over the target.</summary>
public static class AtomicFile
{
    public static void Write(string path, Action<Stream> write)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(directory);
        var temp = Path.Combine(directory, $".{Path.GetFileName(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }

    /// <summary>
    /// Deletes temporary files that a killed write left in <paramref name="folder"/>: .NAME.PID.GUID.tmp whose writing
    /// process no longer runs (a live writer's file is left alone). Returns how many were removed.
    /// </summary>
    public static int RemoveOrphans(string folder)
    {
        if (!Directory.Exists(folder)) return 0;
        int removed = 0;
        foreach (var path in Directory.EnumerateFiles(folder, ".*.tmp"))
        {
            var parts = Path.GetFileName(path).Split('.');   // "", NAME…, PID, GUID, "tmp"
            if (parts.Length < 4 || !int.TryParse(parts[^3], out var pid) || IsRunning(pid)) continue;
            File.Delete(path);
            removed++;
        }
        return removed;
    }

    static bool IsRunning(int pid)
    {
        try { using var process = System.Diagnostics.Process.GetProcessById(pid); return !process.HasExited; }
        catch (ArgumentException) { return false; }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, s => { using var w = new StreamWriter(s, leaveOpen: true); w.Write(text); });
}
