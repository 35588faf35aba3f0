using ResearchKit.Data;
using ResearchKit.Runs;
using ResearchKit.Tokenizers;
using static TorchSharp.torch;

namespace ResearchKit.Methods;

/// <summary>
/// What a method may know about its run when its model is built: the data's normalisation and shape (so a model can
/// work in pixel space: Lab colour, masking noise, a PGD ε), its frozen dependencies from other folders, and the device.
/// A run folder rebuilds the same context from config.json, so nothing of it needs copying into the method's configuration.
/// </summary>
/// <param name="Normalization">How the images a model receives were normalised (<see cref="ToPixels"/> undoes it).</param>
/// <param name="ImageSize">Side of the square images.</param>
/// <param name="Channels">Image channels (1 grey, 3 RGB).</param>
public sealed record BuildContext(Normalization Normalization, int ImageSize, int Channels)
{
    /// <summary>Where the model's tensors live (<see cref="Compute.Device"/>); models are built on the host and moved there.</summary>
    public static Device Device => Compute.Device;

    /// <summary>Frozen dependencies (tokenizers, other runs' models) loaded from their folders, checked against this shape.</summary>
    public Dependencies Dependencies { get; init; } = new();

    /// <summary>The context of a configuration whose images arrive as pixel values in [0, 1] (mean 0, std 1): unit tests and benchmarks.</summary>
    public static BuildContext Pixels(MethodConfig config)
    {
        var (size, channels) = config.InputShape();
        return new BuildContext(Normalization.Identity(channels), size, channels);
    }

    /// <summary>The context of a run trained on data normalised with <paramref name="normalization"/>.</summary>
    public static BuildContext Of(MethodConfig config, Normalization normalization)
    {
        var (size, channels) = config.InputShape();
        if (normalization.Mean.Length != channels || normalization.Std.Length != channels)
            throw new ResearchKitException($"normalisation has {normalization.Mean.Length} channels; the {MethodRegistry.Of(config).Name} model takes {channels}");
        return new BuildContext(normalization, size, channels);
    }

    /// <summary>Normalised images [B, C, H, W] → pixel values in [0, 1].</summary>
    public Tensor ToPixels(Tensor images) => Normalization.Invert(images);

    /// <summary>Pixel values in [0, 1] → normalised images, as the model receives them.</summary>
    public Tensor FromPixels(Tensor pixels) => Normalization.Standardize(pixels);
}

/// <summary>A folder a model is built from, by role ("tokenizer"), and the files whose bytes define it.</summary>
public sealed record FrozenDependency(string Role, string Folder, IReadOnlyList<string> Files)
{
    /// <summary>The name a run's provenance records it under.</summary>
    public string Name => $"{Role} {Folder}";

    /// <summary>Another pre-training run (a teacher, a source): its configuration and weights.</summary>
    public static FrozenDependency Run(string role, string folder) => new(role, folder, [Pretraining.ConfigFile, Training.Trainer.CheckpointFile]);

    /// <summary>SHA-256 of its files as they are now, or null when the folder is gone.</summary>
    public string? Sha256() => Training.Provenance.OfFiles(Folder, Files);
}

/// <summary>
/// A model's frozen dependencies, each read from its folder on first use with one check of its format version (by its
/// reader) and of its input shape against the model's, and never part of the model's weights: evaluating a trained
/// model does not need the folders. Tests and notebooks can hand over one already loaded (<see cref="Use"/>).
/// </summary>
public sealed class Dependencies
{
    readonly Dictionary<string, object> loaded = [];

    /// <summary>Uses an already loaded dependency for <paramref name="folder"/> instead of reading it.</summary>
    public Dependencies Use(string folder, object dependency)
    {
        if (dependency is IPretrainModel model) OneDnn.NoteFrozen(model.Module);
        if (dependency is LoadedTokenizer tokenizer) OneDnn.NoteFrozen(tokenizer.Tokenizer);
        loaded[Path.GetFullPath(folder)] = dependency;
        return this;
    }

    /// <summary>The visual tokenizer in <paramref name="folder"/> (`researchkit tokenizer train`), for one token per patch of this shape.</summary>
    public LoadedTokenizer Tokenizer(string folder, int imageSize, int patchSize, int channels) =>
        Get(folder, () =>
        {
            var tokenizer = TokenizerRun.Load(folder, imageSize, patchSize, channels);
            OneDnn.NoteFrozen(tokenizer.Tokenizer);
            return tokenizer;
        });

    /// <summary>
    /// The model of another pre-training run (a teacher, a source, a perceptual network), frozen: evaluation mode, no
    /// gradients, on the compute device. Its images must have the shape <paramref name="imageSize"/>² × <paramref name="channels"/>.
    /// </summary>
    /// <param name="role">What the model is to the caller ("teacher"), for the one-line error.</param>
    public IPretrainModel Run(string folder, string role, int imageSize, int channels) => Get(folder, () =>
    {
        var (config, model) = Pretraining.Load(folder);
        var (size, c) = config.Method.InputShape();
        if (size != imageSize || c != channels)
        {
            model.Module.Dispose();
            throw new ResearchKitException($"{role} {folder}: its model takes {size}×{size} images of {c} channels; this one needs {imageSize}×{imageSize} of {channels}");
        }
        foreach (var p in model.Module.parameters()) p.requires_grad = false;
        OneDnn.NoteFrozen(model.Module);
        return model;
    });

    T Get<T>(string folder, Func<T> load) where T : class
    {
        var key = Path.GetFullPath(folder);
        if (loaded.TryGetValue(key, out var known))
            return known as T ?? throw new ResearchKitException($"{folder}: already in use as a {known.GetType().Name}, not a {typeof(T).Name}");
        var value = load();
        loaded[key] = value;
        return value;
    }
}
