using System.Text.Json;
using System.Text.Json.Serialization;
using ResearchKit.Data;
using ResearchKit.Models;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Runs;

/// <summary>What to pre-train; null fields take the preset's value.</summary>
public sealed record PretrainOptions(
    string Method = "mae", string Dataset = "fashion-mnist", string Preset = "tiny",
    int Epochs = 1, long? TrainLimit = null, int Seed = 0, int BatchSize = 256, double? BaseLearningRate = null,
    double? MaskRatio = null, bool NormPixLoss = false, int? DecoderDepth = null, int? DecoderDim = null,
    MaskSampling Sampling = MaskSampling.Random, bool MaskTokenInEncoder = false, bool Augment = false);

/// <summary>Everything needed to rebuild a run's model and data: the run folder's config.json.</summary>
public sealed record RunConfig(string Method, string Dataset, string Preset, long? TrainLimit, MaeConfig Model, TrainConfig Train,
    Normalization Normalization, bool Augment, string CreatedBy = "researchkit");

/// <summary>A pre-trained run: its folder, configuration, model and training result.</summary>
public sealed record PretrainRun(string Directory, RunConfig Config, MaskedAutoencoder Model, TrainResult Result);

/// <summary>
/// Pre-training into a run folder: config.json, metrics.jsonl and checkpoint.bin. Rerunning with the same
/// folder resumes from its checkpoint. Shared by the CLI and the notebooks.
/// </summary>
public static class Pretraining
{
    public const string ConfigFile = "config.json";
    public static readonly string[] Methods = ["mae"];
    public static readonly string[] Presets = ["tiny", "vit-base", "vit-large"];

    /// <summary>Base learning rate of the tiny preset: the paper's 1.5e-4 is tuned for 800+ ImageNet epochs; a tiny
    /// model trained for a few epochs needs a larger one (measured on Fashion-MNIST; see environment.md).</summary>
    public const double TinyBaseLearningRate = 1.5e-3;

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,   // NaN: "no pre-training loss" for untrained baselines
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    /// <summary>The model configuration for a preset and data shape, with the options' overrides applied.</summary>
    public static MaeConfig ModelConfig(PretrainOptions options, int imageSize, int channels)
    {
        if (!Methods.Contains(options.Method)) throw new ResearchKitException($"unknown method '{options.Method}'; expected one of: {string.Join(", ", Methods)}");
        var config = options.Preset switch
        {
            "tiny" => MaeConfig.Tiny(imageSize, channels),
            "vit-base" => MaeConfig.ViTBase with { Encoder = ViTConfig.Base with { ImageSize = imageSize, Channels = channels } },
            "vit-large" => MaeConfig.ViTLarge with { Encoder = ViTConfig.Large with { ImageSize = imageSize, Channels = channels } },
            _ => throw new ResearchKitException($"unknown preset '{options.Preset}'; expected one of: {string.Join(", ", Presets)}"),
        };
        return config with
        {
            MaskRatio = options.MaskRatio ?? config.MaskRatio,
            NormPixLoss = options.NormPixLoss,
            DecoderDepth = options.DecoderDepth ?? config.DecoderDepth,
            DecoderDim = options.DecoderDim ?? config.DecoderDim,
            DecoderHeads = options.DecoderDim is { } dim ? Math.Max(1, Math.Min(config.DecoderHeads, dim / 16)) : config.DecoderHeads,
            Sampling = options.Sampling,
            MaskTokenInEncoder = options.MaskTokenInEncoder,
        };
    }

    /// <summary>Pre-trains (or resumes) into <paramref name="directory"/>, loading the data set by name.</summary>
    public static PretrainRun Run(PretrainOptions options, string directory, IProgress<TrainProgress>? progress = null, CancellationToken cancel = default)
    {
        using var data = DatasetCatalog.Load(options.Dataset, options.TrainLimit, testLimit: 1);
        return Run(options, data.Train, directory, progress, cancel);
    }

    /// <summary>Pre-trains (or resumes) on an already loaded training split.</summary>
    public static PretrainRun Run(PretrainOptions options, ImageDataset train, string directory, IProgress<TrainProgress>? progress = null, CancellationToken cancel = default)
    {
        if (train.Height != train.Width) throw new ResearchKitException($"{train.Name}: images are {train.Height}×{train.Width}; the ViT presets need square images");
        var model = ModelConfig(options, train.Height, train.Channels);
        var trainConfig = new TrainConfig(options.Epochs, options.BatchSize,
            options.BaseLearningRate ?? (options.Preset == "tiny" ? TinyBaseLearningRate : new TrainConfig().BaseLearningRate), Seed: options.Seed);
        var normalization = Normalization.Of(train);
        var config = new RunConfig(options.Method, options.Dataset, options.Preset, options.TrainLimit, model, trainConfig, normalization, options.Augment);

        Directory.CreateDirectory(directory);
        var configPath = Path.Combine(directory, ConfigFile);
        if (File.Exists(configPath) && File.Exists(Path.Combine(directory, Trainer.CheckpointFile)))
        {
            // Compare as JSON: records holding arrays (Normalization) compare arrays by reference.
            static string Key(RunConfig c) => JsonSerializer.Serialize(c with { Train = c.Train with { Epochs = 0 } }, Json);
            if (Key(ReadConfig(directory)) != Key(config))
                throw new ResearchKitException($"{directory} holds a run with other settings; choose a new --out folder or repeat the same settings (only --epochs may change)");
        }
        AtomicFile.WriteAllText(configPath, JsonSerializer.Serialize(config, Json));

        Compute.Seed(options.Seed);
        var mae = new MaskedAutoencoder(model).to(Compute.Device);
        var loader = new DataLoader(train, Math.Min(options.BatchSize, (int)train.Count), normalization, shuffle: true, seed: options.Seed,
            augmentation: options.Augment ? Augmentation.Mae : Augmentation.None);
        var trainer = new Trainer(mae, trainConfig, directory);
        var result = trainer.Fit(loader, (batch, generator) => mae.call(batch.Images, generator).Loss, progress, cancel);
        return new PretrainRun(directory, config, mae, result);
    }

    public static RunConfig ReadConfig(string directory)
    {
        var path = Path.Combine(directory, ConfigFile);
        if (!File.Exists(path)) throw new ResearchKitException($"{path}: not found; is {directory} a run folder written by `researchkit pretrain`?");
        try
        {
            return JsonSerializer.Deserialize<RunConfig>(File.ReadAllText(path), Json) ?? throw new DataFormatException(path, "empty configuration");
        }
        catch (JsonException e) { throw new DataFormatException(path, $"not a valid run configuration: {e.Message}"); }
    }

    /// <summary>Rebuilds a run's model from config.json and loads its checkpoint's weights (eval mode).</summary>
    public static (RunConfig Config, MaskedAutoencoder Model) Load(string directory)
    {
        var config = ReadConfig(directory);
        var model = new MaskedAutoencoder(config.Model);
        Trainer.LoadWeights(model, Path.Combine(directory, Trainer.CheckpointFile));
        model.to(Compute.Device).eval();
        return (config, model);
    }
}
