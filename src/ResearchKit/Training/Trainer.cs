using System.Diagnostics;
using System.Text.Json;
using ResearchKit.Data;
using TorchSharp;
using TorchSharp.Modules;
using DataLoader = ResearchKit.Data.DataLoader;
using static TorchSharp.torch;

namespace ResearchKit.Training;

/// <summary>
/// Optimisation settings; defaults are MAE's pre-training recipe (MAE Appendix A.1, Table 8): AdamW
/// β = (0.9, 0.95), weight decay 0.05, base lr 1.5e-4 scaled by batch/256, cosine decay after warmup.
/// </summary>
public sealed record TrainConfig(
    int Epochs = 1, int BatchSize = 256, double BaseLearningRate = 1.5e-4, double WeightDecay = 0.05,
    double Beta1 = 0.9, double Beta2 = 0.95, double WarmupFraction = 0.05, double ClipGradNorm = 0,
    int Seed = 0, int LogEvery = 10, int CheckpointEvery = 200)
{
    /// <summary>Peak learning rate: base × batch / 256 (the linear scaling rule MAE uses).</summary>
    public double LearningRate => BaseLearningRate * BatchSize / 256;

    public void Validate()
    {
        if (Epochs < 1) throw new ResearchKitException($"epochs must be at least 1; got {Epochs}");
        if (BatchSize < 1) throw new ResearchKitException($"batch size must be at least 1; got {BatchSize}");
        if (!(BaseLearningRate > 0)) throw new ResearchKitException($"learning rate must be positive; got {BaseLearningRate}");
        if (WarmupFraction is < 0 or >= 1) throw new ResearchKitException($"warmup fraction must be in [0, 1); got {WarmupFraction}");
    }
}

/// <summary>A snapshot for progress displays (terminal bar, notebook line).</summary>
public sealed record TrainProgress(long Step, long TotalSteps, int Epoch, int Epochs, double Loss, double LearningRate, double ImagesPerSecond, TimeSpan Elapsed)
{
    public TimeSpan Remaining => Step == 0 ? TimeSpan.Zero : TimeSpan.FromSeconds(Elapsed.TotalSeconds / Step * (TotalSteps - Step));
}

/// <summary>One logged step (a line of metrics.jsonl).</summary>
public sealed record StepMetrics(int Epoch, long Step, double Loss, double Lr, double ImagesPerS);

/// <summary>What a finished <see cref="Trainer.Fit"/> returns: every step's loss (including steps before a resume).</summary>
public sealed record TrainResult(IReadOnlyList<double> Losses, long Steps, TimeSpan Elapsed, bool Resumed);

/// <summary>Thrown when the loss becomes NaN or infinite; says where and what to try.</summary>
public sealed class TrainingDivergedException(string message) : ResearchKitException(message);

/// <summary>
/// The one training loop for every method: a method supplies its loss; the trainer does the rest —
/// AdamW, warmup + cosine schedule, optional clipping, one dispose scope per step, progress, metrics,
/// atomic resumable checkpoints, a clear stop on a non-finite loss. Deterministic for a seed on CPU:
/// data order, augmentation and the per-step generator depend only on (seed, epoch, step).
/// </summary>
public sealed class Trainer
{
    public const string CheckpointFile = "checkpoint.bin", MetricsFile = "metrics.jsonl";

    readonly nn.Module model;
    readonly TrainConfig config;
    readonly string? directory;
    readonly OptimizerHelper optimizer;

    /// <param name="model">Trainable parameters are those with requires_grad.</param>
    /// <param name="directory">Where checkpoint.bin and metrics.jsonl go; null trains in memory only.</param>
    public Trainer(nn.Module model, TrainConfig config, string? directory = null)
    {
        config.Validate();
        this.model = model;
        this.config = config;
        this.directory = directory;
        optimizer = CreateOptimizer(model, config);
    }

    /// <summary>AdamW with no weight decay on biases, norms and tokens (1-D parameters), as MAE's reference does.</summary>
    static OptimizerHelper CreateOptimizer(nn.Module model, TrainConfig config)
    {
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        if (trainable.Count == 0) throw new ResearchKitException("the model has no trainable parameters");
        bool NoDecay((string name, Parameter parameter) p) => p.parameter.dim() <= 1 || p.name.EndsWith("Token", StringComparison.Ordinal);
        var groups = new List<AdamW.ParamGroup>
        {
            new(trainable.Where(p => !NoDecay(p)).Select(p => p.parameter), new AdamW.Options { weight_decay = config.WeightDecay }),
            new(trainable.Where(NoDecay).Select(p => p.parameter), new AdamW.Options { weight_decay = 0 }),
        };
        return torch.optim.AdamW(groups, config.LearningRate, config.Beta1, config.Beta2, weight_decay: config.WeightDecay);
    }

    /// <summary>
    /// Trains for config.Epochs over <paramref name="loader"/>. With a directory holding a checkpoint, resumes
    /// from it and continues the same loss curve.
    /// </summary>
    /// <param name="loss">The method's loss for a batch; the generator is seeded per step (masking noise etc.).</param>
    public TrainResult Fit(DataLoader loader, Func<Batch, Generator, Tensor> loss, IProgress<TrainProgress>? progress = null, CancellationToken cancel = default)
    {
        long perEpoch = loader.BatchesPerEpoch, total = perEpoch * config.Epochs;
        long warmup = (long)Math.Round(total * config.WarmupFraction);
        var losses = new List<double>();
        long step = 0;
        bool resumed = false;
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
            if (File.Exists(Path.Combine(directory, CheckpointFile)))
            {
                (step, losses) = LoadCheckpoint();
                resumed = true;
                TrimMetrics(step);
            }
        }

        var trainable = model.parameters().Where(p => p.requires_grad).ToArray();
        var clock = Stopwatch.StartNew();
        var window = Stopwatch.StartNew();
        long windowImages = 0, stepsThisRun = 0;
        double imagesPerSecond = 0;
        model.train();
        for (int epoch = (int)(step / perEpoch); epoch < config.Epochs; epoch++)
        {
            foreach (var indices in loader.Epoch(epoch, skip: (int)(step % perEpoch)))
            {
                cancel.ThrowIfCancellationRequested();
                double lr = LearningRateSchedule.WarmupCosine(step, total, warmup, config.LearningRate);
                double value;
                using (var scope = NewDisposeScope())
                {
                    foreach (var group in optimizer.ParamGroups) group.LearningRate = lr;
                    var batch = loader.Load(indices);
                    using var generator = new Generator((ulong)Seeds.Mix(config.Seed, step, 0x57e9));
                    var l = loss(batch, generator);
                    value = l.item<float>();
                    if (!double.IsFinite(value))
                        throw new TrainingDivergedException(
                            $"loss became {value} at step {step} (epoch {epoch}, lr {lr:g3}); " +
                            (directory is null ? "" : $"the last checkpoint in {directory} is kept; ") +
                            "lower the learning rate or set gradient clipping");
                    optimizer.zero_grad();
                    l.backward();
                    if (config.ClipGradNorm > 0) nn.utils.clip_grad_norm_(trainable, config.ClipGradNorm);
                    optimizer.step();
                    windowImages += batch.Size;
                }
                losses.Add(value);
                step++; stepsThisRun++;
                if (window.Elapsed.TotalSeconds >= 2 || stepsThisRun <= 2 || step == total)
                {
                    imagesPerSecond = windowImages / Math.Max(1e-9, window.Elapsed.TotalSeconds);
                    window.Restart(); windowImages = 0;
                }
                bool last = step == total;
                if (directory is not null && (step % config.LogEvery == 0 || last || step == 1))
                    AppendMetrics(new StepMetrics(epoch, step, value, lr, Math.Round(imagesPerSecond, 1)));
                progress?.Report(new TrainProgress(step, total, epoch, config.Epochs, value, lr, imagesPerSecond, clock.Elapsed));
                bool epochEnd = step % perEpoch == 0;
                if (directory is not null && (step % config.CheckpointEvery == 0 || epochEnd)) SaveCheckpoint(step, losses);
            }
        }
        model.eval();
        return new TrainResult(losses, step, clock.Elapsed, resumed);
    }

    // Checkpoint layout: magic, JSON trainer state, model state, optimizer state — one file, written to
    // a temporary name and renamed so a crash never leaves a half-written checkpoint.
    const string Magic = "ResearchKit.Checkpoint.v1";

    sealed record TrainerState(long Step, List<double> Losses, TrainConfig Config);

    void SaveCheckpoint(long step, List<double> losses)
    {
        var path = Path.Combine(directory!, CheckpointFile);
        AtomicFile.Write(path, stream =>
        {
            using var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
            writer.Write(Magic);
            writer.Write(JsonSerializer.Serialize(new TrainerState(step, losses, config)));
            model.save(writer);
            optimizer.save_state_dict(writer);
        });
    }

    (long Step, List<double> Losses) LoadCheckpoint()
    {
        var path = Path.Combine(directory!, CheckpointFile);
        using var reader = new BinaryReader(File.OpenRead(path));
        var state = ReadHeader(reader, path);
        if (state.Config with { Epochs = config.Epochs } != config with { Epochs = config.Epochs })
            throw new ResearchKitException($"{path}: was written with different training settings ({state.Config}); use a new output folder or the same settings (only epochs may grow)");
        model.load(reader, strict: true);
        optimizer.load_state_dict(reader);
        return (state.Step, state.Losses);
    }

    static TrainerState ReadHeader(BinaryReader reader, string path)
    {
        try
        {
            if (reader.ReadString() != Magic) throw new DataFormatException(path, $"not a ResearchKit checkpoint (expected header {Magic})");
            return JsonSerializer.Deserialize<TrainerState>(reader.ReadString()) ?? throw new DataFormatException(path, "empty trainer state");
        }
        catch (Exception e) when (e is EndOfStreamException or JsonException)
        {
            throw new DataFormatException(path, $"truncated or corrupt checkpoint header: {e.Message}");
        }
    }

    /// <summary>Loads only the model weights of a checkpoint written by a trainer (for probing, fine-tuning).</summary>
    public static void LoadWeights(nn.Module model, string checkpointPath)
    {
        if (!File.Exists(checkpointPath)) throw new ResearchKitException($"{checkpointPath}: checkpoint not found (did pre-training finish its first epoch?)");
        using var reader = new BinaryReader(File.OpenRead(checkpointPath));
        ReadHeader(reader, checkpointPath);
        try { model.load(reader, strict: true); }
        catch (Exception e) when (e is not ResearchKitException)
        {
            throw new DataFormatException(checkpointPath, $"weights do not fit the model in config.json: {e.Message}");
        }
    }

    /// <summary>The logged steps of a run folder's metrics.jsonl, in order.</summary>
    public static List<StepMetrics> ReadMetrics(string directory)
    {
        var path = Path.Combine(directory, MetricsFile);
        if (!File.Exists(path)) throw new ResearchKitException($"{path}: not found (no training logged in {directory})");
        return File.ReadAllLines(path).Where(l => l.Length > 0).Select((line, i) =>
        {
            try
            {
                var o = JsonDocument.Parse(line).RootElement;
                return new StepMetrics(o.GetProperty("epoch").GetInt32(), o.GetProperty("step").GetInt64(), o.GetProperty("loss").GetDouble(),
                    o.GetProperty("lr").GetDouble(), o.TryGetProperty("images_per_s", out var ips) ? ips.GetDouble() : double.NaN);
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException)
            {
                throw new DataFormatException(path, $"line {i + 1} is not a metrics record: {e.Message}");
            }
        }).ToList();
    }

    void AppendMetrics(StepMetrics metrics)
    {
        var line = JsonSerializer.Serialize(new { epoch = metrics.Epoch, step = metrics.Step, loss = metrics.Loss, lr = metrics.Lr, images_per_s = metrics.ImagesPerS });
        File.AppendAllText(Path.Combine(directory!, MetricsFile), line + "\n");
    }

    /// <summary>After a resume, drop metrics logged after the checkpoint so the file holds one curve.</summary>
    void TrimMetrics(long step)
    {
        var path = Path.Combine(directory!, MetricsFile);
        if (!File.Exists(path)) return;
        var kept = File.ReadAllLines(path).Where(line =>
        {
            try { return JsonDocument.Parse(line).RootElement.GetProperty("step").GetInt64() <= step; }
            catch (JsonException) { return false; }   // a line cut by a crash
        });
        AtomicFile.WriteAllText(path, string.Concat(kept.Select(l => l + "\n")));
    }
}

/// <summary>An IProgress that calls back on the training thread (System.Progress posts to the thread pool instead).</summary>
public sealed class CallbackProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
