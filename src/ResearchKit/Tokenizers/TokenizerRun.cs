using System.Text.Json;
using System.Text.Json.Nodes;
using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Methods;
using ResearchKit.Runs;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tokenizers;

/// <summary>What a tokenizer's training shares with pre-training: data, length, batch, seed.</summary>
public sealed record TokenizerTrainOptions(string Dataset = "fashion-mnist", int Epochs = 3, long? TrainLimit = null, int Seed = 0, int BatchSize = 64,
    int ReportEvery = 200, long ReportImages = 1024)
{
    public void Validate()
    {
        if (Epochs < 1) throw new ResearchKitException($"tokenizer: --epochs must be at least 1; got {Epochs}");
        if (TrainLimit is <= 0) throw new ResearchKitException($"tokenizer: --train-limit must be positive; got {TrainLimit}");
        if (BatchSize < 1) throw new ResearchKitException($"tokenizer: --batch must be positive; got {BatchSize}");
        if (ReportEvery < 1 || ReportImages < 1) throw new ResearchKitException("tokenizer: report interval and report images must be positive");
    }
}

/// <summary>
/// Codebook health and reconstruction on held-out images: codes actually used, their perplexity (the effective number of
/// codes, K when uniform), the share of dead codes, and the PSNR of decode(encode(x)) in pixel space [0, 1].
/// </summary>
public sealed record TokenizerReport(long Step, int Codes, int UsedCodes, double Perplexity, double DeadShare, double Psnr, long Images)
{
    /// <summary>Below this share of the codebook in use, a tokenizer is called collapsed and the CLI and notebooks warn.</summary>
    public const double UsageThreshold = 0.25;

    public double UsedShare => (double)UsedCodes / Codes;
    public bool Collapsed => UsedShare < UsageThreshold;

    /// <summary>A one-line warning when the codebook collapsed, else null.</summary>
    public string? Warning => Collapsed
        ? $"WARNING: codebook collapse — only {UsedCodes} of {Codes} codes ({UsedShare:P0}) are used on held-out images (threshold {UsageThreshold:P0}); " +
          "BEiT's token targets lose their advantage over pixels with a collapsed tokenizer. Train longer, lower --codes, or use the other --kind"
        : null;

    public override string ToString() =>
        $"step {Step}: {UsedCodes}/{Codes} codes used, perplexity {Perplexity:F1}, dead {DeadShare:P0}, PSNR {Psnr:F1} dB";
}

/// <summary>A tokenizer folder's tokenizer.json: how it was trained, the data's normalisation and the last report.</summary>
public sealed record TokenizerManifest(TokenizerConfig Tokenizer, TokenizerTrainOptions Train, Normalization Normalization, TokenizerReport? Report = null,
    double TrainSeconds = 0, int Version = TokenizerManifest.CurrentVersion)
{
    public const int CurrentVersion = 1;

    /// <summary>
    /// Throws a <see cref="DataFormatException"/> naming tokenizer.json and both shapes when the tokenizer was built for
    /// other images or patches than <paramref name="consumer"/> needs (a null size: any).
    /// </summary>
    public void RequireShape(string directory, int? imageSize, int? patchSize, int? channels, string consumer = "this model", string why = "")
    {
        var c = Tokenizer;
        if ((imageSize ?? c.ImageSize) == c.ImageSize && (patchSize ?? c.PatchSize) == c.PatchSize && (channels ?? c.Channels) == c.Channels) return;
        int size = imageSize ?? c.ImageSize, patch = patchSize ?? c.PatchSize;
        throw new DataFormatException(Path.Combine(directory, TokenizerRun.ManifestFile),
            $"tokenizer built for {c.ImageSize}×{c.ImageSize}×{c.Channels} images in {c.PatchSize}×{c.PatchSize} patches; " +
            $"{consumer} needs {size}×{size}×{channels ?? c.Channels} images in {patch}×{patch} patches{why}");
    }
}

/// <summary>A trained tokenizer loaded from its folder; its inputs are normalised as <see cref="TokenizerManifest.Normalization"/> says.</summary>
public sealed record LoadedTokenizer(string Directory, TokenizerManifest Manifest, VisualTokenizer Tokenizer);

/// <summary>
/// Training a visual tokenizer into a folder (tokenizer.json, checkpoint.bin, metrics.jsonl, reports.jsonl) with the
/// shared trainer — rerunning resumes — and loading it back with its shape checked against what the caller needs.
/// </summary>
public static class TokenizerRun
{
    public const string ManifestFile = "tokenizer.json", ReportsFile = "reports.jsonl";

    /// <summary>A tokenizer folder as a model's frozen dependency: its manifest and weights define it.</summary>
    public static FrozenDependency Dependency(string directory) => new("tokenizer", directory, [ManifestFile, Trainer.CheckpointFile]);

    /// <summary>Trains (or resumes) a tokenizer; <paramref name="report"/> gets held-out usage and PSNR every ReportEvery steps and at the end.</summary>
    public static (TokenizerManifest Manifest, VisualTokenizer Tokenizer) Train(TokenizerConfig config, TokenizerTrainOptions options, string directory,
        IProgress<TrainProgress>? progress = null, Action<TokenizerReport>? report = null, CancellationToken cancel = default)
    {
        options.Validate();
        OutputPath.Folder(directory);
        using var data = DatasetCatalog.Load(options.Dataset, options.TrainLimit, options.ReportImages);
        var train = data.Train;
        if (train.Height != train.Width) throw new ResearchKitException($"{train.Name}: images are {train.Height}×{train.Width}; the tokenizer needs square images");
        config = config.ForInput(train.Height, train.Channels);
        config.Validate();
        // Before the folder is written and the tokenizer built.
        MemoryBudget.Check(config.Size(), (int)Math.Min(options.BatchSize, train.Count), "tokenizer", "choose a smaller --codes or --batch");
        var normalization = Normalization.Of(train);
        var manifest = new TokenizerManifest(config, options, normalization);
        using var writer = RunLock.Acquire(directory);
        manifest = PrepareFolder(directory, manifest);   // a resumed folder keeps its earlier report and training time

        Compute.Seed(options.Seed);
        VisualTokenizer tokenizer;
        using (Compute.OnHost()) tokenizer = config.Build();
        tokenizer.Module.to(Compute.Device);
        var loader = new DataLoader(train, Math.Min(options.BatchSize, (int)train.Count), normalization, shuffle: true, seed: options.Seed);
        var held = normalization.Apply(data.Test.Images, Compute.Device);
        var trainer = new Trainer(new TrainConfig(options.Epochs, loader.BatchSize, config.Optimizer, Seed: options.Seed), directory);
        TokenizerReport? last = null;
        var reports = new ReportCallback(options.ReportEvery, step =>
        {
            tokenizer.eval();
            last = Measure(tokenizer, held, normalization, step);
            tokenizer.train();
            AppendReport(directory, last);
            report?.Invoke(last);
        });
        trainer.Callbacks.Add(reports);
        var result = trainer.Fit(loader, tokenizer, progress, cancel);
        tokenizer.eval();
        if (last is null || last.Step != result.Steps)
        {
            last = Measure(tokenizer, held, normalization, result.Steps);
            AppendReport(directory, last);
            report?.Invoke(last);
        }
        held.Dispose();
        manifest = manifest with { Report = last, TrainSeconds = Math.Round(manifest.TrainSeconds + result.Elapsed.TotalSeconds, 1) };
        AtomicFile.WriteAllText(Path.Combine(directory, ManifestFile), JsonSerializer.Serialize(manifest, MethodRegistry.Json));
        return (manifest, tokenizer);
    }

    sealed class ReportCallback(int every, Action<long> measure) : ITrainerCallback
    {
        public void OnStepEnd(TrainProgress progress)
        {
            if (progress.Step % every == 0 && progress.Step != progress.TotalSteps) measure(progress.Step);
        }
    }

    /// <summary>Usage and reconstruction of <paramref name="images"/> (normalised) by a tokenizer in eval mode.</summary>
    public static TokenizerReport Measure(VisualTokenizer tokenizer, Tensor images, Normalization normalization, long step = 0)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        int K = tokenizer.Config.Codes;
        var counts = zeros(K, dtype: ScalarType.Int64, device: images.device);
        double squaredError = 0;
        long n = images.shape[0];
        for (long start = 0; start < n; start += 256)
        {
            var x = images.narrow(0, start, Math.Min(256, n - start));
            var codes = tokenizer.Encode(x);
            counts += bincount(codes.reshape(-1), minlength: K);
            var reconstructed = normalization.Invert(tokenizer.Decode(codes));
            squaredError += Reconstruction.Mse(reconstructed, normalization.Invert(x)) * x.shape[0];
        }
        var usage = counts.to_type(ScalarType.Float32);
        var share = usage / usage.sum();
        int used = (int)counts.gt(0).sum().item<long>();
        double dead = share.lt(tokenizer.Config.DeadUsage / K).to_type(ScalarType.Float32).mean().item<float>();
        return new TokenizerReport(step, K, used, Math.Round(VisualTokenizer.Perplexity(usage), 2), Math.Round(dead, 4),
            Math.Round(Reconstruction.Psnr(squaredError / n), 2), n);
    }

    static void AppendReport(string directory, TokenizerReport report) =>
        File.AppendAllText(Path.Combine(directory, ReportsFile), JsonSerializer.Serialize(report, MethodRegistry.Json).ReplaceLineEndings(" ") + "\n");

    /// <summary>Every report written while training, in order.</summary>
    public static List<TokenizerReport> Reports(string directory)
    {
        var path = Path.Combine(directory, ReportsFile);
        if (!File.Exists(path)) return [];
        return File.ReadLines(path).Where(l => l.Length > 0).Select(l => JsonSerializer.Deserialize<TokenizerReport>(l, MethodRegistry.Json)!).ToList();
    }

    /// <summary>
    /// A folder that already holds training continues only with the same settings (epochs may change); returns the
    /// manifest written, carrying a resumed folder's report and training time.
    /// </summary>
    static TokenizerManifest PrepareFolder(string directory, TokenizerManifest manifest)
    {
        Directory.CreateDirectory(directory);
        var path = Path.Combine(directory, ManifestFile);
        if (File.Exists(path) && File.Exists(Path.Combine(directory, Trainer.CheckpointFile)))
        {
            var saved = ReadManifest(directory);
            static JsonNode? Comparable(TokenizerManifest m) =>
                JsonNode.Parse(JsonSerializer.Serialize(m with { Train = m.Train with { Epochs = 0 }, Report = null, TrainSeconds = 0 }, MethodRegistry.Json));
            if (JsonDifference.First(Comparable(saved), Comparable(manifest)) is { } difference)
                throw new ResearchKitException($"{directory} holds a tokenizer trained with other settings ({difference}); choose a new --out folder or repeat the same settings (only --epochs may change)");
            manifest = manifest with { Report = saved.Report, TrainSeconds = saved.TrainSeconds };
        }
        else if (File.Exists(Path.Combine(directory, ReportsFile))) File.Delete(Path.Combine(directory, ReportsFile));
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(manifest, MethodRegistry.Json));
        return manifest;
    }

    /// <summary>Reads tokenizer.json, with a one-line error naming the file when it is missing or not a tokenizer manifest.</summary>
    public static TokenizerManifest ReadManifest(string directory)
    {
        if (!Directory.Exists(directory))
            throw new ResearchKitException($"{directory}: tokenizer folder not found; train one with `researchkit tokenizer train --out {directory}`");
        var path = Path.Combine(directory, ManifestFile);
        if (!File.Exists(path))
            throw new ResearchKitException($"{path}: not found; is {directory} a folder written by `researchkit tokenizer train`?");
        try
        {
            var manifest = JsonSerializer.Deserialize<TokenizerManifest>(File.ReadAllText(path), MethodRegistry.Json) ?? throw new DataFormatException(path, "empty tokenizer manifest");
            if (manifest.Version != TokenizerManifest.CurrentVersion)
                throw new DataFormatException(path, $"tokenizer format {manifest.Version}; this ResearchKit reads {TokenizerManifest.CurrentVersion}; retrain into a new folder");
            if (manifest.Tokenizer is null || manifest.Normalization is null || manifest.Train is null)
                throw new DataFormatException(path, "incomplete tokenizer manifest: 'tokenizer', 'train' and 'normalization' are required");
            manifest.Tokenizer.Validate();
            if (manifest.Normalization.Mean?.Length != manifest.Tokenizer.Channels || manifest.Normalization.Std?.Length != manifest.Tokenizer.Channels)
                throw new DataFormatException(path, $"normalisation has {manifest.Normalization.Mean?.Length ?? 0} channels; the tokenizer has {manifest.Tokenizer.Channels}");
            return manifest;
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or InvalidOperationException)
        {
            throw new DataFormatException(path, $"not a valid tokenizer manifest: {JsonErrors.Plain(e)}");
        }
        catch (ResearchKitException e) when (e is not DataFormatException)
        {
            throw new DataFormatException(path, e.Message);
        }
    }

    /// <summary>
    /// Loads a trained tokenizer (eval mode, on the compute device). With <paramref name="imageSize"/> and
    /// <paramref name="patchSize"/>, refuses one built for other images or patches, naming the file and both shapes.
    /// </summary>
    public static LoadedTokenizer Load(string directory, int? imageSize = null, int? patchSize = null, int? channels = null)
    {
        var manifest = ReadManifest(directory);
        manifest.RequireShape(directory, imageSize, patchSize, channels);
        var checkpoint = Path.Combine(directory, Trainer.CheckpointFile);
        if (!File.Exists(checkpoint)) throw new ResearchKitException($"{checkpoint}: not found; the tokenizer in {directory} was never trained (or its training was stopped before the first checkpoint)");
        VisualTokenizer tokenizer;
        using (Compute.OnHost()) tokenizer = manifest.Tokenizer.Build();
        tokenizer.Module.to(Compute.Device).eval();
        Trainer.LoadWeights(tokenizer, checkpoint, describedBy: ManifestFile);   // in place, on the device
        // A model may load its tokenizer lazily inside a training step's dispose scope; its weights must outlive that step.
        foreach (var state in tokenizer.state_dict().Values) state.DetachFromDisposeScope();
        return new LoadedTokenizer(directory, manifest, tokenizer);
    }
}
