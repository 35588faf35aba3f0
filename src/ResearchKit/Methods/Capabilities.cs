using System.Globalization;
using ResearchKit.Runs;
using static TorchSharp.torch;

namespace ResearchKit.Methods;

/// <summary>A named setting of a figure or a study (e.g. --temperature), given as text; null default: optional.</summary>
public sealed record CapabilityOption(string Name, string Description, string? Default = null);

/// <summary>
/// The values given for a figure's or study's options, read by name with one-line errors that name the option. Only
/// declared options can be read, so a figure and its declaration cannot drift apart.
/// </summary>
public sealed class OptionValues
{
    readonly IReadOnlyList<CapabilityOption> declared;
    readonly IReadOnlyDictionary<string, string> given;

    public OptionValues(IReadOnlyList<CapabilityOption> declared, IReadOnlyDictionary<string, string> given)
    {
        this.declared = declared;
        this.given = given;
    }

    /// <summary>The text given for <paramref name="name"/>, its default, or null when neither exists.</summary>
    public string? Text(string name) =>
        given.TryGetValue(name, out var text) ? text
        : (declared.FirstOrDefault(o => o.Name == name) ?? throw new InvalidOperationException($"option {name} is not declared")).Default;

    public double Number(string name) => MethodOption.ParseNumber(name, Required(name));

    public int Integer(string name) => OptionalInteger(name) ?? throw new ResearchKitException($"{name}: a value is required");

    public int? OptionalInteger(string name) => Text(name) is { } text ? MethodOption.ParseInteger(name, text) : null;

    /// <summary>Positive whole numbers separated by commas ("7,4,2").</summary>
    public int[] PositiveIntegers(string name) => Required(name).Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
        .Select(t => int.TryParse(t, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v > 0 ? v
            : throw new ResearchKitException($"{name}: expected positive whole numbers separated by commas; got '{t}'")).ToArray();

    string Required(string name) => Text(name) ?? throw new ResearchKitException($"{name}: a value is required");
}

/// <summary>
/// A figure a method draws from a finished run — samples, reconstructions, completions — shown by
/// `researchkit show RUN --what NAME` and usable from a notebook. The method declares it beside its options
/// (<see cref="MethodInfo.Figures"/>); no generic code knows the method.
/// </summary>
public sealed record MethodFigure(string Name, string Description, IReadOnlyList<CapabilityOption> Options, Func<FigureRequest, Figure> Draw);

/// <summary>What a figure is drawn from: the run's model and configuration, its first test images (normalised as the run
/// was trained, on <see cref="Compute.Device"/>), how many to show, a seeded generator and the figure's options.</summary>
public sealed record FigureRequest(IPretrainModel Model, RunConfig Run, Func<int, Tensor> TestImages, int Count, Generator Generator, OptionValues Options)
{
    /// <summary>Normalised images as the run was trained on them → pixel values clamped to [0, 1], as a figure shows them.</summary>
    public Tensor Pixels(Tensor normalised) => Run.Normalization.Invert(normalised).clamp(0, 1);
}

/// <summary>Rows of images in pixel values [0, 1] ([N, C, H, W] each, one label per row) and a one-line caption.</summary>
public sealed record Figure(IReadOnlyList<(string Label, Tensor Images)> Rows, string Caption);

/// <summary>
/// A benchmark a method offers beyond its training step (MAE's efficiency study, §3): `bench --method NAME --study NAME`.
/// </summary>
public sealed record MethodStudy(string Name, string Description, IReadOnlyList<CapabilityOption> Options, Func<StudyRequest, StudyReport> Run);

/// <summary>The bench command's settings for a study: the configuration (a preset with the method's options), image shape,
/// batch, timed steps and warmup steps, the study's options, and where to say what it is doing (null: quiet).</summary>
public sealed record StudyRequest(MethodConfig Config, int ImageSize, int Channels, int BatchSize, int Steps, int Warmup, OptionValues Options,
    Action<string>? Status);

/// <summary>A study's result: lines for a terminal and an object for --json.</summary>
public sealed record StudyReport(IReadOnlyList<string> Lines, object Json);

/// <summary>
/// A fine-tuning loss a method provides beside plain cross-entropy, e.g. iGPT's L_CLF + λ·L_GEN (§3.5): named, with its
/// own options (`finetune RUN --objective generative --lambda 0.5`), and made into the loss once the options are read.
/// </summary>
public sealed record MethodObjective(string Name, string Description, IReadOnlyList<CapabilityOption> Options,
    Func<OptionValues, ResearchKit.Evaluation.FineTuneLoss> Make)
{
    /// <summary>The objective every method has: cross-entropy of the classifier's logits.</summary>
    public const string CrossEntropyName = "cross-entropy";
}
