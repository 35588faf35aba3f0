namespace ResearchKit.Training;

/// <summary>
/// Keeps the checkpoint written at the end of every <paramref name="every"/>-th epoch as snapshots/epoch-NNN.bin in the
/// run folder, so one run can be evaluated along its training (MAE Fig. 7, "training schedules": accuracy against
/// pre-training length from the checkpoints of a single run). A resumed run keeps the snapshots it already has.
/// </summary>
public sealed class EpochSnapshots(string runDirectory, int every = 1) : ITrainerCallback
{
    public const string Folder = "snapshots";
    string? latest;

    /// <summary>The snapshot of the end of <paramref name="epoch"/> (1-based: after that many epochs).</summary>
    public static string PathOf(string runDirectory, int epoch) => Path.Combine(runDirectory, Folder, $"epoch-{epoch:D3}.bin");

    /// <summary>The epochs whose snapshots a run folder holds, in order.</summary>
    public static IReadOnlyList<int> Kept(string runDirectory)
    {
        var folder = Path.Combine(runDirectory, Folder);
        if (!Directory.Exists(folder)) return [];
        return Directory.GetFiles(folder, "epoch-*.bin").Select(f => Path.GetFileNameWithoutExtension(f)["epoch-".Length..])
            .Select(n => int.TryParse(n, out var e) ? e : -1).Where(e => e >= 0).Order().ToList();
    }

    public void OnCheckpoint(long step, string path) => latest = path;

    public void OnEpochEnd(int epoch, long step)
    {
        // The trainer checkpoints at every epoch end before it calls OnEpochEnd, so `latest` holds this epoch's end.
        if ((epoch + 1) % every != 0 || latest is null) return;
        var target = PathOf(runDirectory, epoch + 1);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        AtomicFile.Write(target, stream =>
        {
            using var source = File.OpenRead(latest);
            source.CopyTo(stream);
        });
    }
}
