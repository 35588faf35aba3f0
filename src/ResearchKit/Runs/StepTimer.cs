using System.Diagnostics;
using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ResearchKit.Runs;

/// <summary>Timing of a training step: the median over timed windows of the mean step time, the overall mean, and the throughput the mean gives.</summary>
public sealed record StepTiming(int Steps, double MedianMs, double MeanMs, double ImagesPerSecond);

/// <summary>
/// Times a method's training step — every update phase's forward, backward and optimizer step, as the trainer runs
/// them — on one fixed batch of random images and labels, so data loading is not timed. Steps run back to back as in
/// training, with no read-back inside a step; the device is synchronised only at the end of each of up to five timing
/// windows, so on a GPU the host's launch work overlaps the device's. Used by `researchkit bench` and by the efficiency
/// measurements a method offers as a study (MAE's efficiency study).
/// </summary>
public sealed class StepTimer : IDisposable
{
    public IPretrainModel Model { get; }
    public int BatchSize { get; }
    readonly IReadOnlyList<UpdatePhase> phases;
    readonly FlatOptimizer[] optimizers;
    readonly Batch batch;
    readonly Generator generator = new(0);

    /// <param name="config">A configuration already sized for the images (<see cref="MethodConfig.ForInput"/>).</param>
    public StepTimer(MethodConfig config, int batchSize, int imageSize, int channels, int seed = 0)
    {
        config.Validate();
        if (config.Size() is { } size)   // the random batch too: --image-size 100000 is images the machine cannot hold
            MemoryBudget.Check(size + new ModelSize(0, (double)channels * imageSize * imageSize), batchSize, MethodRegistry.Of(config).Name,
                "choose a smaller --batch, --image-size or model");
        BatchSize = batchSize;
        Model = Pretraining.Build(config, seed);
        Model.Module.train();
        phases = Model.Phases();
        optimizers = phases.Select(p => p.CreateOptimizer(config.Optimizer, batchSize)).ToArray();
        using var host = new Generator((ulong)seed);
        batch = new Batch(Draws.Normal(host, [batchSize, channels, imageSize, imageSize], Compute.Device).DetachFromDisposeScope(),
            Draws.Integers(host, 0, 10, [batchSize], Compute.Device).DetachFromDisposeScope());
    }

    /// <summary>Runs <paramref name="warmup"/> untimed training steps, then times <paramref name="steps"/>; <paramref name="beforeStep"/> sees the index of each timed step first.</summary>
    public StepTiming Measure(int steps, int warmup, Action<int>? beforeStep = null) => Measure(TrainingStep, steps, warmup, beforeStep);

    /// <summary>
    /// Times part of a step instead of all of it (MAE's efficiency study times the encoder alone): <paramref name="work"/>
    /// gets the fixed batch and the timer's generator and runs in a dispose scope of its own.
    /// </summary>
    public StepTiming Measure(Action<Batch, Generator> work, int steps, int warmup, Action<int>? beforeStep = null)
    {
        if (steps < 1) throw new ResearchKitException($"timing needs at least one step; got {steps}");
        for (int i = 0; i < warmup; i++) Run(work);
        Synchronize();
        int windows = Math.Min(steps, 5), done = 0;
        var means = new List<double>();
        double totalMs = 0;
        for (int w = 0; w < windows; w++)
        {
            int count = steps * (w + 1) / windows - steps * w / windows;
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < count; i++)
            {
                beforeStep?.Invoke(done++);
                Run(work);
            }
            Synchronize();
            double ms = clock.Elapsed.TotalMilliseconds;
            means.Add(ms / count);
            totalMs += ms;
        }
        means.Sort();
        double mean = totalMs / steps;
        return new StepTiming(steps, Math.Round(means[means.Count / 2], 2), Math.Round(mean, 2), Math.Round(BatchSize / (mean / 1000), 1));
    }

    void Run(Action<Batch, Generator> work)
    {
        using var scope = NewDisposeScope();
        work(batch, generator);
    }

    /// <summary>Waits for the device's queued work (nothing to wait for on the CPU).</summary>
    static void Synchronize()
    {
        if (Compute.OnCuda) cuda.synchronize(Compute.Device);
    }

    /// <summary>Zeroes the gradients of every phase's parameters.</summary>
    public void ZeroGrad()
    {
        foreach (var optimizer in optimizers) optimizer.ZeroGrad();
    }

    void TrainingStep(Batch batch, Generator generator)
    {
        for (int i = 0; i < phases.Count; i++)
        {
            var loss = phases[i].Loss(batch, generator);
            optimizers[i].ZeroGrad();
            loss.backward();
            optimizers[i].Step();
        }
    }

    public void Dispose()
    {
        generator.Dispose();
        foreach (var optimizer in optimizers) optimizer.Dispose();
        batch.Images.Dispose();
        batch.Labels.Dispose();
        Model.Module.Dispose();
    }
}
