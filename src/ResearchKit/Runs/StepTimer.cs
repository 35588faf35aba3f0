using System.Diagnostics;
using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ResearchKit.Runs;

/// <summary>Timing of a training step: the median and mean over the timed steps, and the throughput the mean gives.</summary>
public sealed record StepTiming(int Steps, double MedianMs, double MeanMs, double ImagesPerSecond);

/// <summary>
/// Times a method's training step — every update phase's forward, backward and optimizer step, as the trainer runs
/// them — on one fixed batch of random images and labels, so data loading is not timed. Used by `researchkit bench`
/// and by the efficiency measurements (<see cref="MaeEfficiency"/>).
/// </summary>
public sealed class StepTimer : IDisposable
{
    public IPretrainModel Model { get; }
    public int BatchSize { get; }
    readonly IReadOnlyList<UpdatePhase> phases;
    readonly OptimizerHelper[] optimizers;
    readonly Batch batch;
    readonly Generator generator = new(0);

    /// <param name="config">A configuration already sized for the images (<see cref="MethodConfig.ForInput"/>).</param>
    public StepTimer(MethodConfig config, int batchSize, int imageSize, int channels, int seed = 0)
    {
        config.Validate();
        BatchSize = batchSize;
        Model = Pretraining.Build(config, seed);
        Model.Module.train();
        phases = Model.Phases();
        optimizers = phases.Select(p => p.CreateOptimizer(config.Optimizer, batchSize)).ToArray();
        batch = new Batch(randn(new long[] { batchSize, channels, imageSize, imageSize }, device: Compute.Device).DetachFromDisposeScope(),
            randint(0, 10, new long[] { batchSize }, device: Compute.Device).DetachFromDisposeScope());
    }

    /// <summary>One training step; returns its wall time in milliseconds.</summary>
    public double Step() => Time(TrainingStep);

    /// <summary>Runs <paramref name="warmup"/> untimed training steps, then times <paramref name="steps"/>; <paramref name="beforeStep"/> sees the index of each timed step first.</summary>
    public StepTiming Measure(int steps, int warmup, Action<int>? beforeStep = null) => Measure(TrainingStep, steps, warmup, beforeStep);

    /// <summary>
    /// Times part of a step instead of all of it (<see cref="MaeEfficiency"/> times the encoder alone): <paramref name="work"/>
    /// gets the fixed batch and the timer's generator, runs in a dispose scope of its own, and must end by reading a value
    /// back (<c>item</c>) so that queued device work is counted.
    /// </summary>
    public StepTiming Measure(Action<Batch, Generator> work, int steps, int warmup, Action<int>? beforeStep = null)
    {
        if (steps < 1) throw new ResearchKitException($"timing needs at least one step; got {steps}");
        for (int i = 0; i < warmup; i++) Time(work);
        var times = new List<double>();
        for (int i = 0; i < steps; i++)
        {
            beforeStep?.Invoke(i);
            times.Add(Time(work));
        }
        return Summarise(times);
    }

    double Time(Action<Batch, Generator> work)
    {
        var clock = Stopwatch.StartNew();
        using var scope = NewDisposeScope();
        work(batch, generator);
        return clock.Elapsed.TotalMilliseconds;
    }

    void TrainingStep(Batch batch, Generator generator)
    {
        for (int i = 0; i < phases.Count; i++)
        {
            var loss = phases[i].Loss(batch, generator);
            optimizers[i].zero_grad();
            loss.backward();
            optimizers[i].step();
            loss.item<float>();   // synchronise
        }
    }

    /// <summary>Median, mean and throughput of step times in milliseconds.</summary>
    public StepTiming Summarise(IReadOnlyList<double> times)
    {
        var sorted = times.Order().ToList();
        double mean = times.Average();
        return new StepTiming(times.Count, Math.Round(sorted[sorted.Count / 2], 1), Math.Round(mean, 1), Math.Round(BatchSize / (mean / 1000), 1));
    }

    public void Dispose()
    {
        generator.Dispose();
        batch.Images.Dispose();
        batch.Labels.Dispose();
        Model.Module.Dispose();
    }
}
