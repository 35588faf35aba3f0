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
/// <param name="DeviceMemoryMb">CUDA memory in use after the timed steps (context and libtorch's cache included); null on the CPU.</param>
sealed record BenchResult(string Method, string Preset, int Batch, int Steps, int Threads, long Parameters, string Device, string Precision,
    double ImagesPerS, double MedianStepMs, double MeanStepMs, double PeakRssMb, double RssAfterWarmupMb, double RssEndMb, double[] RssTraceMb,
    double? DeviceMemoryMb, string Torch, ContendedResult? Contended = null);

/// <summary>
/// Times a method's training step (<see cref="StepTimer"/>) on random images and labels, with memory. The PyTorch
/// reference script (bench/) times the same MAE step.
/// </summary>
static class Benchmark
{
    public static BenchResult Run(MethodInfo method, MethodConfig preset, string presetName, int batchSize, int imageSize, int channels, int steps, int warmup, bool contention)
    {
        var config = preset.ForInput(imageSize, channels);
        using var timer = new StepTimer(config, batchSize, imageSize, channels);
        double rssAfterWarmup = 0;
        var trace = new List<double>();   // RSS after warmup and at each quarter of the timed steps: flat memory shows here
        var timing = timer.Measure(steps, warmup, i =>
        {
            if (i == 0) rssAfterWarmup = ResidentMb("VmRSS");
            if (i % Math.Max(1, steps / 4) == 0) trace.Add(ResidentMb("VmRSS"));
        });
        int threads = get_num_threads();
        ContendedResult? contended = null;
        if (contention)
        {
            // One single-threaded busy process beside us, as a second notebook, build or test run would be.
            using var busy = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", "while :; do :; done"])) ?? throw new ResearchKitException("could not start a busy process for --contention");
            try
            {
                Thread.Sleep(300);
                var fixedThreads = timer.Measure(steps, 0);
                int adaptive = new ThreadPolicy(adaptive: true).Choose();
                var adaptiveThreads = timer.Measure(steps, 1);   // one untimed step at the new thread count
                contended = new ContendedResult(threads, fixedThreads.ImagesPerSecond, adaptive, adaptiveThreads.ImagesPerSecond);
            }
            finally
            {
                busy.Kill();
                ThreadPolicy.Set(threads);
            }
        }
        return new BenchResult(method.Name, presetName, batchSize, steps, threads,
            timer.Model.Module.parameters().Sum(p => p.numel()), Compute.Device.ToString(), EnumNames.Of(Compute.Precision),
            timing.ImagesPerSecond, timing.MedianMs, timing.MeanMs,
            ResidentMb("VmHWM"), rssAfterWarmup, ResidentMb("VmRSS"), [.. trace, ResidentMb("VmRSS")], Compute.DeviceMemoryInUseMb(),
            "libtorch " + __version__, contended);
    }

    /// <summary>A /proc/self/status memory field in MB (Linux); 0 elsewhere.</summary>
    static double ResidentMb(string field)
    {
        const string status = "/proc/self/status";
        return File.Exists(status) ? StatusFieldMb(File.ReadLines(status), field) : 0;
    }

    /// <summary>
    /// A "Field:&lt;tab&gt;   1234 kB" line's value in MB. The kernel pads the number to 8 columns with spaces after the tab,
    /// so from 10 GB up ("VmRSS:	10485760 kB") only the tab separates it: split on any whitespace.
    /// </summary>
    internal static double StatusFieldMb(IEnumerable<string> lines, string field)
    {
        var line = lines.FirstOrDefault(l => l.StartsWith(field + ":"));
        var parts = line?.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        return parts is [_, var kb, "kB"] && long.TryParse(kb, out long value) ? Math.Round(value / 1024.0, 1) : 0;
    }
}
