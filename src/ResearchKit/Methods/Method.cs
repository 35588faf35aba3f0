using System.Globalization;
using System.Text.Json;
using ResearchKit.Data;
using ResearchKit.Models;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Methods;

/// <summary>
/// A method's configuration: a sealed record per method whose defaults are the paper's, with small presets as
/// static members. Stored in a run's config.json polymorphically ("name" discriminates; see
/// <see cref="MethodRegistry"/>), so loading a run rebuilds the right model.
/// </summary>
public abstract record MethodConfig
{
    /// <summary>The method's optimizer recipe (the paper's, or the preset's for CPU-scale runs).</summary>
    public abstract OptimizerConfig Optimizer { get; init; }

    /// <summary>This configuration sized for images of <paramref name="imageSize"/>² pixels and <paramref name="channels"/> channels.</summary>
    public abstract MethodConfig ForInput(int imageSize, int channels);

    /// <summary>The image side and channels this configuration is sized for (what <see cref="ForInput"/> set): the shape a
    /// run's model takes, to which other data sets are adapted for transfer (<see cref="Data.InputAdapter"/>).</summary>
    public abstract (int ImageSize, int Channels) InputShape();

    /// <summary>
    /// This configuration completed from the training data before anything is built: what a method fits once on data
    /// (iGPT's colour palette) and the input normalisation, recorded in the configuration so a run folder rebuilds the
    /// same model. Called after <see cref="ForInput"/>; most methods need nothing.
    /// </summary>
    public virtual MethodConfig ForData(ImageDataset train, Normalization normalization) => this;

    /// <summary>Throws a <see cref="ResearchKitException"/> naming the option and the valid range when a value is out of range.</summary>
    public abstract void Validate();

    /// <summary>
    /// The folders this configuration's model is built from (a tokenizer, a teacher run): a run records their identity, so
    /// weights trained on one are never silently used with another (<see cref="Training.Provenance"/>).
    /// </summary>
    public virtual IEnumerable<FrozenDependency> FrozenDependencies() => [];

    /// <summary>
    /// The model's size worked out from this configuration, without building it, so a run that cannot fit the machine is
    /// refused before anything is built or written (<see cref="MemoryBudget"/>); null: not estimated.
    /// </summary>
    public virtual ModelSize? Size() => null;

    /// <summary>
    /// Builds the method's model for a run described by <paramref name="context"/> (its normalisation, shape and frozen
    /// dependencies); call <see cref="Compute.Seed"/> first for a seeded initialisation.
    /// </summary>
    public abstract IPretrainModel Build(BuildContext context);

    /// <summary>The model for images given as pixel values in [0, 1] (<see cref="BuildContext.Pixels"/>): unit tests and benchmarks.</summary>
    public IPretrainModel Build() => Build(BuildContext.Pixels(this));
}

/// <summary>
/// A pre-training model: it trains through its update phases (<see cref="ITrainable"/>) and exposes the backbone that
/// evaluation probes and fine-tunes. What else it can be measured by, its method declares (<see cref="MethodInfo.Evaluations"/>).
/// </summary>
public interface IPretrainModel : ITrainable
{
    Backbone Backbone { get; }
}

/// <summary>
/// A command-line option a method declares (e.g. MAE's --mask-ratio). <see cref="Apply"/> parses the text and
/// returns the updated configuration; range checks belong to the configuration's Validate.
/// </summary>
public sealed record MethodOption(string Name, string Description, bool IsFlag, Func<MethodConfig, string, MethodConfig> Apply)
{
    /// <summary>
    /// For an option that matters only in some configurations: null when it has an effect on the configuration it ends up
    /// in, else what it needs ("--target pca"). A given option that would do nothing is refused rather than recorded in
    /// config.json (and a sweep's key) as if it mattered.
    /// </summary>
    public Func<MethodConfig, string?>? Unused { get; init; }

    /// <summary>This option, refused unless <paramref name="applies"/> holds for the final configuration.</summary>
    public MethodOption Only<TConfig>(Func<TConfig, bool> applies, string requirement) where TConfig : MethodConfig =>
        this with { Unused = c => applies((TConfig)c) ? null : requirement };

    /// <summary>A one-line error when this option, given, has no effect on <paramref name="config"/>; else null.</summary>
    public string? Useless(MethodInfo method, MethodConfig config) =>
        Unused?.Invoke(config) is { } needs ? $"{method.Name}: {Name} does nothing without {needs}" : null;

    public static MethodOption Number<TConfig>(string name, string description, Func<TConfig, double, TConfig> apply) where TConfig : MethodConfig =>
        new(name, description, false, (c, text) => apply((TConfig)c, ParseNumber(name, text)));

    public static MethodOption Integer<TConfig>(string name, string description, Func<TConfig, int, TConfig> apply) where TConfig : MethodConfig =>
        new(name, description, false, (c, text) => apply((TConfig)c, ParseInteger(name, text)));

    public static MethodOption Flag<TConfig>(string name, string description, Func<TConfig, TConfig> apply) where TConfig : MethodConfig =>
        new(name, description, true, (c, _) => apply((TConfig)c));

    /// <summary>A non-empty text value, such as a folder.</summary>
    public static MethodOption Text<TConfig>(string name, string description, Func<TConfig, string, TConfig> apply) where TConfig : MethodConfig =>
        new(name, description, false, (c, text) => !string.IsNullOrWhiteSpace(text)
            ? apply((TConfig)c, text) : throw new ResearchKitException($"{name}: expected a value; got an empty one"));

    /// <summary>One of an enum's values, spelt as config.json writes it (<see cref="EnumNames"/>).</summary>
    public static MethodOption Choice<TConfig, TEnum>(string name, string description, Func<TConfig, TEnum, TConfig> apply)
        where TConfig : MethodConfig where TEnum : struct, Enum =>
        new(name, $"{description} ({string.Join("|", EnumNames.All<TEnum>())})", false, (c, text) => apply((TConfig)c, EnumNames.Parse<TEnum>(name, text)));

    /// <summary>A whole number in invariant culture, or a one-line error naming the option.</summary>
    public static int ParseInteger(string name, string text) =>
        int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v
            : throw new ResearchKitException($"{name}: expected a whole number; got '{text}'");

    /// <summary>A finite number in invariant culture; NaN and infinities are refused here, at the edge.</summary>
    public static double ParseNumber(string name, string text) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && double.IsFinite(v)
            ? v : throw new ResearchKitException($"{name}: expected a finite number; got '{text}'");
}

/// <summary>
/// The names of an enum's values as config.json writes them (<see cref="MethodRegistry.Json"/>: kebab-case, so
/// MaeTarget.NormPixel is "norm-pixel"): the command line accepts the same spelling the run folder records.
/// </summary>
public static class EnumNames
{
    public static string Of<TEnum>(TEnum value) where TEnum : struct, Enum => JsonNamingPolicy.KebabCaseLower.ConvertName(value.ToString());

    /// <summary>Every value's name, in declaration order.</summary>
    public static IReadOnlyList<string> All<TEnum>() where TEnum : struct, Enum => Enum.GetValues<TEnum>().Select(Of).ToList();

    /// <summary>The value named <paramref name="text"/>, or a one-line error naming <paramref name="option"/> and the names it takes.</summary>
    public static TEnum Parse<TEnum>(string option, string text) where TEnum : struct, Enum =>
        Enum.GetValues<TEnum>().Where(v => Of(v) == text).Select(v => (TEnum?)v).FirstOrDefault()
        ?? throw new ResearchKitException($"{option}: expected one of {string.Join(", ", All<TEnum>())}; got '{text}'");
}

/// <summary>
/// A registered method: its name (the CLI's --method and config.json's discriminator), the paper, the config type,
/// named presets (a function of nothing: sizes come from the data via <see cref="MethodConfig.ForInput"/>) and options.
/// </summary>
public sealed record MethodInfo(string Name, string Paper, Type ConfigType, IReadOnlyDictionary<string, Func<MethodConfig>> Presets,
    IReadOnlyList<MethodOption> Options)
{
    public MethodConfig Preset(string preset) => Presets.TryGetValue(preset, out var make) ? make()
        : throw new ResearchKitException($"{Name}: unknown preset '{preset}'; expected one of: {string.Join(", ", Presets.Keys)}");

    public MethodOption Option(string name) => Options.FirstOrDefault(o => o.Name == name)
        ?? throw new ResearchKitException($"{Name} has no option {name}; its options: {(Options.Count == 0 ? "none" : string.Join(", ", Options.Select(o => o.Name)))}");

    /// <summary>The figures the method draws from a finished run (`researchkit show RUN --what NAME`).</summary>
    public IReadOnlyList<MethodFigure> Figures { get; init; } = [];

    /// <summary>The benchmarks it offers beyond the training step (`researchkit bench --method NAME --study NAME`).</summary>
    public IReadOnlyList<MethodStudy> Studies { get; init; } = [];

    /// <summary>What it measures on a trained model (`researchkit evaluate RUN`, and every sweep's results by name).</summary>
    public IReadOnlyList<MethodEvaluation> Evaluations { get; init; } = [];

    /// <summary>Fine-tuning objectives it provides beside cross-entropy (`finetune RUN --objective NAME`).</summary>
    public IReadOnlyList<MethodObjective> FineTuneObjectives { get; init; } = [];

    /// <summary>The objective fine-tuning uses when none is named: the paper's recipe (null: cross-entropy).</summary>
    public string? DefaultObjective { get; init; }

    public MethodEvaluation Evaluation(string name) => Evaluations.FirstOrDefault(e => e.Name == name)
        ?? throw new ResearchKitException($"--what: {Name} measures {(Evaluations.Count == 0 ? "nothing" : string.Join(", ", Evaluations.Select(e => e.Name)))}; got '{name}'");

    /// <summary>
    /// The fine-tuning loss named <paramref name="name"/> (null: <see cref="DefaultObjective"/>) with its options; every
    /// method has <see cref="MethodObjective.CrossEntropyName"/>. Unknown names and options are one-line errors.
    /// </summary>
    public ResearchKit.Evaluation.FineTuneLoss Objective(string? name, IReadOnlyDictionary<string, string>? options = null)
    {
        name ??= DefaultObjective ?? MethodObjective.CrossEntropyName;
        var given = options ?? new Dictionary<string, string>();
        if (name == MethodObjective.CrossEntropyName)
            return given.Count == 0 ? ResearchKit.Evaluation.FineTuning.CrossEntropy
                : throw new ResearchKitException($"--objective {name} takes no options; got {string.Join(", ", given.Keys)}");
        var objective = FineTuneObjectives.FirstOrDefault(o => o.Name == name) ?? throw new ResearchKitException(
            $"--objective: {Name} fine-tunes with {string.Join(", ", FineTuneObjectives.Select(o => o.Name).Prepend(MethodObjective.CrossEntropyName))}; got '{name}'");
        if (given.Keys.FirstOrDefault(k => objective.Options.All(o => o.Name != k)) is { } unknown)
            throw new ResearchKitException($"{Name}'s {name} objective has no option {unknown}; its options: " +
                (objective.Options.Count == 0 ? "none" : string.Join(", ", objective.Options.Select(o => o.Name))));
        return objective.Make(new OptionValues(objective.Options, given));
    }

    public MethodFigure Figure(string name) => Figures.FirstOrDefault(f => f.Name == name)
        ?? throw new ResearchKitException($"--what: {Name} draws {(Figures.Count == 0 ? "no figures" : string.Join(", ", Figures.Select(f => f.Name)))}; got '{name}'");

    public MethodStudy Study(string name) => Studies.FirstOrDefault(s => s.Name == name)
        ?? throw new ResearchKitException($"--study: {Name} offers {(Studies.Count == 0 ? "no studies" : string.Join(", ", Studies.Select(s => s.Name)))}; got '{name}'");
}
