namespace ResearchKit.Training;

/// <summary>
/// Keeps the checkpoint written at the end of every <paramref name="every"/>-th epoch as snapshots/epoch-NNN.bin in the
/// run folder, so one run can be evaluated along its training (MAE Fig. 7, "training schedules": accuracy against
/// pre-training length from the checkpoints of a single run). A resumed run keeps the snapshots it already has.
/// </summary>
public sealed class EpochSnapshots(string runDirectory, int every = 1) : ITrainerCallback
{
    public const string Folder = Snapshots.Folder;
    string? latest;

    /// <summary>The snapshot of the end of <paramref name="epoch"/> (1-based: after that many epochs).</summary>
    public static string PathOf(string runDirectory, int epoch) => Path.Combine(runDirectory, Folder, $"epoch-{epoch:D3}.bin");

    /// <summary>The epochs whose snapshots a run folder holds, in order.</summary>
    public static IReadOnlyList<int> Kept(string runDirectory) => Snapshots.Kept(runDirectory, "epoch-").Select(n => (int)n).ToList();

    public void OnCheckpoint(long step, string path) => latest = path;

    public void OnEpochEnd(int epoch, long step)
    {
        // The trainer checkpoints at every epoch end before it calls OnEpochEnd, so `latest` holds this epoch's end.
        if ((epoch + 1) % every != 0 || latest is null) return;
        Snapshots.Keep(latest, PathOf(runDirectory, epoch + 1));
    }
}

/// <summary>
/// Keeps the weights after every N-th step as snapshots/step-NNNNNNN.bin (SSGAN's forgetting
/// curve, Chen et al. 2019 Fig. 2: a probe every few thousand steps, not per epoch). It asks the trainer for a checkpoint
/// at those steps, so no checkpoint interval has to line up with it.
/// </summary>
public sealed class StepSnapshots : ITrainerCallback
{
    readonly string runDirectory;
    readonly long every;

    public StepSnapshots(string runDirectory, long every)
    {
        if (every < 1) throw new ResearchKitException($"snapshot interval (--snapshot-steps) must be at least 1 step; got {every}");
        (this.runDirectory, this.every) = (runDirectory, every);
    }

    /// <summary>The snapshot after <paramref name="step"/> steps.</summary>
    public static string PathOf(string runDirectory, long step) => Path.Combine(runDirectory, Snapshots.Folder, $"step-{step:D7}.bin");

    /// <summary>The steps whose snapshots a run folder holds, in order.</summary>
    public static IReadOnlyList<long> Kept(string runDirectory) => Snapshots.Kept(runDirectory, "step-");

    public bool WantsCheckpointAt(long step) => step % every == 0;

    public void OnCheckpoint(long step, string path)
    {
        if (step % every == 0) Snapshots.Keep(path, PathOf(runDirectory, step));
    }
}

/// <summary>What the snapshot keepers share: the folder, an atomic copy, and the numbers a folder holds.</summary>
static class Snapshots
{
    public const string Folder = "snapshots";

    public static void Keep(string checkpoint, string target)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        AtomicFile.Write(target, stream =>
        {
            using var source = File.OpenRead(checkpoint);
            source.CopyTo(stream);
        });
    }

    public static IReadOnlyList<long> Kept(string runDirectory, string prefix)
    {
        var folder = Path.Combine(runDirectory, Folder);
        if (!Directory.Exists(folder)) return [];
        return Directory.GetFiles(folder, prefix + "*.bin").Select(f => Path.GetFileNameWithoutExtension(f)[prefix.Length..])
            .Select(n => long.TryParse(n, out var e) ? e : -1).Where(e => e >= 0).Order().ToList();
    }
}
