namespace ResearchKit.Runs;

/// <summary>
/// One writer per folder: an OS file lock on FOLDER/.lock, held while a process trains there and released when the
/// process ends, however it ends (.NET takes FileShare.None as an exclusive flock on Linux). Taking the lock also
/// removes temporary files a killed write left behind (.NAME.PID.GUID.tmp, see <see cref="AtomicFile.RemoveOrphans"/>).
/// </summary>
public sealed class RunLock : IDisposable
{
    public const string FileName = ".lock";
    readonly FileStream stream;

    RunLock(FileStream stream) => this.stream = stream;

    /// <summary>The lock, or null when another process holds it.</summary>
    public static RunLock? TryAcquire(string folder)
    {
        Directory.CreateDirectory(folder);
        try
        {
            var stream = new FileStream(Path.Combine(folder, FileName), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            AtomicFile.RemoveOrphans(folder);
            return new RunLock(stream);
        }
        catch (IOException) when (File.Exists(Path.Combine(folder, FileName)))
        {
            return null;
        }
    }

    /// <summary>The lock, or a one-line error saying another process is training in the folder.</summary>
    public static RunLock Acquire(string folder) => TryAcquire(folder)
        ?? throw new ResearchKitException($"{folder}: another process is training in this folder (it holds {Path.Combine(folder, FileName)}); wait for it or choose another --out");

    public void Dispose() => stream.Dispose();
}
