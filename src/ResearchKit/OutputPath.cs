namespace ResearchKit;

/// <summary>
/// Checks an output path before any work is done: a folder where a file is wanted (or the reverse), or a parent that is a
/// file, is one line naming it, at once, not .NET's "Could not find a part of the path" after minutes of training.
/// </summary>
public static class OutputPath
{
    /// <summary>A folder to write into (created later): not an existing file, and under no file.</summary>
    public static string Folder(string path, string option = "--out")
    {
        if (System.IO.File.Exists(path)) throw new ResearchKitException($"{path}: is a file; {option} must be a folder");
        RequireParents(path, option);
        return path;
    }

    /// <summary>A file to write (created later, atomically): not an existing folder, and under no file.</summary>
    public static string File(string path, string option = "--out")
    {
        if (Directory.Exists(path)) throw new ResearchKitException($"{path}: is a folder; {option} must be a file");
        RequireParents(path, option);
        return path;
    }

    static void RequireParents(string path, string option)
    {
        for (var parent = Path.GetDirectoryName(Path.GetFullPath(path)); !string.IsNullOrEmpty(parent); parent = Path.GetDirectoryName(parent))
        {
            if (System.IO.File.Exists(parent))
                throw new ResearchKitException($"{path}: {parent} is a file, so {option} cannot be created under it");
            if (Directory.Exists(parent)) return;
        }
    }
}
