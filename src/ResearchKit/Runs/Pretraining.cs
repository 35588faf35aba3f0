using System.Text.Json;
using System.Text.Json.Nodes;
using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Runs;

/// <summary>
/// What every method's pre-training shares: data, length, batch, seed. The method's own settings live in its
/// <see cref="MethodConfig"/>. <paramref name="BaseLearningRate"/> overrides the method's recipe when given.
/// </summary>
/// <param name="Precision">How matrix products are computed; null: a resumed run's own, else <see cref="Compute.Precision"/>
/// (TF32 on CUDA, fp32 on the CPU, unless set). The run records it. Left out of the JSON when null, so sweep results cached
/// before precisions existed keep their keys.</param>
public sealed record PretrainOptions(
    string Dataset = "fashion-mnist", int Epochs = 1, long? TrainLimit = null, int Seed = 0, int BatchSize = 256,
    double? BaseLearningRate = null, AugmentKind Augment = AugmentKind.None,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    Precision? Precision = null)
{
    public void Validate()
    {
        if (Epochs < 0) throw new ResearchKitException($"epochs (--epochs) must be at least 0 (0: the untrained network, for floors); got {Epochs}");
        if (TrainLimit is <= 0) throw new ResearchKitException($"train limit (--train-limit) must be positive; got {TrainLimit}");
        if (BatchSize < 1) throw new ResearchKitException($"batch size (--batch) must be positive; got {BatchSize}");
        if (BaseLearningRate is { } lr && !(lr > 0 && double.IsFinite(lr))) throw new ResearchKitException($"learning rate (--lr) must be positive and finite; got {lr}");
    }
}

/// <summary>Everything needed to rebuild a run's model and data: the run folder's config.json.</summary>
/// <param name="Method">The method's configuration, sized for the data; its "name" field says which method.</param>
/// <param name="Version">The run-folder format: 3 since augmentations are named (MAE Table 1e); 2 since the method contract; a file without one is the first format.</param>
public sealed record RunConfig(string Dataset, long? TrainLimit, MethodConfig Method, TrainConfig Train, Normalization Normalization,
    AugmentKind Augment, string CreatedBy = "researchkit", int Version = 1)
{
    public const int CurrentVersion = 3;
}

/// <summary>A pre-trained run: its folder, configuration, model and training result.</summary>
public sealed record PretrainRun(string Directory, RunConfig Config, IPretrainModel Model, TrainResult Result);

/// <summary>
/// Pre-training into a run folder: config.json, metrics.jsonl and checkpoint.bin. Rerunning with the same folder
/// resumes from its checkpoint. Works for every registered method; shared by the CLI and the notebooks.
/// </summary>
public static class Pretraining
{
    public const string ConfigFile = "config.json";

    /// <summary>Pre-trains (or resumes) into <paramref name="directory"/>, loading the data set by name.</summary>
    public static PretrainRun Run(MethodConfig method, PretrainOptions options, string directory,
        IProgress<TrainProgress>? progress = null, CancellationToken cancel = default, IEnumerable<ITrainerCallback>? callbacks = null)
    {
        ValidateForTraining(options);
        OutputPath.Folder(directory);
        using var data = DatasetCatalog.Load(options.Dataset, options.TrainLimit, testLimit: 1);
        return Run(method, options, data.Train, directory, progress, cancel, callbacks);
    }

    /// <summary>Pre-training needs an epoch; options alone allow 0, which experiments use for the untrained floor (no run folder).</summary>
    static void ValidateForTraining(PretrainOptions options)
    {
        if (options.Epochs < 1) throw new ResearchKitException($"epochs (--epochs) must be at least 1; got {options.Epochs}");
        options.Validate();
    }

    /// <summary>The run configuration for a method, options and training split: validated, nothing written.</summary>
    /// <param name="recorded">The precision of the run being resumed, if any: kept unless the options name another.</param>
    public static RunConfig Configure(MethodConfig method, PretrainOptions options, ImageDataset train, Precision? recorded = null)
    {
        ValidateForTraining(options);
        if (train.Height != train.Width) throw new ResearchKitException($"{train.Name}: images are {train.Height}×{train.Width}; the backbones need square images");
        var normalization = Normalization.Of(train);
        var sized = Sized(method, train, normalization);
        var optimizer = options.BaseLearningRate is { } lr ? sized.Optimizer with { BaseLearningRate = lr } : sized.Optimizer;
        var training = new TrainConfig(options.Epochs, options.BatchSize, optimizer, Seed: options.Seed,
            Precision: options.Precision ?? recorded ?? Compute.Precision);
        training.Validate();
        CheckSize(sized, options.BatchSize);
        return new RunConfig(options.Dataset, options.TrainLimit, sized with { Optimizer = optimizer }, training, normalization, options.Augment,
            Version: RunConfig.CurrentVersion);
    }

    /// <summary>A method's configuration sized for the training split and completed from it (<see cref="MethodConfig.ForData"/>), validated.</summary>
    public static MethodConfig Sized(MethodConfig method, ImageDataset train, Normalization normalization)
    {
        var sized = method.ForInput(train.Height, train.Channels);
        sized.Validate();
        CheckSize(sized, batch: 1);   // before ForData, which may fit on data (a palette) at this size
        sized = sized.ForData(train, normalization);
        sized.Validate();
        return sized;
    }

    /// <summary>Refuses a configuration whose model cannot be trained on this machine, before it is built (<see cref="MemoryBudget"/>).</summary>
    static void CheckSize(MethodConfig method, int batch, string? advice = null)
    {
        var name = MethodRegistry.Of(method).Name;
        if (method.Size() is { } size)
            MemoryBudget.Check(size, batch, name, advice ?? $"choose smaller sizes (`researchkit pretrain --method {name} --help` lists them) or a smaller --batch");
    }

    /// <summary>Pre-trains (or resumes) on an already loaded training split; <paramref name="callbacks"/> join the trainer's (e.g. <see cref="EpochSnapshots"/>).</summary>
    public static PretrainRun Run(MethodConfig method, PretrainOptions options, ImageDataset train, string directory,
        IProgress<TrainProgress>? progress = null, CancellationToken cancel = default, IEnumerable<ITrainerCallback>? callbacks = null)
    {
        var config = Configure(method, options, train, RecordedPrecision(directory));   // validation first: nothing is written for a rejected run
        var loader = new DataLoader(train, Math.Min(options.BatchSize, (int)train.Count), config.Normalization, shuffle: true, seed: options.Seed,
            augmentation: Augmentation.Of(options.Augment));
        OutputPath.Folder(directory);
        // Built before the folder is touched: a model that fails to build (an allocation the estimate missed) leaves nothing behind.
        var model = Build(config.Method, options.Seed, Context(config));
        using var writer = RunLock.Acquire(directory);   // one process trains in a folder at a time
        PrepareFolder(directory, config, (long)loader.BatchesPerEpoch * options.Epochs);

        var trainer = new Trainer(config.Train, directory) { Provenance = ProvenanceOf(config) };
        if (callbacks is not null) trainer.Callbacks.AddRange(callbacks);
        var result = trainer.Fit(loader, model, progress, cancel);
        return new PretrainRun(directory, config, model, result);
    }

    /// <summary>
    /// A method's model initialised from <paramref name="seed"/> on the host (the same weights on every device), on the compute
    /// device, for the run <paramref name="context"/> describes (null: images given as pixel values, for tests and benchmarks).
    /// </summary>
    public static IPretrainModel Build(MethodConfig config, int seed, BuildContext? context = null)
    {
        Compute.Seed(seed);
        IPretrainModel model;
        using (Compute.OnHost()) model = config.Build(context ?? BuildContext.Pixels(config));
        model.Module.to(Compute.Device);
        return model;
    }

    /// <summary>The precision a run folder's training was recorded with (fp32 for runs from before precisions), or null without one.</summary>
    static Precision? RecordedPrecision(string directory)
    {
        bool hasTraining = File.Exists(Path.Combine(directory, Trainer.CheckpointFile)) || File.Exists(Path.Combine(directory, Trainer.MetricsFile));
        if (!hasTraining || !File.Exists(Path.Combine(directory, ConfigFile))) return null;
        try { return ReadConfig(directory).Train.Precision ?? Precision.Fp32; }
        catch (ResearchKitException) { return null; }   // PrepareFolder names what is wrong with the folder
    }

    /// <summary>
    /// Creates the folder and writes config.json. A folder that already holds training (a checkpoint or metrics)
    /// must be continued with the same settings — only the number of epochs may change — or it is refused, naming
    /// the first setting that differs.
    /// </summary>
    static void PrepareFolder(string directory, RunConfig config, long totalSteps)
    {
        var configPath = Path.Combine(directory, ConfigFile);
        bool hasTraining = File.Exists(Path.Combine(directory, Trainer.CheckpointFile)) || File.Exists(Path.Combine(directory, Trainer.MetricsFile));
        if (File.Exists(configPath) && hasTraining)
        {
            var (previous, current) = (JsonNode.Parse(Comparable(ReadConfig(directory))), JsonNode.Parse(Comparable(config)));
            if (JsonDifference.First(previous, current) is { } difference)
                throw new ResearchKitException($"{directory} holds a run with other settings ({difference}); choose a new --out folder or repeat the same settings (only --epochs may change)");
            if (CheckpointStore.SavedStep(Path.Combine(directory, Trainer.CheckpointFile)) is { } done && done > totalSteps)
                throw new ResearchKitException($"{directory} holds {done} trained steps, more than the {totalSteps} of --epochs {config.Train.Epochs}; " +
                    "raise --epochs to continue, or use the folder as it is");
        }
        AtomicFile.WriteAllText(configPath, Serialize(config));
    }

    /// <summary>A run's settings as canonical JSON, less what a resumed run may change: the epochs (a run from before
    /// precisions existed was trained in fp32).</summary>
    static string Comparable(RunConfig c) => Serialize(c with { Train = c.Train with { Epochs = 0, Precision = c.Train.Precision ?? Precision.Fp32 } });

    /// <summary>What a run's weights are trained from: its comparable settings and its frozen dependencies as they are now.</summary>
    public static Provenance ProvenanceOf(RunConfig config) => Provenance.Of(Comparable(config),
        config.Method.FrozenDependencies().Select(d => (d.Name, d.Sha256())).Where(d => d.Item2 is not null).Select(d => (d.Name, d.Item2!)));

    /// <summary>What a run's model is built with: its method's shape, the run's normalisation, its dependencies from their folders.</summary>
    public static BuildContext Context(RunConfig config) => BuildContext.Of(config.Method, config.Normalization);

    public static string Serialize(RunConfig config) => JsonSerializer.Serialize(config, MethodRegistry.Json);

    public static RunConfig ReadConfig(string directory)
    {
        var path = Path.Combine(directory, ConfigFile);
        if (!File.Exists(path)) throw new ResearchKitException($"{path}: not found; is {directory} a run folder written by `researchkit pretrain`?");
        try
        {
            var text = File.ReadAllText(path);
            // The format first: an older file may not even parse as this version's configuration.
            int version = (JsonNode.Parse(text) as JsonObject)?["version"] is JsonValue v && v.TryGetValue<int>(out var n) ? n : 1;
            if (version != RunConfig.CurrentVersion)
                throw new DataFormatException(path, $"written by another version of ResearchKit (run format {version}, this one reads {RunConfig.CurrentVersion}); re-run pre-training into a new folder");
            var config = JsonSerializer.Deserialize<RunConfig>(text, MethodRegistry.Json) ?? throw new DataFormatException(path, "empty configuration");
            if (config.Method is null || config.Train is null || config.Normalization is null)
                throw new DataFormatException(path, "incomplete run configuration: 'method', 'train' and 'normalization' are required");
            // Values a hand edit can put out of range, refused here, naming the file, rather than failing in a model or a step.
            try
            {
                config.Method.Validate();
                config.Train.Validate();
                config.Normalization.Validate();
                BuildContext.Of(config.Method, config.Normalization);
            }
            catch (ResearchKitException e) when (e is not DataFormatException) { throw new DataFormatException(path, e.Message); }
            // A field the reader let through as null (an overridden property, such as a method's optimizer) fails only when the
            // configuration is written back, for a run's provenance: refused here instead, naming the file.
            Serialize(config);
            return config;
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or InvalidOperationException)
        {
            throw new DataFormatException(path, $"not a valid run configuration: {JsonErrors.Plain(e)}");
        }
    }

    /// <summary>
    /// Rebuilds a run's model from config.json by its method's name and loads its checkpoint's weights (eval mode) — or,
    /// with <paramref name="epoch"/>, the snapshot kept at the end of that epoch (<see cref="EpochSnapshots"/>), or with
    /// <paramref name="step"/> the one kept after that many steps (<see cref="StepSnapshots"/>).
    /// </summary>
    public static (RunConfig Config, IPretrainModel Model) Load(string directory, int? epoch = null, long? step = null)
    {
        if (epoch is not null && step is not null) throw new ResearchKitException("--epoch and --step: give one snapshot, not both");
        var config = ReadConfig(directory);
        var weights = Path.Combine(directory, Trainer.CheckpointFile);
        if (epoch is { } e)
            weights = Snapshot(EpochSnapshots.PathOf(directory, e), EpochSnapshots.Kept(directory).Select(k => (long)k).ToList(),
                "epochs", "this run kept no snapshots (pre-train with --snapshots to keep one per epoch)");
        if (step is { } s)
            weights = Snapshot(StepSnapshots.PathOf(directory, s), StepSnapshots.Kept(directory),
                "steps", "this run kept no step snapshots (pre-train with --snapshot-steps N to keep one every N steps)");
        // Before anything is built: weights trained with other settings, and a model this machine cannot hold, are refused.
        CheckpointStore.CheckProvenance(weights, ProvenanceOf(config));
        try { CheckSize(config.Method, batch: 1, advice: "was config.json edited?"); }
        catch (ResearchKitException tooLarge) { throw new DataFormatException(Path.Combine(directory, ConfigFile), tooLarge.Message); }
        IPretrainModel model;
        using (Compute.OnHost()) model = config.Method.Build(Context(config));
        model.Module.to(Compute.Device).eval();
        Trainer.LoadWeights(model.Module, weights);   // in place, on the device; provenance was checked above
        // A run that restarted after diverging trained on with changed settings (JEM: a smaller learning rate); the model gets
        // those its weights were trained with: the restarts before a step snapshot, every restart otherwise.
        model.Recovery?.AfterRestarts(DivergenceLog.Restarts(DivergenceLog.Read(directory).Where(d => step is null || d.RestartedFrom < step)));
        return (config, model);

        static string Snapshot(string path, IReadOnlyList<long> kept, string unit, string noneKept) => File.Exists(path) ? path
            : throw new ResearchKitException($"{path}: not found; " + (kept.Count == 0 ? noneKept : $"snapshots kept after {unit} {string.Join(", ", kept)}"));
    }
}
