using System.Text;
using Deedle;
using Plotly.NET;
using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Reporting;
using ResearchKit.Training;

namespace ResearchKit.Runs;

/// <summary>
/// One row of a paper's ablation table: our configuration of it, and the numbers the paper reports for it (NaN where the
/// paper has no such row, e.g. a variant added at this scale).
/// </summary>
public sealed record AblationVariant(string Name, MethodConfig Method, AugmentKind Augment = AugmentKind.None,
    double PaperLinear = double.NaN, double PaperFineTune = double.NaN);

/// <summary>How every variant of an ablation is pre-trained and measured; <see cref="Floor"/> is the network whose random initialisation is the probe floor.</summary>
public sealed record AblationSettings(string Dataset, int Epochs, long? TrainLimit, IReadOnlyList<int> Seeds, EvaluationOptions Evaluation, MethodConfig Floor);

/// <summary>
/// A paper's ablation table reproduced: every variant pre-trained and measured over the seeds (each run cached in the
/// results folder by a hash of its settings, so identical runs are shared between notebooks using the same folder), the
/// floors (the same network at random initialisation, a linear probe on raw pixels), and the table, charts and verdict
/// every ablation notebook shows. The verdict compares orderings, not values: the paper's scale is not ours.
/// </summary>
public sealed class AblationStudy
{
    public string Title { get; }
    public string PaperTitle { get; }
    public string ResultsFolder { get; }
    public AblationSettings Settings { get; }
    public IReadOnlyList<AblationVariant> Variants { get; }
    /// <summary>One group per variant, in order: its runs over the seeds.</summary>
    public IReadOnlyList<SeedGroup<Experiment, ExperimentResult>> Groups { get; }
    public SeedGroup<Experiment, ExperimentResult> RandomInit { get; }
    /// <summary>Test accuracy (0..1) of a linear probe on standardised raw pixels.</summary>
    public double RawPixels { get; }

    AblationStudy(string title, string paperTitle, string resultsFolder, AblationSettings settings, IReadOnlyList<AblationVariant> variants,
        IReadOnlyList<SeedGroup<Experiment, ExperimentResult>> groups, SeedGroup<Experiment, ExperimentResult> randomInit, double rawPixels)
    {
        (Title, PaperTitle, ResultsFolder, Settings, Variants, Groups, RandomInit, RawPixels) = (title, paperTitle, resultsFolder, settings, variants, groups, randomInit, rawPixels);
    }

    /// <summary>The experiment a variant runs (its seed set by the sweep).</summary>
    public static Experiment ExperimentOf(AblationVariant variant, AblationSettings settings) =>
        new(variant.Method, new PretrainOptions(settings.Dataset, settings.Epochs, settings.TrainLimit, Augment: variant.Augment), settings.Evaluation);

    /// <summary>Runs (or reads from the cache) every variant and the floors; progress goes to <paramref name="progress"/> and <paramref name="sweep"/>.</summary>
    public static AblationStudy Run(string title, string paperTitle, IReadOnlyList<AblationVariant> variants, AblationSettings settings, string resultsFolder,
        IProgress<TrainProgress>? progress = null, IProgress<SweepProgress>? sweep = null, Action<string>? status = null, CancellationToken cancel = default)
    {
        if (variants.Count == 0) throw new ResearchKitException("an ablation needs at least one variant");
        if (variants.Select(v => v.Name).Distinct().Count() != variants.Count) throw new ResearchKitException("ablation variants need distinct names");
        var floor = new Experiment(settings.Floor, new PretrainOptions(settings.Dataset, 0, settings.TrainLimit), settings.Evaluation);
        var experiments = variants.Select(v => ExperimentOf(v, settings)).Prepend(floor).ToList();
        string Describe(Experiment e)
        {
            int i = experiments.FindIndex(x => x with { Pretrain = x.Pretrain with { Seed = e.Pretrain.Seed } } == e);
            return (i <= 0 ? "random initialisation (floor)" : variants[i - 1].Name) + $", seed {e.Pretrain.Seed}";
        }
        var groups = Sweep.RunSeeds(resultsFolder, experiments, settings.Seeds, (e, seed) => e with { Pretrain = e.Pretrain with { Seed = seed } },
            (e, dir) => Experiments.Run(e, dir, progress, status, cancel), sweep, Describe);
        var e = settings.Evaluation;
        double raw = Sweep.Run(resultsFolder, new[] { new RawPixelFloor(settings.Dataset, e.ProbeTrain, e.ProbeTest) }, (f, _) => Experiments.RawPixelProbe(f))[0].Result;
        return new AblationStudy(title, paperTitle, resultsFolder, settings, variants, groups.Skip(1).ToList(), groups[0], raw);
    }

    public SeedStats Probe(SeedGroup<Experiment, ExperimentResult> g) => g.Stats(r => r.BestProbe);
    public SeedGroup<Experiment, ExperimentResult> this[string name] => Groups[IndexOf(name)];

    int IndexOf(string name)
    {
        int i = Variants.ToList().FindIndex(v => v.Name == name);
        return i >= 0 ? i : throw new ResearchKitException($"no variant '{name}'; the variants: {string.Join(", ", Variants.Select(v => v.Name))}");
    }

    /// <summary>The work folder of a variant's run for a seed (its pre-training run folder is inside: <see cref="Experiments.PretrainFolder"/>).</summary>
    public string WorkFolder(string name, int seedIndex = 0) => WorkFolder(this[name], seedIndex);

    string WorkFolder(SeedGroup<Experiment, ExperimentResult> group, int seedIndex = 0) => Sweep.WorkFolder(ResultsFolder, group.Runs[seedIndex].Key);

    /// <summary>Total seconds of all runs (cached runs count their original time).</summary>
    public double Seconds => Groups.Append(RandomInit).Sum(g => g.Runs.Sum(r => r.Seconds));

    /// <summary>One row per variant (mean ± standard deviation over the seeds, accuracies in %), the paper's numbers beside, then the floors.</summary>
    public Frame<int, string> Table() => Tables.FromDictionaries(Groups.Select((g, i) => new Dictionary<string, object>
    {
        ["variant"] = Variants[i].Name,
        ["probe, best layer"] = Probe(g).Format(),
        ["best layer"] = string.Join("/", g.Runs.Select(r => r.Result.BestLayer)),
        ["probe, last layer"] = g.Stats(r => r.ProbeByLayer[^1]).Format(),
        ["kNN, best layer"] = g.Stats(r => r.KnnByLayer.Max()).Format(),
        ["pretext"] = string.Join(", ", g.Runs[0].Result.Pretext.Select(kv => $"{kv.Key.Replace('_', ' ')} {kv.Value:0.###}")),
        ["pre-train s"] = g.Stats(r => r.PretrainSeconds).Format(1, "F0"),
        ["paper linear"] = double.IsNaN(Variants[i].PaperLinear) ? "" : Variants[i].PaperLinear.ToString("F1"),
        ["paper fine-tune"] = double.IsNaN(Variants[i].PaperFineTune) ? "" : Variants[i].PaperFineTune.ToString("F1"),
    }).Append(new Dictionary<string, object>
    {
        ["variant"] = "random init (floor)", ["probe, best layer"] = Probe(RandomInit).Format(),
        ["best layer"] = string.Join("/", RandomInit.Runs.Select(r => r.Result.BestLayer)), ["probe, last layer"] = RandomInit.Stats(r => r.ProbeByLayer[^1]).Format(),
        ["kNN, best layer"] = RandomInit.Stats(r => r.KnnByLayer.Max()).Format(),
    }).Append(new Dictionary<string, object> { ["variant"] = "raw pixels (floor)", ["probe, best layer"] = (100 * RawPixels).ToString("F1") }));

    /// <summary>Our probes per variant with seed error bars and the floors, beside the paper's linear and fine-tuning numbers.</summary>
    public GenericChart Chart(string? title = null) => Charts.Comparison(title ?? Title, "linear probe accuracy (%)",
        Variants.Select(v => v.Name).Append("random init").Append("raw pixels").ToList(),
        new (string, IReadOnlyList<SeedStats>)[]
        {
            ("best layer", Groups.Select(Probe).Append(Probe(RandomInit)).Append(SeedStats.Of([RawPixels])).ToList()),
            ("last layer", Groups.Append(RandomInit).Select(g => g.Stats(r => r.ProbeByLayer[^1])).ToList()),
        },
        paper: new (string, IReadOnlyList<double>)[]
        {
            ("linear", Variants.Select(v => v.PaperLinear).ToList()),
            ("fine-tune", Variants.Select(v => v.PaperFineTune).ToList()),
        },
        paperTitle: PaperTitle);

    /// <summary>The probe of every layer per variant and for the untrained network.</summary>
    public GenericChart ProbeByLayer()
    {
        int depth = RandomInit.Runs[0].Result.ProbeByLayer.Length;
        double[] layers = Enumerable.Range(0, depth).Select(i => (double)i).ToArray();
        SeedStats[] ByLayer(SeedGroup<Experiment, ExperimentResult> g) => Enumerable.Range(0, depth).Select(l => g.Stats(r => r.ProbeByLayer[l])).ToArray();
        return Charts.Ablation($"{Title}: linear probe by layer", "layer", "test accuracy (%)",
            Groups.Select((g, i) => ChartSeries.FromSeeds(Variants[i].Name, layers, ByLayer(g))).Append(ChartSeries.FromSeeds("random init", layers, ByLayer(RandomInit))));
    }

    /// <summary>Pre-training loss per variant (first seed).</summary>
    public GenericChart LossCurves(int window = 5) =>
        Charts.LossCurves(Groups.Select((g, i) => (Variants[i].Name,
            (IReadOnlyList<double>)Experiments.Metrics(WorkFolder(g)).Select(m => m.Loss).ToList())), $"{Title}: pre-training loss", window);

    /// <summary>
    /// A markdown verdict: the floors; each variant against the floors and against <paramref name="reference"/> (the
    /// paper's default), beside what the paper found; and how many of the paper's pairwise orderings hold here beyond
    /// the seed spread (two standard deviations added), are reversed beyond it, or cannot be told apart.
    /// </summary>
    public string Verdict(string reference)
    {
        var baseline = this[reference];
        var referenceVariant = Variants[IndexOf(reference)];
        var floor = Probe(RandomInit);
        bool oneSeed = Settings.Seeds.Count < 2;
        var text = new StringBuilder();
        text.AppendLine($"- Floors: random-init probe (best layer) **{floor.Format()}%**, raw-pixel probe **{100 * RawPixels:F1}%**.");
        for (int i = 0; i < Variants.Count; i++)
        {
            var (v, s) = (Variants[i], Probe(Groups[i]));
            string vsFloor = oneSeed ? $"{(s.Mean > floor.Mean ? "above" : "not above")} the random-init floor (one seed: no spread to judge by)"
                : s.Mean > floor.Mean && s.DiffersFrom(floor) ? "above the random-init floor beyond the seed spread" : "not clearly above the random-init floor";
            string vsRaw = s.Mean > RawPixels ? "above raw pixels" : "below raw pixels";
            string line = $"- **{v.Name}**: {s.Format()}% — {vsFloor}, {vsRaw}";
            if (v.Name != reference)
            {
                var b = Probe(baseline);
                string ours = oneSeed ? "one seed: cannot tell" : !s.DiffersFrom(b) ? "no different" : s.Mean > b.Mean ? "better" : "worse";
                string paper = double.IsNaN(v.PaperLinear) || double.IsNaN(referenceVariant.PaperLinear) ? "no paper number"
                    : $"paper: {(v.PaperLinear > referenceVariant.PaperLinear ? "better" : v.PaperLinear < referenceVariant.PaperLinear ? "worse" : "equal")} ({v.PaperLinear:F1} vs {referenceVariant.PaperLinear:F1})";
                line += $"; against {reference}: {ours} ({paper})";
            }
            text.AppendLine(line + ".");
        }
        int agree = 0, reversed = 0, untold = 0;
        var withPaper = Enumerable.Range(0, Variants.Count).Where(i => !double.IsNaN(Variants[i].PaperLinear)).ToList();
        foreach (var i in withPaper)
            foreach (var j in withPaper.Where(j => j > i && Variants[j].PaperLinear != Variants[i].PaperLinear))
            {
                var (a, b) = (Probe(Groups[i]), Probe(Groups[j]));
                if (oneSeed || !a.DiffersFrom(b)) untold++;
                else if ((a.Mean > b.Mean) == (Variants[i].PaperLinear > Variants[j].PaperLinear)) agree++;
                else reversed++;
            }
        var best = Groups.Select((g, i) => (g, i)).MaxBy(x => Probe(x.g).Mean);
        var paperBest = withPaper.Count > 0 ? Variants[withPaper.MaxBy(i => Variants[i].PaperLinear)].Name : "—";
        text.AppendLine($"- Best here: **{Variants[best.i].Name}** ({Probe(best.g).Format()}%); best in the paper (linear): **{paperBest}**.");
        text.AppendLine($"- Of the {agree + reversed + untold} pairs the paper orders (linear probe), **{agree}** hold here beyond the seed spread, **{reversed}** are reversed beyond it, and {untold} cannot be told apart" +
            (oneSeed ? " (one seed: no spread to judge by)." : "."));
        return text.ToString();
    }
}
