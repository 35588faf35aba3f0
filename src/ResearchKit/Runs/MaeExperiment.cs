using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Models;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Runs;

/// <summary>
/// How a pre-trained encoder is measured in the ablation notebooks: a linear probe and kNN on every
/// layer (fit on <see cref="ProbeTrain"/> training images, scored on <see cref="ProbeTest"/> test images),
/// then fine-tuning (<see cref="FineTuneBlocks"/> last blocks, all by default) on <see cref="FineTuneTrain"/>.
/// </summary>
public sealed record EvaluationOptions(long ProbeTrain = 10_000, long ProbeTest = 10_000, int FineTuneEpochs = 2,
    long FineTuneTrain = 10_000, int FineTuneBlocks = int.MaxValue, int ReconstructionImages = 256);

/// <summary>One point of an MAE ablation. Pretrain.Epochs = 0 measures the untrained network (the floors).</summary>
public sealed record MaeExperiment(PretrainOptions Pretrain, EvaluationOptions Evaluation);

/// <summary>What one MAE ablation point measured (accuracies in 0..1).</summary>
public sealed record MaeExperimentResult(
    double[] ProbeByLayer, double[] KnnByLayer, int BestLayer, double BestProbe, double FineTune,
    double FinalLoss, double ReconstructionPsnr, double PretrainSeconds, double EvaluationSeconds);

/// <summary>Runs one <see cref="MaeExperiment"/> end to end in a work folder (pre-training resumes from it).</summary>
public static class MaeExperiments
{
    public static MaeExperimentResult Run(MaeExperiment experiment, string directory, IProgress<TrainProgress>? progress = null, Action<string>? status = null)
    {
        var p = experiment.Pretrain;
        var e = experiment.Evaluation;
        long trainNeeded = Math.Max(p.TrainLimit ?? long.MaxValue, Math.Max(e.ProbeTrain, e.FineTuneTrain));
        using var data = DatasetCatalog.Load(p.Dataset, trainNeeded == long.MaxValue ? null : trainNeeded, e.ProbeTest);
        var clock = System.Diagnostics.Stopwatch.StartNew();

        MaskedAutoencoder model;
        Normalization normalization;
        double finalLoss = double.NaN;
        if (p.Epochs > 0)
        {
            status?.Invoke($"pre-training mask ratio {p.MaskRatio ?? 0.75:0.##}, {p.Epochs} epochs");
            var pretrainSplit = data.Train.Take(p.TrainLimit);
            var run = Pretraining.Run(p, pretrainSplit, Path.Combine(directory, "pretrain"), progress);
            data.Train.DisposeIfCopy(pretrainSplit);
            model = run.Model;
            normalization = run.Config.Normalization;
            finalLoss = run.Result.Losses.TakeLast(Math.Min(20, run.Result.Losses.Count)).Average();
        }
        else
        {
            Compute.Seed(p.Seed);
            model = new MaskedAutoencoder(Pretraining.ModelConfig(p, data.Train.Height, data.Train.Channels)).to(Compute.Device);
            normalization = Normalization.Of(data.Train);
        }
        double pretrainSeconds = clock.Elapsed.TotalSeconds;
        clock.Restart();
        model.eval();

        status?.Invoke("probing every layer");
        var probeTrain = data.Train.Take(e.ProbeTrain);
        using var trainFeatures = LayerFeatures.Extract(model.Encoder, probeTrain, normalization);
        data.Train.DisposeIfCopy(probeTrain);
        using var testFeatures = LayerFeatures.Extract(model.Encoder, data.Test, normalization);
        var probes = LinearProbe.PerLayer(trainFeatures, testFeatures, data.Train.ClassCount);

        double psnr = ReconstructionPsnr(model, data.Test, normalization, e.ReconstructionImages, p.Seed);

        status?.Invoke("fine-tuning");
        var fineTune = FineTuning.Run(model.Encoder, data, normalization,
            new FineTuneConfig(e.FineTuneEpochs, e.FineTuneBlocks, Seed: p.Seed, TrainLimit: e.FineTuneTrain), progress);

        int best = probes.MaxBy(r => r.Accuracy)!.Layer;
        return new MaeExperimentResult(
            probes.Select(r => Math.Round(r.Accuracy, 4)).ToArray(), probes.Select(r => Math.Round(r.KnnAccuracy ?? double.NaN, 4)).ToArray(),
            best, Math.Round(probes[best].Accuracy, 4), Math.Round(fineTune.Accuracy, 4), Math.Round(finalLoss, 4),
            Math.Round(psnr, 2), Math.Round(pretrainSeconds, 1), Math.Round(clock.Elapsed.TotalSeconds, 1));
    }

    /// <summary>PSNR (dB) of the reconstruction on removed pixels only, in pixel space [0, 1].</summary>
    public static double ReconstructionPsnr(MaskedAutoencoder model, ImageDataset test, Normalization normalization, int count, int seed)
    {
        using var scope = NewDisposeScope();
        var images = normalization.Apply(test.Images[..(int)Math.Min(count, test.Count)], Compute.Device);
        using var generator = new Generator((ulong)seed);
        var (_, reconstruction, _, removed) = model.Reconstruct(images, generator);
        double mse = Reconstruction.Mse(normalization.Invert(reconstruction), normalization.Invert(images), removed);
        return Reconstruction.Psnr(mse);
    }
}
