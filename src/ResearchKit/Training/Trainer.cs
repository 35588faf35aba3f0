using System.Diagnostics;
using System.Text.Json;
using ResearchKit.Data;
using TorchSharp;
using TorchSharp.Modules;
using DataLoader = ResearchKit.Data.DataLoader;
using static TorchSharp.torch;

namespace ResearchKit.Training;

/// <summary>
/// A run's training settings. The optimizer settings are the method's recipe (<see cref="OptimizerConfig"/>;
/// null means MAE's defaults).
/// </summary>
/// <param name="Precision">How matrix products are computed (<see cref="ResearchKit.Precision"/>); null: <see cref="Compute.Precision"/> as it is.
/// Pre-training records its precision in config.json.</param>
public sealed record TrainConfig(
    int Epochs = 1, int BatchSize = 256, OptimizerConfig? Optimizer = null, double ClipGradNorm = 0,
    int Seed = 0, int LogEvery = 10, int CheckpointEvery = 200,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    Precision? Precision = null)
{
    public OptimizerConfig Optimizer { get; init; } = Optimizer ?? new OptimizerConfig();

    public void Validate()
    {
        if (Epochs < 1) throw new ResearchKitException($"epochs (--epochs) must be at least 1; got {Epochs}");
        if (BatchSize < 1) throw new ResearchKitException($"batch size (--batch) must be at least 1; got {BatchSize}");
        if (!(ClipGradNorm >= 0)) throw new ResearchKitException($"gradient clipping norm must be ≥ 0; got {ClipGradNorm}");
        if (LogEvery < 1 || CheckpointEvery < 1) throw new ResearchKitException($"log and checkpoint intervals must be positive; got {LogEvery}, {CheckpointEvery}");
        if (Precision is { } p && !Enum.IsDefined(p)) throw new ResearchKitException($"precision must be fp32, tf32 or bf16; got {p}");
        Optimizer.Validate();
    }
}

/// <summary>A snapshot for progress displays (terminal bar, notebook line) and callbacks.</summary>
/// <param name="Loss">The main loss (the first phase's, or in a run of stages the current stage's) at the last step whose losses were read back: losses are
/// read every <see cref="TrainConfig.LogEvery"/> steps, not every step, so that a step never waits for the device.</param>
/// <param name="Losses">Every phase's latest read loss by name (one entry for single-loss methods).</param>
public sealed record TrainProgress(long Step, long TotalSteps, int Epoch, int Epochs, double Loss, double LearningRate, double ImagesPerSecond,
    TimeSpan Elapsed, IReadOnlyDictionary<string, double>? Losses = null, int Threads = 0)
{
    public TimeSpan Remaining => Step == 0 ? TimeSpan.Zero : TimeSpan.FromSeconds(Elapsed.TotalSeconds / Step * (TotalSteps - Step));
}

/// <summary>Hooks into the training loop; every method is optional.</summary>
public interface ITrainerCallback
{
    void OnStepEnd(TrainProgress progress) { }
    void OnEpochEnd(int epoch, long step) { }
    void OnCheckpoint(long step, string path) { }

    /// <summary>Asks for a checkpoint after <paramref name="step"/> (1-based: steps done) besides the configured ones
    /// (<see cref="StepSnapshots"/> keeps one every N steps).</summary>
    bool WantsCheckpointAt(long step) => false;
}

/// <summary>What a finished <see cref="Trainer.Fit(DataLoader, ITrainable, IProgress{TrainProgress}?, CancellationToken)"/> returns.</summary>
/// <param name="Losses">Every step's main loss (including steps before a resume); in a run of stages, the last stage's.</param>
/// <param name="PhaseLosses">Every phase's losses by name, one per step the phase ran.</param>
/// <param name="Divergences">Every divergence the run recovered from (<see cref="IDivergenceRecovery"/>), resumed runs' included.</param>
public sealed record TrainResult(IReadOnlyList<double> Losses, long Steps, TimeSpan Elapsed, bool Resumed,
    IReadOnlyDictionary<string, List<double>>? PhaseLosses = null, IReadOnlyList<DivergenceEvent>? Divergences = null);

/// <summary>Thrown when a loss becomes NaN or infinite (or beyond its phase's bound); says where and what to try.</summary>
public sealed class TrainingDivergedException(string message, long step = -1, string phase = "", double loss = double.NaN)
    : ResearchKitException(message)
{
    public long Step { get; } = step;
    public string Phase { get; } = phase;
    public double Loss { get; } = loss;
}

/// <summary>
/// The one training loop for every method. A method supplies its update phases (a loss, its parameters, an
/// optimizer each; <see cref="ITrainable"/>); the trainer does the rest: warmup + cosine schedule per phase,
/// optional clipping, one dispose scope per step, callbacks and progress, the metrics log, atomic resumable
/// checkpoints (weights, every optimizer, the method's extra state), a clear stop on a non-finite loss (or a restart from
/// the last good checkpoint for a method that recovers: <see cref="IDivergenceRecovery"/>), and cancellation checked every
/// step (a checkpoint is written at the step where it stops). Deterministic for a seed on CPU: data order, augmentation and
/// each phase's generator depend only on (seed, epoch, step), so a restart replays the same batches.
/// </summary>
public sealed class Trainer
{
    public const string CheckpointFile = CheckpointStore.FileName, MetricsFile = MetricsLog.FileName;

    readonly TrainConfig config;
    readonly string? directory;

    /// <summary>Called during <see cref="Fit(DataLoader, ITrainable, IProgress{TrainProgress}?, CancellationToken)"/>, in order.</summary>
    public List<ITrainerCallback> Callbacks { get; } = [];

    /// <summary>What the weights are trained from, recorded in every checkpoint and checked on resume (<see cref="Training.Provenance"/>).</summary>
    public Provenance? Provenance { get; init; }

    /// <param name="directory">Where checkpoint.bin and metrics.jsonl go; null trains in memory only.</param>
    public Trainer(TrainConfig config, string? directory = null)
    {
        config.Validate();
        this.config = config;
        this.directory = directory;
    }

    /// <summary>Trains one module on one loss (all its trainable parameters).</summary>
    public TrainResult Fit(DataLoader loader, nn.Module module, Func<Batch, Generator, Tensor> loss,
        IProgress<TrainProgress>? progress = null, CancellationToken cancel = default) =>
        Fit(loader, new SingleLoss(module, loss), progress, cancel);

    /// <summary>
    /// Trains for config.Epochs over <paramref name="loader"/>. With a directory holding a checkpoint, resumes
    /// from it and continues the same loss curves. A step never waits for the device: its losses stay there and are
    /// read back together every <see cref="TrainConfig.LogEvery"/> steps (and at the first step, at checkpoints, at
    /// epoch ends and at the end), which is also when a non-finite loss is caught — before any checkpoint keeps it.
    /// </summary>
    public TrainResult Fit(DataLoader loader, ITrainable trainable, IProgress<TrainProgress>? progress = null, CancellationToken cancel = default)
    {
        var model = trainable.Module;
        var phases = trainable.Phases();
        if (phases.Count == 0) throw new ResearchKitException("the method has no update phases");
        foreach (var phase in phases)
        {
            if (phase.Parameters.Count == 0) throw new ResearchKitException($"phase '{phase.Name}' has no trainable parameters");
            if (phase.Every < 1) throw new ResearchKitException($"phase '{phase.Name}': Every must be at least 1; got {phase.Every}");
            phase.Window?.Validate(phase.Name);
            phase.Optimizer?.Validate($"phase '{phase.Name}'");
        }
        if (phases.Select(p => p.Name).Distinct().Count() != phases.Count)
            throw new ResearchKitException($"update phases need distinct names; got {string.Join(", ", phases.Select(p => p.Name))}");
        if (directory is not null) Directory.CreateDirectory(directory);
        var previousPrecision = Compute.Precision;
        if (config.Precision is { } precision) Compute.Precision = precision;
        // oneDNN's CPU convolutions are fast but wrong for some channel counts (environment.md): on only where none occurs
        using var convolutions = OneDnn.For(model);
        var optimizers = phases.Select(p => p.CreateOptimizer(config.Optimizer, config.BatchSize)).ToArray();
        var recovery = directory is null ? null : trainable.Recovery;   // a restart needs a checkpoint to go back to
        var divergences = recovery is null ? [] : DivergenceLog.Read(directory!);
        bool resumed = directory is not null && CheckpointStore.SavedStep(Path.Combine(directory, CheckpointFile)) > 0;
        try
        {
            if (divergences.Any(d => d.Stopped)) return LastGood(trainable, phases, optimizers, divergences, loader.BatchesPerEpoch * config.Epochs) with { Resumed = resumed };
            while (true)
            {
                try { return Run(loader, trainable, model, phases, optimizers, progress, cancel, recovery, divergences) with { Resumed = resumed }; }
                catch (TrainingDivergedException e) when (recovery is not null && e.Step >= 0)
                {
                    long from = CheckpointStore.SavedStep(Path.Combine(directory!, CheckpointFile)) ?? 0;
                    if (divergences.Count >= recovery.MaxRestarts && recovery.StopsWhenExhausted)
                    {
                        divergences.Add(new DivergenceEvent(e.Step, e.Phase, e.Loss, from, divergences.Count + 1,
                            $"stopped: training ends at the last good checkpoint (step {from})", Stopped: true));
                        DivergenceLog.Write(directory!, divergences);
                        return LastGood(trainable, phases, optimizers, divergences, loader.BatchesPerEpoch * config.Epochs) with { Resumed = resumed };
                    }
                    if (divergences.Count >= recovery.MaxRestarts)
                        throw new TrainingDivergedException($"{e.Message}; it still diverged after {divergences.Count} restart(s) " +
                            $"({Path.Combine(directory!, DivergenceLog.FileName)})", e.Step, e.Phase, e.Loss);
                    string action = recovery.AfterRestarts(divergences.Count + 1);
                    divergences.Add(new DivergenceEvent(e.Step, e.Phase, e.Loss, from, divergences.Count + 1, action));
                    DivergenceLog.Write(directory!, divergences);
                }
            }
        }
        finally
        {
            Compute.Precision = previousPrecision;
            foreach (var optimizer in optimizers) optimizer.Dispose();
        }
    }

    TrainResult Run(DataLoader loader, ITrainable trainable, nn.Module model, IReadOnlyList<UpdatePhase> phases, FlatOptimizer[] optimizers,
        IProgress<TrainProgress>? progress, CancellationToken cancel, IDivergenceRecovery? recovery, IReadOnlyList<DivergenceEvent> divergences)
    {
        long perEpoch = loader.BatchesPerEpoch, total = perEpoch * config.Epochs;
        CheckWindowsCover(phases, total);
        int checkpointEvery = Math.Min(config.CheckpointEvery, recovery?.CheckpointEvery ?? int.MaxValue);
        var losses = phases.ToDictionary(p => p.Name, _ => new List<double>());
        long step = 0;
        var checkpoint = directory is null ? null : new CheckpointStore(directory);
        var metrics = directory is null ? null : new MetricsLog(directory);
        if (checkpoint is not null && checkpoint.Exists)
        {
            step = checkpoint.Load(config, model, phases, optimizers, trainable.State, losses, Provenance);
        }
        else if (recovery is not null)   // the initial weights: the last good checkpoint of a run that diverges before its first
            checkpoint!.Save(0, config, model, phases, optimizers, trainable.State, losses, Provenance);
        recovery?.AfterRestarts(DivergenceLog.Restarts(divergences));
        metrics?.TrimTo(step);   // lines logged after the checkpoint (or before any: a run killed early) belong to no curve

        var threads = new ThreadPolicy();   // RESEARCHKIT_THREADS: fixed by default; "auto" adapts to the idle cores
        threads.Choose();
        var clock = Stopwatch.StartNew();
        var window = Stopwatch.StartNew();
        long windowImages = 0, stepsThisRun = 0;
        double imagesPerSecond = 0;
        // Each phase's latest read loss (a phase that runs every n-th step keeps its last value in between), restored on resume.
        var latest = losses.Where(kv => kv.Value.Count > 0).ToDictionary(kv => kv.Key, kv => kv.Value[^1]);
        var pending = new PendingLosses(phases, losses, latest, directory);
        var othersOf = OtherPhasesParameters(phases);
        model.train();
        try
        {
            for (int epoch = (int)(step / perEpoch); epoch < config.Epochs; epoch++)
            {
                foreach (var indices in loader.Epoch(epoch, skip: (int)(step % perEpoch)))
                {
                    if (cancel.IsCancellationRequested)
                    {
                        if (checkpoint is not null && stepsThisRun > 0) Save(step);
                        cancel.ThrowIfCancellationRequested();
                    }
                    double lr = 0;
                    using (var scope = NewDisposeScope())
                    {
                        var batch = loader.Load(indices);
                        for (int i = 0; i < phases.Count; i++)
                        {
                            var phase = phases[i];
                            if (phase.LearningRateAt(step, total, config.Optimizer, config.BatchSize) is not { } scheduled) continue;
                            if (phase.Begin is not null && step == phase.StepsIn(total).Start) phase.Begin();
                            double phaseLr = scheduled * (recovery?.LearningRateFactor ?? 1);   // smaller after a restart
                            if (lr == 0) lr = phaseLr;   // progress shows the rate of the first phase that trains at this step
                            optimizers[i].LearningRate = phaseLr;
                            // The first phase keeps the single-loss seed, so a method's curve does not depend on how many phases exist.
                            // A host generator: Draws turns it into draws on the batch's device.
                            using var generator = new Generator((ulong)(i == 0 ? Seeds.Mix(config.Seed, step, 0x57e9) : Seeds.Mix(config.Seed, step, 0x57e9, i)));
                            using var frozen = new FrozenWhile(othersOf[i]);   // a GAN's G step computes no D weight gradients
                            var loss = phase.Loss(batch, generator);
                            pending.Add(phase.Name, loss, step, epoch, phaseLr);
                            optimizers[i].ZeroGrad();
                            loss.backward();
                            if (config.ClipGradNorm > 0) optimizers[i].ClipGradNorm(config.ClipGradNorm);
                            optimizers[i].Step();
                        }
                        windowImages += batch.Size;
                    }
                    step++; stepsThisRun++;
                    bool epochEnd = step % perEpoch == 0, checkpointDue = checkpoint is not null
                        && (step % checkpointEvery == 0 || epochEnd || Callbacks.Any(c => c.WantsCheckpointAt(step)));
                    bool logged = step % config.LogEvery == 0 || step == total || step == 1;
                    if (logged || checkpointDue || epochEnd || stepsThisRun == 1) pending.Read();   // the first step of a run: a loss to show early
                    if (window.Elapsed.TotalSeconds >= 2 || stepsThisRun <= 2 || step == total)
                    {
                        imagesPerSecond = windowImages / Math.Max(1e-9, window.Elapsed.TotalSeconds);
                        window.Restart(); windowImages = 0;
                    }
                    double main = latest.GetValueOrDefault(MainPhase(phases, step - 1, total), double.NaN);
                    if (metrics is not null && logged)
                        metrics.Append(new StepMetrics(epoch, step, main, lr, Math.Round(imagesPerSecond, 1), phases.Count > 1 ? new Dictionary<string, double>(latest) : null));
                    var snapshot = new TrainProgress(step, total, epoch, config.Epochs, main, lr, imagesPerSecond, clock.Elapsed,
                        new Dictionary<string, double>(latest), get_num_threads());
                    progress?.Report(snapshot);
                    foreach (var callback in Callbacks) callback.OnStepEnd(snapshot);
                    if (checkpointDue) Save(step);
                    if (epochEnd)
                    {
                        threads.Choose();
                        foreach (var callback in Callbacks) callback.OnEpochEnd(epoch, step);
                    }
                }
            }
            pending.Read();
        }
        finally { pending.Dispose(); }
        model.eval();
        return new TrainResult(losses[MainPhase(phases, total - 1, total)], step, clock.Elapsed, false, losses, [.. divergences]);   // Fit sets Resumed

        void Save(long at)
        {
            pending.Read();
            checkpoint!.Save(at, config, model, phases, optimizers, trainable.State, losses, Provenance);
            foreach (var callback in Callbacks) callback.OnCheckpoint(at, checkpoint.Path);
        }
    }

    /// <summary>A run that stopped after diverging: its last good checkpoint restored (weights, state, losses), trained no further.</summary>
    TrainResult LastGood(ITrainable trainable, IReadOnlyList<UpdatePhase> phases, FlatOptimizer[] optimizers, List<DivergenceEvent> divergences, long total)
    {
        var losses = phases.ToDictionary(p => p.Name, _ => new List<double>());
        long step = new CheckpointStore(directory!).Load(config, trainable.Module, phases, optimizers, trainable.State, losses, Provenance);
        new MetricsLog(directory!).TrimTo(step);
        trainable.Recovery!.AfterRestarts(DivergenceLog.Restarts(divergences));
        trainable.Module.eval();
        return new TrainResult(losses[MainPhase(phases, step - 1, total)], step, TimeSpan.Zero, false, losses, [.. divergences]);   // the stage it stopped in
    }

    /// <summary>For each phase, the parameters that other phases train and it does not: its loss may pass through them (a
    /// generator's loss through the discriminator), but their gradients would be computed only to be thrown away.</summary>
    static Parameter[][] OtherPhasesParameters(IReadOnlyList<UpdatePhase> phases) => phases.Select(phase =>
    {
        var own = phase.Parameters.Select(p => p.Parameter).ToHashSet(ReferenceEqualityComparer.Instance);
        return phases.Where(other => other != phase).SelectMany(other => other.Parameters).Select(p => p.Parameter)
            .Where(p => !own.Contains(p)).Distinct(ReferenceEqualityComparer.Instance).Cast<Parameter>().ToArray();
    }).ToArray();

    /// <summary>Parameters held out of autograd for one phase's forward and backward, and given back afterwards.</summary>
    readonly struct FrozenWhile : IDisposable
    {
        readonly Parameter[] parameters;

        public FrozenWhile(Parameter[] parameters)
        {
            this.parameters = parameters;
            foreach (var p in parameters) p.requires_grad = false;
        }

        public void Dispose()
        {
            foreach (var p in parameters) p.requires_grad = true;
        }
    }

    /// <summary>The phase whose loss is the run's main loss at <paramref name="step"/>: the first whose window holds it, so a run in
    /// stages (Go-Wide-Then-Narrow) shows the current stage's loss; the first phase when windows are not used (a GAN's discriminator).</summary>
    static string MainPhase(IReadOnlyList<UpdatePhase> phases, long step, long total) =>
        (phases.FirstOrDefault(p => p.StepsIn(total) is var (start, end) && step >= start && step < end) ?? phases[0]).Name;

    /// <summary>Every step must train some phase: windows that leave a gap would spend steps (and data) on nothing.</summary>
    static void CheckWindowsCover(IReadOnlyList<UpdatePhase> phases, long total)
    {
        if (phases.All(p => p.Window is null)) return;
        var windows = phases.Select(p => p.StepsIn(total)).Where(w => w.End > w.Start).OrderBy(w => w.Start).ToList();
        long covered = 0;
        foreach (var (start, end) in windows)
        {
            if (start > covered) break;
            covered = Math.Max(covered, end);
        }
        if (covered < total)
            throw new ResearchKitException($"no phase trains at step {covered} of {total}: the phases' windows " +
                $"({string.Join(", ", phases.Select(p => $"{p.Name} [{p.StepsIn(total).Start}, {p.StepsIn(total).End})"))}) leave a gap");
    }

    /// <summary>
    /// Losses of the steps since the last read, still on the device; <see cref="Read"/> brings them to the host in one
    /// transfer, appends them to the loss curves and stops training at the first non-finite one.
    /// </summary>
    sealed class PendingLosses(IReadOnlyList<UpdatePhase> phases, Dictionary<string, List<double>> curves, Dictionary<string, double> latest,
        string? directory) : IDisposable
    {
        readonly List<(string Phase, Tensor Loss, long Step, int Epoch, double LearningRate)> entries = [];

        public void Add(string phase, Tensor loss, long step, int epoch, double learningRate) =>
            entries.Add((phase, loss.detach().to_type(ScalarType.Float32).DetachFromDisposeScope(), step, epoch, learningRate));

        public void Read()
        {
            if (entries.Count == 0) return;
            float[] values;
            using (var scope = NewDisposeScope()) values = stack(entries.Select(e => e.Loss).ToArray()).to(CPU).data<float>().ToArray();
            try
            {
                for (int i = 0; i < entries.Count; i++)
                {
                    var (phase, _, step, epoch, lr) = entries[i];
                    double value = values[i];
                    var bound = phases.First(p => p.Name == phase).DivergesAbove;
                    if (!double.IsFinite(value) || Math.Abs(value) > bound)
                        throw new TrainingDivergedException(
                            $"{(phases.Count > 1 ? $"phase '{phase}': " : "")}loss became {value}{(double.IsFinite(value) ? $", beyond ±{bound:g3}," : "")} " +
                            $"at step {step} (epoch {epoch}, lr {lr:g3}); " +
                            (directory is not null && File.Exists(Path.Combine(directory, CheckpointFile)) ? $"the last checkpoint in {directory} is kept; " : "") +
                            "lower the learning rate or set gradient clipping", step, phase, value);
                    curves[phase].Add(value);
                    latest[phase] = value;
                }
            }
            finally { Dispose(); }
        }

        public void Dispose()
        {
            foreach (var e in entries) e.Loss.Dispose();
            entries.Clear();
        }
    }

    /// <summary>Loads only the model weights of a checkpoint written by a trainer (for probing, fine-tuning).</summary>
    public static void LoadWeights(nn.Module model, string checkpointPath, Provenance? provenance = null, string describedBy = "config.json") =>
        CheckpointStore.LoadWeights(model, checkpointPath, provenance, describedBy);

    /// <summary>The logged steps of a run folder's metrics.jsonl, in order.</summary>
    public static List<StepMetrics> ReadMetrics(string directory) => MetricsLog.Read(directory);
}

/// <summary>An IProgress that calls back on the training thread (System.Progress posts to the thread pool instead).</summary>
public sealed class CallbackProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
