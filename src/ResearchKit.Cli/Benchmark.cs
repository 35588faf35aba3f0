using System.Diagnostics;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Cli;

/// <summary>Machine-readable result of `researchkit bench`.</summary>
sealed record BenchResult(string Method, string Preset, int Batch, int Steps, int Threads, long Parameters, string Device,
    double ImagesPerS, double MedianStepMs, double PeakRssMb, double RssAfterWarmupMb, double RssEndMb, double[] RssTraceMb, string Torch);

/// <summary>Times the pre-training step (forward + backward + AdamW) on random images, as the PyTorch reference script does.</summary>
static class Benchmark
{
    public static BenchResult Run(PretrainOptions options, int imageSize, int channels, int steps, int warmup)
    {
        Compute.Seed(0);
        var config = Pretraining.ModelConfig(options, imageSize, channels);
        var model = new MaskedAutoencoder(config).to(Compute.Device);
        var optimizer = optim.AdamW(model.parameters(), 1e-3, 0.9, 0.95, weight_decay: 0.05);
        var images = randn(new long[] { options.BatchSize, channels, imageSize, imageSize }, device: Compute.Device).DetachFromDisposeScope();
        using var generator = new Generator(0);
        model.train();
        var times = new List<double>();
        double rssAfterWarmup = 0;
        var trace = new List<double>();   // RSS after warmup and at each quarter of the timed steps: flat memory shows here
        for (int i = 0; i < warmup + steps; i++)
        {
            if (i == warmup) rssAfterWarmup = ResidentMb("VmRSS");
            if (i >= warmup && (i - warmup) % Math.Max(1, steps / 4) == 0) trace.Add(ResidentMb("VmRSS"));
            var clock = Stopwatch.StartNew();
            using (var scope = NewDisposeScope())
            {
                var loss = model.call(images, generator).Loss;
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                loss.item<float>();   // synchronise
            }
            if (i >= warmup) times.Add(clock.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        double median = times[times.Count / 2];
        return new BenchResult(options.Method, options.Preset, options.BatchSize, steps, get_num_threads(),
            model.parameters().Sum(p => p.numel()), Compute.Device.ToString(),
            Math.Round(options.BatchSize / (times.Sum() / times.Count / 1000), 1), Math.Round(median, 1),
            ResidentMb("VmHWM"), rssAfterWarmup, ResidentMb("VmRSS"), [.. trace, ResidentMb("VmRSS")], "libtorch " + __version__);
    }

    /// <summary>A /proc/self/status memory field in MB (Linux); 0 elsewhere.</summary>
    static double ResidentMb(string field)
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return 0;
        var line = File.ReadLines(status).FirstOrDefault(l => l.StartsWith(field + ":"));
        return line is null ? 0 : Math.Round(long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0, 1);
    }
}
