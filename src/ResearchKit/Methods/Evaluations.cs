using System.Text.Json;
using System.Text.Json.Nodes;
using ResearchKit.Data;
using ResearchKit.Reporting;
using static TorchSharp.torch;

namespace ResearchKit.Methods;

/// <summary>
/// A measurement a method declares on a trained model (<see cref="MethodInfo.Evaluations"/>): the pretext task itself
/// (reconstruction PSNR, rotation accuracy, bits per pixel), or what a paper judges it by (calibration, OOD detection,
/// sample quality). It returns named scalars, curves and figures; generic code stores and reads them by name only.
/// </summary>
public sealed record MethodEvaluation(string Name, string Description, Func<EvaluationRequest, EvaluationReport> Run)
{
    /// <summary>Roles of the extra data sets or reference runs it needs (e.g. "ood", "classifier"): it runs only when each is
    /// given (`evaluate RUN --extra ood=mnist`, `--extra classifier=RUN`, <see cref="Runs.EvaluationOptions.ExtraData"/>).</summary>
    public IReadOnlyList<string> Needs { get; init; } = [];

    /// <summary>Runs only when named (`evaluate RUN --what NAME`, <see cref="Runs.EvaluationOptions.Evaluations"/>): for a
    /// costly measurement most uses of the method do not need (PGD robustness of every supervised reference).</summary>
    public bool OnRequest { get; init; }
}

/// <summary>
/// What an evaluation measures on: the model, the normalisation of its images, held-out test images (normalised, on
/// <see cref="Compute.Device"/>) with their labels, extra data sets by role (already adapted to the run's input shape),
/// reference runs' frozen models by role, and a seeded generator. It runs under no_grad in a dispose scope, with the model in
/// eval mode.
/// </summary>
public sealed record EvaluationRequest(IPretrainModel Model, Normalization Normalization, Tensor Images, Tensor Labels,
    IReadOnlyDictionary<string, ImageDataset> Extra, Generator Generator)
{
    /// <summary>Other runs' models by role (a classifier whose features measure samples), frozen, taking this run's images.</summary>
    public IReadOnlyDictionary<string, IPretrainModel> References { get; init; } = new Dictionary<string, IPretrainModel>();

    /// <summary>Whether the data set or reference run for <paramref name="role"/> was given.</summary>
    public bool Has(string role) => Extra.ContainsKey(role) || References.ContainsKey(role);

    /// <summary>The reference run given for <paramref name="role"/>.</summary>
    public IPretrainModel Reference(string role) => References.TryGetValue(role, out var model) ? model
        : throw new ResearchKitException($"--extra {role}=RUN: this evaluation needs a run folder for '{role}'");

    /// <summary>The extra data set given for <paramref name="role"/>, normalised as the run's images, on the device.</summary>
    public Tensor ExtraImages(string role) => Extra.TryGetValue(role, out var data)
        ? Normalization.Apply(data.Images, Compute.Device)
        : throw new ResearchKitException($"--extra {role}=DATASET: this evaluation needs the '{role}' data set");

    /// <summary>The mean of <paramref name="measure"/> over batches of images and labels, weighted by batch size: for measures that
    /// hold a batch's activations (and gradients, for attacks) at once.</summary>
    public static double BatchedMean(Tensor images, Tensor labels, Func<Tensor, Tensor, double> measure, long batchSize = 256)
    {
        double sum = 0;
        for (long start = 0; start < images.shape[0]; start += batchSize)
        {
            long n = Math.Min(batchSize, images.shape[0] - start);
            sum += n * measure(images.narrow(0, start, n), labels.narrow(0, start, n));
        }
        return sum / images.shape[0];
    }

    /// <summary><paramref name="map"/> applied to <paramref name="images"/> in batches along the first dimension, concatenated:
    /// evaluations see thousands of images, and one forward pass over all of them would need their activations at once.</summary>
    public static Tensor Batched(Tensor images, Func<Tensor, Tensor> map, long batchSize = 256)
    {
        var parts = new List<Tensor>();
        for (long start = 0; start < images.shape[0]; start += batchSize)
            parts.Add(map(images.narrow(0, start, Math.Min(batchSize, images.shape[0] - start))));
        return cat(parts, 0);
    }
}

/// <summary>A curve an evaluation measured (a reliability diagram, a ROC curve): points with their axes' names.</summary>
public sealed record Curve(string XLabel, string YLabel, double[] X, double[] Y);

/// <summary>What an evaluation measured: scalars by name (unique across a method's evaluations), curves and figures by name.</summary>
public sealed record EvaluationReport(IReadOnlyDictionary<string, double> Scalars)
{
    public IReadOnlyDictionary<string, Curve> Curves { get; init; } = new Dictionary<string, Curve>();
    public IReadOnlyDictionary<string, Figure> Figures { get; init; } = new Dictionary<string, Figure>();

    public static EvaluationReport Of(string name, double value) => new(new Dictionary<string, double> { [name] = value });
}

/// <summary>One evaluation's outcome as plain data, safe to keep after its tensors are gone: scalars rounded to 4 decimals,
/// curves, and figures drawn into PNG grids (with their captions).</summary>
public sealed record EvaluationOutcome(string Name, IReadOnlyDictionary<string, double> Scalars, IReadOnlyDictionary<string, Curve> Curves,
    IReadOnlyDictionary<string, (byte[] Png, string Caption)> Figures);

/// <summary>Runs a method's declared evaluations and stores their outcomes in a run folder; nothing here knows a method.</summary>
public static class MethodEvaluations
{
    /// <summary>The file in a run folder that holds every evaluation's scalars and curves, by weights then by evaluation.</summary>
    public const string FileName = "evaluations.json";

    /// <summary>
    /// Runs <paramref name="names"/> (null: every evaluation not <see cref="MethodEvaluation.OnRequest"/> whose
    /// <see cref="MethodEvaluation.Needs"/> the request's extra data meet) of <paramref name="method"/>. A named evaluation whose needs are not met is a one-line error that says which
    /// data set to give. Two evaluations reporting the same scalar name is an error: results are read by name.
    /// </summary>
    public static List<EvaluationOutcome> Run(MethodInfo method, EvaluationRequest request, IReadOnlyCollection<string>? names = null)
    {
        var chosen = names is null
            ? method.Evaluations.Where(e => !e.OnRequest && e.Needs.All(request.Has)).ToList()
            : names.Select(method.Evaluation).ToList();
        foreach (var evaluation in chosen)
            if (evaluation.Needs.FirstOrDefault(n => !request.Has(n)) is { } missing)
                throw new ResearchKitException($"{method.Name}'s {evaluation.Name} needs '{missing}': give --extra {missing}=DATASET or RUN folder");
        request.Model.Module.eval();
        var outcomes = new List<EvaluationOutcome>();
        foreach (var evaluation in chosen)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var report = evaluation.Run(request);
            outcomes.Add(new EvaluationOutcome(evaluation.Name,
                report.Scalars.ToDictionary(kv => kv.Key, kv => Math.Round(kv.Value, 4)),
                report.Curves,
                report.Figures.ToDictionary(kv => kv.Key, kv => (ImageGrid.FromRows(kv.Value.Rows, scale: 3).Png, kv.Value.Caption))));
        }
        Scalars(outcomes);   // refuse clashing names before anything is stored
        return outcomes;
    }

    /// <summary>Every outcome's scalars in one map by name (what sweep results keep), or an error naming a clash.</summary>
    public static Dictionary<string, double> Scalars(IEnumerable<EvaluationOutcome> outcomes)
    {
        var all = new Dictionary<string, double>();
        foreach (var outcome in outcomes)
            foreach (var (name, value) in outcome.Scalars)
                if (!all.TryAdd(name, value))
                    throw new InvalidOperationException($"evaluation {outcome.Name}: the scalar '{name}' is also reported by another evaluation");
        return all;
    }

    /// <summary>
    /// Stores outcomes in <paramref name="runFolder"/>: scalars, curves and figure files under <paramref name="weights"/>
    /// ("final", "epoch-3", "step-100") in <see cref="FileName"/>, figures as evaluations/WEIGHTS/EVALUATION-FIGURE.png.
    /// An outcome replaces the same evaluation's earlier one for those weights; every other entry is kept. Atomic writes.
    /// </summary>
    public static void Store(string runFolder, string weights, IEnumerable<EvaluationOutcome> outcomes, JsonObject? context = null)
    {
        var path = Path.Combine(runFolder, FileName);
        var root = File.Exists(path) ? ReadRoot(path) : new JsonObject();
        var entry = root[weights] as JsonObject ?? new JsonObject();
        root[weights] = entry;
        foreach (var outcome in outcomes)
        {
            var figures = new JsonObject();
            foreach (var (name, (png, caption)) in outcome.Figures)
            {
                var relative = Path.Combine("evaluations", weights, $"{outcome.Name}-{name}.png");
                Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(runFolder, relative))!);
                AtomicFile.Write(Path.Combine(runFolder, relative), s => s.Write(png));
                figures[name] = new JsonObject { ["file"] = relative, ["caption"] = caption };
            }
            entry[outcome.Name] = new JsonObject
            {
                ["scalars"] = JsonSerializer.SerializeToNode(outcome.Scalars, MethodRegistry.Json),
                ["curves"] = JsonSerializer.SerializeToNode(outcome.Curves, MethodRegistry.Json),
                ["figures"] = figures,
                ["context"] = context?.DeepClone(),
            };
        }
        AtomicFile.WriteAllText(path, root.ToJsonString(MethodRegistry.Json));
    }

    /// <summary>The scalars stored in a run folder for <paramref name="weights"/>, by name (empty when none were stored).</summary>
    public static Dictionary<string, double> ReadScalars(string runFolder, string weights = "final") =>
        Stored(runFolder, weights, "scalars", (value, _) => JsonSerializer.Deserialize<double>(value, MethodRegistry.Json));   // "Infinity": a perfect PSNR

    /// <summary>The curves stored in a run folder for <paramref name="weights"/> (a reliability diagram…), by name (empty when none).</summary>
    public static Dictionary<string, Curve> ReadCurves(string runFolder, string weights = "final") =>
        Stored(runFolder, weights, "curves", (value, name) =>
        {
            try { return value.Deserialize<Curve>(MethodRegistry.Json) ?? throw new JsonException("null"); }
            catch (JsonException e) { throw new DataFormatException(Path.Combine(runFolder, FileName), $"curve '{name}' of '{weights}' is not a curve ({e.Message.Split('\n')[0]})"); }
        });

    /// <summary>Every evaluation's entries of one kind ("scalars", "curves") stored for <paramref name="weights"/>, read by name.</summary>
    static Dictionary<string, T> Stored<T>(string runFolder, string weights, string kind, Func<JsonNode?, string, T> read)
    {
        var path = Path.Combine(runFolder, FileName);
        var result = new Dictionary<string, T>();
        if (!File.Exists(path) || ReadRoot(path)[weights] is not JsonObject entry) return result;
        foreach (var (_, evaluation) in entry)
            foreach (var (name, value) in evaluation?[kind]?.AsObject() ?? new JsonObject())
                result[name] = read(value, name);
        return result;
    }

    static JsonObject ReadRoot(string path)
    {
        try { return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new JsonException("not an object"); }
        catch (JsonException e) { throw new ResearchKitException($"{path}: not an evaluations file ({e.Message.Split('\n')[0]})"); }
    }
}

/// <summary>
/// The extra data of an evaluation by role: a data set ("ood" → "mnist"), its test split (its first <c>limit</c> images)
/// adapted to the run's input shape (<see cref="InputAdapter"/>); or a run folder ("classifier" → "runs/sup"), whose model
/// is loaded frozen and must take the run's input shape. Descriptions say what each was, for the results.
/// </summary>
public sealed class ExtraData : IDisposable
{
    readonly List<IDisposable> owned = [];
    readonly Dictionary<string, ImageDataset> sets = [];
    readonly Dictionary<string, IPretrainModel> references = [];

    public IReadOnlyDictionary<string, ImageDataset> Sets => sets;

    /// <summary>The run folders' models by role (<see cref="EvaluationRequest.References"/>).</summary>
    public IReadOnlyDictionary<string, IPretrainModel> References => references;

    /// <summary>Role → "DATASET (adapted: …)": what a stored result records.</summary>
    public Dictionary<string, string> Descriptions { get; } = [];

    /// <param name="shape">The run's input shape (<see cref="MethodConfig.InputShape"/>).</param>
    public static ExtraData Load(IReadOnlyDictionary<string, string>? roles, (int ImageSize, int Channels) shape, long limit)
    {
        var extra = new ExtraData();
        var (size, channels) = shape;
        try
        {
            foreach (var (role, name) in roles ?? new Dictionary<string, string>())
            {
                if (File.Exists(Path.Combine(name, Runs.Pretraining.ConfigFile)))
                {
                    var model = new Dependencies().Run(name, $"--extra {role}", size, channels);
                    extra.owned.Add(model.Module);
                    extra.references[role] = model;
                    extra.Descriptions[role] = $"run {Path.GetFullPath(name)}";
                    continue;
                }
                var loaded = DatasetCatalog.Load(name, 1, limit);
                extra.owned.Add(loaded);
                var adapter = InputAdapter.For(loaded.Test, channels, size);
                var adapted = adapter.Apply(loaded.Test);
                if (!adapter.IsIdentity) extra.owned.Add(adapted);
                extra.sets[role] = adapted;
                extra.Descriptions[role] = adapter.IsIdentity ? name : $"{name} (adapted: {adapter.Description})";
            }
            return extra;
        }
        catch
        {
            extra.Dispose();
            throw;
        }
    }

    /// <summary>"ood=mnist" or "classifier=runs/sup" pairs from the command line, each role once.</summary>
    public static Dictionary<string, string> ParseRoles(IEnumerable<string> pairs)
    {
        var roles = new Dictionary<string, string>();
        foreach (var pair in pairs)
        {
            int split = pair.IndexOf('=');
            if (split <= 0 || split == pair.Length - 1) throw new ResearchKitException($"--extra: expected ROLE=DATASET (e.g. ood=mnist); got '{pair}'");
            if (!roles.TryAdd(pair[..split], pair[(split + 1)..])) throw new ResearchKitException($"--extra: the role '{pair[..split]}' is given twice");
        }
        return roles;
    }

    public void Dispose()
    {
        foreach (var d in owned) d.Dispose();
        owned.Clear();
    }
}
