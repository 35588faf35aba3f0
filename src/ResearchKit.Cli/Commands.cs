using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Training;
using static TorchSharp.torch;

namespace ResearchKit.Cli;

/// <summary>The commands of `researchkit`: thin wrappers over the library's run pipeline.</summary>
static class Commands
{
    static readonly JsonSerializerOptions Line = new() { WriteIndented = false };

    static Option<string> DeviceOption() => new("--device") { Description = "auto, cpu, cuda or cuda:N", DefaultValueFactory = _ => "auto" };

    /// <summary>Sets the device, then runs the action, turning library errors into one-line messages.</summary>
    static int Run(string device, Action action)
    {
        Compute.Device = Compute.Choose(device);
        action();
        return 0;
    }

    public static Command Pretrain()
    {
        var method = new Option<string>("--method") { Description = "pre-training method", DefaultValueFactory = _ => "mae" };
        method.AcceptOnlyFromAmong(Pretraining.Methods);
        var dataset = new Option<string>("--dataset") { Description = "fashion-mnist, mnist, cifar10, shapes or image-folder:PATH", DefaultValueFactory = _ => "fashion-mnist" };
        var preset = new Option<string>("--preset") { Description = "model size", DefaultValueFactory = _ => "tiny" };
        preset.AcceptOnlyFromAmong(Pretraining.Presets);
        var epochs = new Option<int>("--epochs") { Description = "epochs over the training split", DefaultValueFactory = _ => 1 };
        var limit = new Option<long?>("--train-limit") { Description = "use only the first N training images" };
        var ratio = new Option<double?>("--mask-ratio") { Description = "fraction of patches removed (MAE default 0.75)" };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 0 };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 256 };
        var lr = new Option<double?>("--lr") { Description = "base learning rate (scaled by batch/256)" };
        var normPix = new Option<bool>("--norm-pix-loss") { Description = "normalise each target patch by its mean and variance" };
        var decoderDepth = new Option<int?>("--decoder-depth");
        var decoderDim = new Option<int?>("--decoder-dim");
        var augment = new Option<bool>("--augment") { Description = "random resized crop + horizontal flip (MAE's augmentation)" };
        var outDir = new Option<string>("--out") { Description = "run folder (checkpoint, config.json, metrics.jsonl); rerun to resume", Required = true };
        var device = DeviceOption();
        var command = new Command("pretrain", "Pre-train a model self-supervised; rerunning with the same --out resumes")
            { method, dataset, preset, epochs, limit, ratio, seed, batch, lr, normPix, decoderDepth, decoderDim, augment, outDir, device };
        command.SetAction(r => Run(r.GetValue(device)!, () =>
        {
            var options = new PretrainOptions(r.GetValue(method)!, r.GetValue(dataset)!, r.GetValue(preset)!, r.GetValue(epochs), r.GetValue(limit),
                r.GetValue(seed), r.GetValue(batch), r.GetValue(lr), r.GetValue(ratio), r.GetValue(normPix), r.GetValue(decoderDepth),
                r.GetValue(decoderDim), Augment: r.GetValue(augment));
            using var progress = new TerminalProgress("pretrain");
            var run = Pretraining.Run(options, r.GetValue(outDir)!, progress);
            var losses = run.Result.Losses;
            int k = Math.Max(1, Math.Min(10, losses.Count / 5));
            Console.WriteLine($"pretrained {run.Config.Method} on {run.Config.Dataset}: {run.Result.Steps} steps in {run.Result.Elapsed.TotalSeconds:F0} s" +
                $"{(run.Result.Resumed ? " (resumed)" : "")}; loss {losses.Take(k).Average():F4} → {losses.TakeLast(k).Average():F4}; saved to {run.Directory}");
        }));
        return command;
    }

    public static Command Probe()
    {
        var dir = new Argument<string>("run") { Description = "run folder written by pretrain" };
        var layer = new Option<string>("--layer") { Description = "encoder layer (0-based) or 'all'", DefaultValueFactory = _ => "all" };
        var dataset = new Option<string?>("--dataset") { Description = "probe on another data set of the same image shape" };
        var trainLimit = new Option<long?>("--train-limit") { Description = "training images for the probe", DefaultValueFactory = _ => 10_000 };
        var testLimit = new Option<long?>("--test-limit") { Description = "test images to score (default: all)" };
        var json = new Option<bool>("--json") { Description = "one JSON object per layer per line" };
        var device = DeviceOption();
        var command = new Command("probe", "Linear probe (BatchNorm without affine + linear, MAE's recipe) and kNN on frozen features")
            { dir, layer, dataset, trainLimit, testLimit, json, device };
        command.SetAction(r => Run(r.GetValue(device)!, () =>
        {
            var (config, model) = Pretraining.Load(r.GetValue(dir)!);
            int depth = model.Encoder.Depth;
            var layers = ParseLayers(r.GetValue(layer)!, depth);
            using var data = DatasetCatalog.Load(r.GetValue(dataset) ?? config.Dataset, r.GetValue(trainLimit), r.GetValue(testLimit));
            var clock = Stopwatch.StartNew();
            using var train = LayerFeatures.Extract(model.Encoder, data.Train, config.Normalization);
            using var test = LayerFeatures.Extract(model.Encoder, data.Test, config.Normalization);
            if (!r.GetValue(json)) Console.WriteLine($"{"layer",5} {"linear",8} {"kNN",8}   ({data.Train.Count} train / {data.Test.Count} test images, chance {1.0 / data.Train.ClassCount:P0})");
            LinearProbe.PerLayer(train, test, data.Train.ClassCount, layers, onResult: p =>
                Console.WriteLine(r.GetValue(json)
                    ? JsonSerializer.Serialize(new { layer = p.Layer, accuracy = Math.Round(p.Accuracy, 4), knn = p.KnnAccuracy is { } k ? Math.Round(k, 4) : (double?)null }, Line)
                    : $"{p.Layer,5} {p.Accuracy,8:P1} {p.KnnAccuracy,8:P1}"));
            if (!r.GetValue(json)) Console.WriteLine($"probed in {clock.Elapsed.TotalSeconds:F0} s");
        }));
        return command;
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
        var json = new Option<bool>("--json");
        var device = DeviceOption();
        var command = new Command("finetune", "Fine-tune the pre-trained encoder with a linear head; report test accuracy")
            { dir, blocks, epochs, trainLimit, lr, json, device };
        command.SetAction(r => Run(r.GetValue(device)!, () =>
        {
            var (config, model) = Pretraining.Load(r.GetValue(dir)!);
            var blockText = r.GetValue(blocks)!;
            int k = blockText == "all" ? int.MaxValue
                : int.TryParse(blockText, out var n) && n >= 0 && n <= model.Encoder.Depth ? n
                : throw new ResearchKitException($"--blocks: expected 'all' or 0–{model.Encoder.Depth}; got '{blockText}'");
            using var data = DatasetCatalog.Load(config.Dataset);
            using var progress = new TerminalProgress("finetune");
            var result = FineTuning.Run(model.Encoder, data, config.Normalization,
                new FineTuneConfig(r.GetValue(epochs), k, BaseLearningRate: r.GetValue(lr), TrainLimit: r.GetValue(trainLimit)), progress);
            Console.WriteLine(r.GetValue(json)
                ? JsonSerializer.Serialize(new { accuracy = Math.Round(result.Accuracy, 4), blocks = blockText, epochs = r.GetValue(epochs) }, Line)
                : $"fine-tuned ({blockText} blocks, {r.GetValue(epochs)} epochs): test accuracy {result.Accuracy:P2}");
        }));
        return command;
    }

    public static Command Data()
    {
        var name = new Argument<string>("name") { Description = "fashion-mnist, mnist, cifar10, shapes or image-folder:PATH" };
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

    public static Command Bench()
    {
        var method = new Option<string>("--method") { DefaultValueFactory = _ => "mae" };
        method.AcceptOnlyFromAmong(Pretraining.Methods);
        var preset = new Option<string>("--preset") { DefaultValueFactory = _ => "tiny" };
        preset.AcceptOnlyFromAmong(Pretraining.Presets);
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 256 };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 30 };
        var warmup = new Option<int>("--warmup") { DefaultValueFactory = _ => 5 };
        var imageSize = new Option<int>("--image-size") { DefaultValueFactory = _ => 28 };
        var channels = new Option<int>("--channels") { DefaultValueFactory = _ => 1 };
        var threads = new Option<int?>("--threads") { Description = "intra-op threads (default: libtorch's choice)" };
        var json = new Option<bool>("--json");
        var device = DeviceOption();
        var command = new Command("bench", "Time forward + backward + AdamW steps on random images; report images/s and peak memory")
            { method, preset, batch, steps, warmup, imageSize, channels, threads, json, device };
        command.SetAction(r => Run(r.GetValue(device)!, () =>
        {
            if (r.GetValue(threads) is { } t) set_num_threads(t);
            var result = Benchmark.Run(new PretrainOptions(r.GetValue(method)!, Preset: r.GetValue(preset)!, BatchSize: r.GetValue(batch)),
                r.GetValue(imageSize), r.GetValue(channels), r.GetValue(steps), r.GetValue(warmup));
            Console.WriteLine(r.GetValue(json)
                ? JsonSerializer.Serialize(result, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower })
                : $"{result.ImagesPerS:F0} images/s ({result.Steps} steps of {result.Batch}, median step {result.MedianStepMs:F0} ms), peak RSS {result.PeakRssMb:F0} MB, RSS {result.RssAfterWarmupMb:F0} → {result.RssEndMb:F0} MB, {result.Threads} threads");
        }));
        return command;
    }
}
