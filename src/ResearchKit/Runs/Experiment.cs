using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Methods;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Runs;

/// <summary>
/// How a pre-trained backbone is measured in the ablation notebooks: a linear probe and kNN on every layer (fit
/// on <see cref="ProbeTrain"/> training images, scored on <see cref="ProbeTest"/> test images), the method's
/// pretext metrics on <see cref="PretextImages"/> test images, then fine-tuning (<see cref="FineTuneBlocks"/> last
/// blocks, all by default) on <see cref="FineTuneTrain"/> images. FineTuneEpochs = 0 skips fine-tuning.
/// </summary>
public sealed record EvaluationOptions(long ProbeTrain = 10_000, long ProbeTest = 10_000, int FineTuneEpochs = 2,
    long FineTuneTrain = 10_000, int FineTuneBlocks = int.MaxValue, int PretextImages = 256);

/// <summary>One point of an ablation: any method's configuration, pre-training options, evaluation. Pretrain.Epochs = 0 measures the untrained network (the floors).</summary>
public sealed record Experiment(MethodConfig Method, PretrainOptions Pretrain, EvaluationOptions Evaluation);

/// <summary>What one ablation point measured (accuracies in 0..1; FineTune is NaN when skipped).</summary>
public sealed record ExperimentResult(
    double[] ProbeByLayer, double[] KnnByLayer, int BestLayer, double BestProbe, double FineTune,
    double FinalLoss, Dictionary<string, double> Pretext, double PretrainSeconds, double EvaluationSeconds);

/// <summary>Floor: a linear probe on standardised raw pixels, with the same protocol as the layer probes.</summary>
public sealed record RawPixelFloor(string Dataset, long ProbeTrain, long ProbeTest);

/// <summary>Runs experiments end to end in a work folder (pre-training resumes from it) and reads their run folders.</summary>
public static class Experiments
{
    /// <summary>The pre-training run folder inside an experiment's work folder.</summary>
    public static string PretrainFolder(string workFolder) => Path.Combine(workFolder, "pretrain");

    public static ExperimentResult Run(Experiment experiment, string workFolder, IProgress<TrainProgress>? progress = null, Action<string>? status = null,
        CancellationToken cancel = default)
    {
        var (method, p, e) = experiment;
        long trainNeeded = Math.Max(p.TrainLimit ?? long.MaxValue, Math.Max(e.ProbeTrain, e.FineTuneTrain));
        using var data = DatasetCatalog.Load(p.Dataset, trainNeeded == long.MaxValue ? null : trainNeeded, Math.Max(e.ProbeTest, e.PretextImages));
        var clock = System.Diagnostics.Stopwatch.StartNew();

        IPretrainModel model;
        Normalization normalization;
        double finalLoss = double.NaN;
        if (p.Epochs > 0)
        {
            status?.Invoke($"pre-training {MethodRegistry.Of(method).Name}, {p.Epochs} epochs");
            var pretrainSplit = data.Train.Take(p.TrainLimit);
            var run = Pretraining.Run(method, p, pretrainSplit, PretrainFolder(workFolder), progress, cancel);
            data.Train.DisposeIfCopy(pretrainSplit);
            model = run.Model;
            normalization = run.Config.Normalization;
            finalLoss = run.Result.Losses.TakeLast(Math.Min(20, run.Result.Losses.Count)).Average();
        }
        else
        {
            var sized = method.ForInput(data.Train.Height, data.Train.Channels);
            sized.Validate();
            model = Pretraining.Build(sized, p.Seed);
            var split = data.Train.Take(p.TrainLimit);
            normalization = Normalization.Of(split);
            data.Train.DisposeIfCopy(split);
        }
        double pretrainSeconds = clock.Elapsed.TotalSeconds;
        clock.Restart();
        model.Module.eval();

        status?.Invoke("probing every layer");
        var probeTrain = data.Train.Take(e.ProbeTrain);
        using var trainFeatures = LayerFeatures.Extract(model.Backbone, probeTrain, normalization);
        data.Train.DisposeIfCopy(probeTrain);
        var probeTest = data.Test.Take(e.ProbeTest);
        using var testFeatures = LayerFeatures.Extract(model.Backbone, probeTest, normalization);
        data.Test.DisposeIfCopy(probeTest);
        var probes = LinearProbe.PerLayer(trainFeatures, testFeatures, data.Train.ClassCount);

        Dictionary<string, double> pretext;
        using (var scope = NewDisposeScope())
        using (no_grad())
        using (var generator = new Generator((ulong)p.Seed))
        {
            var images = normalization.Apply(data.Test.Images[..(int)Math.Min(e.PretextImages, data.Test.Count)], Compute.Device);
            pretext = model.PretextMetrics(images, normalization, generator).ToDictionary(kv => kv.Key, kv => Math.Round(kv.Value, 4));
        }

        double fineTune = double.NaN;
        if (e.FineTuneEpochs > 0)
        {
            status?.Invoke("fine-tuning");
            fineTune = FineTuning.Run(model.Backbone, data, normalization,
                new FineTuneConfig(e.FineTuneEpochs, e.FineTuneBlocks, Seed: p.Seed, TrainLimit: e.FineTuneTrain), progress, cancel).Accuracy;
        }

        model.Module.Dispose();   // free its native memory now, not whenever finalizers run: a sweep builds many models
        int best = probes.MaxBy(r => r.Accuracy)!.Layer;
        return new ExperimentResult(
            probes.Select(r => Math.Round(r.Accuracy, 4)).ToArray(), probes.Select(r => Math.Round(r.KnnAccuracy ?? double.NaN, 4)).ToArray(),
            best, Math.Round(probes[best].Accuracy, 4), Math.Round(fineTune, 4), Math.Round(finalLoss, 4), pretext,
            Math.Round(pretrainSeconds, 1), Math.Round(clock.Elapsed.TotalSeconds, 1));
    }

    /// <summary>Test accuracy (0..1) of a linear probe on raw pixels, standardised per pixel: the floor a learned feature must beat.</summary>
    public static double RawPixelProbe(RawPixelFloor floor)
    {
        using var data = DatasetCatalog.Load(floor.Dataset, floor.ProbeTrain, floor.ProbeTest);
        using var scope = NewDisposeScope();
        var normalization = Normalization.Of(data.Train);
        Tensor Flat(ImageDataset split) => normalization.Apply(split.Images, CPU).flatten(1);
        return Math.Round(LinearProbe.Fit(Flat(data.Train), data.Train.Labels, Flat(data.Test), data.Test.Labels, data.Train.ClassCount), 4);
    }

    /// <summary>Reloads the pre-trained model of an experiment's work folder.</summary>
    public static (RunConfig Config, IPretrainModel Model) Load(string workFolder) => Pretraining.Load(PretrainFolder(workFolder));

    /// <summary>The logged pre-training steps of an experiment's work folder.</summary>
    public static List<StepMetrics> Metrics(string workFolder) => Trainer.ReadMetrics(PretrainFolder(workFolder));
}
