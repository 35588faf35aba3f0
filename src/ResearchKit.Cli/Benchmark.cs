using System.Diagnostics;
using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Runs;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Cli;

/// <summary>The step beside one busy process: with the thread count fixed, and with <see cref="ThreadPolicy"/> choosing it.</summary>
sealed record ContendedResult(int FixedThreads, double FixedThreadsImagesPerS, int AdaptiveThreads, double AdaptiveImagesPerS);

/// <summary>Machine-readable result of `researchkit bench`.</summary>
sealed record BenchResult(string Method, string Preset, int Batch, int Steps, int Threads, long Parameters, string Device,
    double ImagesPerS, double MedianStepMs, double PeakRssMb, double RssAfterWarmupMb, double RssEndMb, double[] RssTraceMb, string Torch,
    ContendedResult? Contended = null);

/// <summary>
/// Times a method's training step — every update phase's forward, backward and optimizer step, as the trainer runs
/// them — on random images and labels. The PyTorch reference script (bench/) times the same MAE step.
/// </summary>
static class Benchmark
{
    public static BenchResult Run(MethodInfo method, MethodConfig preset, string presetName, int batchSize, int imageSize, int channels, int steps, int warmup, bool contention)
    {
        var config = preset.ForInput(imageSize, channels);
        config.Validate();
        var model = Pretraining.Build(config, seed: 0);
        model.Module.train();
        var phases = model.Phases();
        var optimizers = phases.Select(p => p.CreateOptimizer(config.Optimizer, batchSize)).ToArray();
        var batch = new Batch(randn(new long[] { batchSize, channels, imageSize, imageSize }, device: Compute.Device).DetachFromDisposeScope(),
            randint(0, 10, new long[] { batchSize }, device: Compute.Device).DetachFromDisposeScope());
        using var generator = new Generator(0);

        double Step()
        {
            var clock = Stopwatch.StartNew();
            using var scope = NewDisposeScope();
            for (int i = 0; i < phases.Count; i++)
            {
                var loss = phases[i].Loss(batch, generator);
                optimizers[i].zero_grad();
                loss.backward();
                optimizers[i].step();
                loss.item<float>();   // synchronise
            }
            return clock.Elapsed.TotalMilliseconds;
        }
        double ImagesPerSecond(List<double> times) => Math.Round(batchSize / (times.Average() / 1000), 1);

        var times = new List<double>();
        double rssAfterWarmup = 0;
        var trace = new List<double>();   // RSS after warmup and at each quarter of the timed steps: flat memory shows here
        for (int i = 0; i < warmup + steps; i++)
        {
            if (i == warmup) rssAfterWarmup = ResidentMb("VmRSS");
            if (i >= warmup && (i - warmup) % Math.Max(1, steps / 4) == 0) trace.Add(ResidentMb("VmRSS"));
            double ms = Step();
            if (i >= warmup) times.Add(ms);
        }
        int threads = get_num_threads();
        ContendedResult? contended = null;
        if (contention)
        {
            // One single-threaded busy process beside us, as a second notebook, build or test run would be.
            using var busy = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", "while :; do :; done"])) ?? throw new ResearchKitException("could not start a busy process for --contention");
            try
            {
                Thread.Sleep(300);
                var fixedTimes = Enumerable.Range(0, steps).Select(_ => Step()).ToList();
                int adaptive = new ThreadPolicy(adaptive: true).Choose();
                Step();   // first step at the new thread count
                var adaptiveTimes = Enumerable.Range(0, steps).Select(_ => Step()).ToList();
                contended = new ContendedResult(threads, ImagesPerSecond(fixedTimes), adaptive, ImagesPerSecond(adaptiveTimes));
            }
            finally
            {
                busy.Kill();
                set_num_threads(threads);
            }
        }
        var sorted = times.Order().ToList();
        return new BenchResult(method.Name, presetName, batchSize, steps, threads,
            model.Module.parameters().Sum(p => p.numel()), Compute.Device.ToString(),
            ImagesPerSecond(times), Math.Round(sorted[sorted.Count / 2], 1),
            ResidentMb("VmHWM"), rssAfterWarmup, ResidentMb("VmRSS"), [.. trace, ResidentMb("VmRSS")], "libtorch " + __version__, contended);
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
