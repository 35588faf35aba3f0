using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Runs;
using static TorchSharp.torch;

namespace ResearchKit.Cli;

/// <summary>
/// `evaluate RUN [--what NAME]… [--extra ROLE=DATASET|RUN]…`: the evaluations the run's method declares
/// (<see cref="MethodInfo.Evaluations"/>), on its first test images with their labels; the outcomes are printed and stored
/// in the run folder (<see cref="MethodEvaluations.Store"/>). None of this names a method.
/// </summary>
static class EvaluateCommand
{
    public static Command Create()
    {
        var dir = new Argument<string>("run") { Description = "run folder written by pretrain" };
        var what = new Option<string[]>("--what") { Description = "evaluations to run (default: every one whose data are given, except those run on request only)", AllowMultipleArgumentsPerToken = false };
        var extra = new Option<string[]>("--extra") { Description = "an extra data set or run folder by role, e.g. ood=mnist (adapted to the run's shape) or classifier=runs/sup" };
        var count = new Option<int>("--n") { Description = "test images (and extra images) to measure on", DefaultValueFactory = _ => 1000 };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 0 };
        var list = new Option<bool>("--list") { Description = "list the method's evaluations and what they need" };
        var json = new Option<bool>("--json") { Description = "one JSON object per evaluation per line" };
        var device = Commands.DeviceOption();
        var precision = Commands.PrecisionOption();
        var command = new Command("evaluate", "Run the evaluations the run's method declares (pretext metrics, calibration, OOD…) and store them in the run folder")
            { dir, what, extra, count, seed, list, json, device, precision };
        var snapshot = new Commands.SnapshotChoice(command);
        command.SetAction(r => Commands.Run(r.GetValue(device)!, r.GetValue(precision), () =>
        {
            var folder = r.GetValue(dir)!;
            var info = MethodRegistry.Of(Pretraining.ReadConfig(folder).Method);
            if (r.GetValue(list))
            {
                Console.WriteLine(info.Evaluations.Count == 0 ? $"{info.Name} declares no evaluations" : string.Join("\n", info.Evaluations.Select(e =>
                    $"{e.Name}: {e.Description}{(e.Needs.Count == 0 ? "" : $" (needs --extra {string.Join(", ", e.Needs.Select(n => n + "=DATASET|RUN"))})")}" +
                    (e.OnRequest ? $" [on request: --what {e.Name}]" : ""))));
                return;
            }
            int n = r.GetValue(count);
            Commands.Positive("--n", n);
            var names = r.GetValue(what) is { Length: > 0 } chosen ? chosen : null;
            if (names is not null) foreach (var name in names) info.Evaluation(name);   // unknown names fail before anything loads
            var roles = ExtraData.ParseRoles(r.GetValue(extra) ?? []);
            var (config, model) = snapshot.Load(r, folder);
            using var extraData = ExtraData.Load(roles, config.Method.InputShape(), n);
            using var data = DatasetCatalog.Load(config.Dataset, 1, n);
            using var generator = new Generator((ulong)r.GetValue(seed));
            var clock = Stopwatch.StartNew();
            List<EvaluationOutcome> outcomes;
            using (var scope = NewDisposeScope())
            {
                var request = new EvaluationRequest(model, config.Normalization, config.Normalization.Apply(data.Test.Images, Compute.Device),
                    data.Test.Labels.to(Compute.Device), extraData.Sets, generator) { References = extraData.References };
                outcomes = MethodEvaluations.Run(info, request, names);
            }
            var weights = snapshot.Name(r);
            MethodEvaluations.Store(folder, weights, outcomes, Experiments.EvaluationContext(data.Test.Count, r.GetValue(seed), extraData));
            foreach (var outcome in outcomes)
                Console.WriteLine(r.GetValue(json)
                    ? JsonSerializer.Serialize(new { evaluation = outcome.Name, weights, scalars = outcome.Scalars, extra = extraData.Descriptions }, MethodRegistry.Json)
                        .ReplaceLineEndings(" ")
                    : $"{outcome.Name}: " + (outcome.Scalars.Count == 0 ? "nothing to measure on this model"
                        : string.Join(", ", outcome.Scalars.Select(kv => $"{kv.Key} {kv.Value}"))));
            var skipped = names is null ? info.Evaluations.Where(e => e.OnRequest || e.Needs.Any(x => !roles.ContainsKey(x))).ToList() : [];
            if (!r.GetValue(json))
            {
                foreach (var e in skipped)
                    Console.WriteLine($"{e.Name}: skipped ({(e.OnRequest ? $"run on request: --what {e.Name}" : $"give --extra {string.Join(", ", e.Needs.Select(x => x + "=DATASET|RUN"))}")})");
                if (outcomes.Count == 0 && skipped.Count == 0) Console.WriteLine($"{info.Name} declares no evaluations");
                Console.WriteLine($"{data.Test.Count} test images in {clock.Elapsed.TotalSeconds:F1} s; stored in {Path.Combine(folder, MethodEvaluations.FileName)} ({weights})");
            }
        }));
        return command;
    }
}
