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
public sealed record TrainConfig(
    int Epochs = 1, int BatchSize = 256, OptimizerConfig? Optimizer = null, double ClipGradNorm = 0,
    int Seed = 0, int LogEvery = 10, int CheckpointEvery = 200)
{
    public OptimizerConfig Optimizer { get; init; } = Optimizer ?? new OptimizerConfig();

    public void Validate()
    {
        if (Epochs < 1) throw new ResearchKitException($"epochs (--epochs) must be at least 1; got {Epochs}");
        if (BatchSize < 1) throw new ResearchKitException($"batch size (--batch) must be at least 1; got {BatchSize}");
        if (!(ClipGradNorm >= 0)) throw new ResearchKitException($"gradient clipping norm must be ≥ 0; got {ClipGradNorm}");
        if (LogEvery < 1 || CheckpointEvery < 1) throw new ResearchKitException($"log and checkpoint intervals must be positive; got {LogEvery}, {CheckpointEvery}");
        Optimizer.Validate();
    }
}

/// <summary>A snapshot for progress displays (terminal bar, notebook line) and callbacks.</summary>
/// <param name="Loss">The first phase's loss (the method's main loss).</param>
/// <param name="Losses">Every phase's latest loss by name (one entry for single-loss methods).</param>
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
}

/// <summary>What a finished <see cref="Trainer.Fit(DataLoader, ITrainable, IProgress{TrainProgress}?, CancellationToken)"/> returns.</summary>
/// <param name="Losses">Every step's main loss (including steps before a resume).</param>
/// <param name="PhaseLosses">Every phase's losses by name, one per step the phase ran.</param>
public sealed record TrainResult(IReadOnlyList<double> Losses, long Steps, TimeSpan Elapsed, bool Resumed,
    IReadOnlyDictionary<string, List<double>>? PhaseLosses = null);

/// <summary>Thrown when a loss becomes NaN or infinite; says where and what to try.</summary>
public sealed class TrainingDivergedException(string message) : ResearchKitException(message);

/// <summary>
/// The one training loop for every method. A method supplies its update phases (a loss, its parameters, an
/// optimizer each; <see cref="ITrainable"/>); the trainer does the rest: warmup + cosine schedule per phase,
/// optional clipping, one dispose scope per step, callbacks and progress, the metrics log, atomic resumable
/// checkpoints (weights, every optimizer, the method's extra state), a clear stop on a non-finite loss, and
/// cancellation checked every step (a checkpoint is written at the step where it stops). Deterministic for a
/// seed on CPU: data order, augmentation and each phase's generator depend only on (seed, epoch, step).
/// </summary>
public sealed class Trainer
{
    public const string CheckpointFile = CheckpointStore.FileName, MetricsFile = MetricsLog.FileName;

    readonly TrainConfig config;
    readonly string? directory;

    /// <summary>Called during <see cref="Fit(DataLoader, ITrainable, IProgress{TrainProgress}?, CancellationToken)"/>, in order.</summary>
    public List<ITrainerCallback> Callbacks { get; } = [];

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
    /// from it and continues the same loss curves.
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
        }
        if (phases.Select(p => p.Name).Distinct().Count() != phases.Count)
            throw new ResearchKitException($"update phases need distinct names; got {string.Join(", ", phases.Select(p => p.Name))}");
        if (directory is not null) Directory.CreateDirectory(directory);
        var optimizers = phases.Select(p => p.CreateOptimizer(config.Optimizer, config.BatchSize)).ToArray();

        long perEpoch = loader.BatchesPerEpoch, total = perEpoch * config.Epochs;
        var losses = phases.ToDictionary(p => p.Name, _ => new List<double>());
        long step = 0;
        bool resumed = false;
        var checkpoint = directory is null ? null : new CheckpointStore(directory);
        var metrics = directory is null ? null : new MetricsLog(directory);
        if (checkpoint is not null && checkpoint.Exists)
        {
            step = checkpoint.Load(config, model, phases, optimizers, trainable.State, losses);
            resumed = true;
        }
        metrics?.TrimTo(step);   // lines logged after the checkpoint (or before any: a run killed early) belong to no curve

        var threads = new ThreadPolicy();   // RESEARCHKIT_THREADS: fixed by default; "auto" adapts to the idle cores
        threads.Choose();
        var clock = Stopwatch.StartNew();
        var window = Stopwatch.StartNew();
        long windowImages = 0, stepsThisRun = 0;
        double imagesPerSecond = 0;
        // Each phase's latest loss (a phase that runs every n-th step keeps its last value in between), restored on resume.
        var latest = losses.Where(kv => kv.Value.Count > 0).ToDictionary(kv => kv.Key, kv => kv.Value[^1]);
        model.train();
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
                        if (step % phase.Every != 0) continue;
                        var settings = phase.SettingsOr(config.Optimizer);
                        double phaseLr = LearningRateSchedule.WarmupCosine(step, total, (long)Math.Round(total * settings.WarmupFraction), settings.PeakLearningRate(config.BatchSize));
                        if (i == 0) lr = phaseLr;
                        foreach (var group in optimizers[i].ParamGroups) group.LearningRate = phaseLr;
                        // The first phase keeps the single-loss seed, so a method's curve does not depend on how many phases exist.
                        using var generator = new Generator((ulong)(i == 0 ? Seeds.Mix(config.Seed, step, 0x57e9) : Seeds.Mix(config.Seed, step, 0x57e9, i)));
                        var loss = phase.Loss(batch, generator);
                        double value = loss.item<float>();
                        if (!double.IsFinite(value))
                            throw new TrainingDivergedException(
                                $"{(phases.Count > 1 ? $"phase '{phase.Name}': " : "")}loss became {value} at step {step} (epoch {epoch}, lr {phaseLr:g3}); " +
                                (checkpoint?.Exists == true ? $"the last checkpoint in {directory} is kept; " : "") +
                                "lower the learning rate or set gradient clipping");
                        optimizers[i].zero_grad();
                        loss.backward();
                        if (config.ClipGradNorm > 0) nn.utils.clip_grad_norm_(phase.Parameters.Select(p => p.Parameter), config.ClipGradNorm);
                        optimizers[i].step();
                        losses[phase.Name].Add(value);
                        latest[phase.Name] = value;
                    }
                    windowImages += batch.Size;
                }
                step++; stepsThisRun++;
                if (window.Elapsed.TotalSeconds >= 2 || stepsThisRun <= 2 || step == total)
                {
                    imagesPerSecond = windowImages / Math.Max(1e-9, window.Elapsed.TotalSeconds);
                    window.Restart(); windowImages = 0;
                }
                double main = latest[phases[0].Name];
                if (metrics is not null && (step % config.LogEvery == 0 || step == total || step == 1))
                    metrics.Append(new StepMetrics(epoch, step, main, lr, Math.Round(imagesPerSecond, 1), phases.Count > 1 ? new Dictionary<string, double>(latest) : null));
                var snapshot = new TrainProgress(step, total, epoch, config.Epochs, main, lr, imagesPerSecond, clock.Elapsed,
                    new Dictionary<string, double>(latest), get_num_threads());
                progress?.Report(snapshot);
                foreach (var callback in Callbacks) callback.OnStepEnd(snapshot);
                bool epochEnd = step % perEpoch == 0;
                if (checkpoint is not null && (step % config.CheckpointEvery == 0 || epochEnd)) Save(step);
                if (epochEnd)
                {
                    threads.Choose();
                    foreach (var callback in Callbacks) callback.OnEpochEnd(epoch, step);
                }
            }
        }
        model.eval();
        return new TrainResult(losses[phases[0].Name], step, clock.Elapsed, resumed, losses);

        void Save(long at)
        {
            checkpoint!.Save(at, config, model, phases, optimizers, trainable.State, losses);
            foreach (var callback in Callbacks) callback.OnCheckpoint(at, checkpoint.Path);
        }
    }

    /// <summary>Loads only the model weights of a checkpoint written by a trainer (for probing, fine-tuning).</summary>
    public static void LoadWeights(nn.Module model, string checkpointPath) => CheckpointStore.LoadWeights(model, checkpointPath);

    /// <summary>The logged steps of a run folder's metrics.jsonl, in order.</summary>
    public static List<StepMetrics> ReadMetrics(string directory) => MetricsLog.Read(directory);
}

/// <summary>An IProgress that calls back on the training thread (System.Progress posts to the thread pool instead).</summary>
public sealed class CallbackProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
