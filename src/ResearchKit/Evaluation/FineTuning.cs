using ResearchKit.Data;
using ResearchKit.Models;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Evaluation;

/// <summary>
/// Fine-tuning settings: the last <see cref="Blocks"/> encoder blocks plus a new head are trained
/// (int.MaxValue = all, MAE §4.3 partial fine-tuning). Defaults suit the tiny presets on a CPU.
/// </summary>
public sealed record FineTuneConfig(int Epochs = 5, int Blocks = int.MaxValue, int BatchSize = 128, double BaseLearningRate = 2e-3,
    double WeightDecay = 0.05, int Seed = 0, long? TrainLimit = null, Pooling Pooling = Pooling.Mean);

public sealed record FineTuneResult(double Accuracy, TrainResult Training);

public static class FineTuning
{
    /// <summary>Fine-tunes <paramref name="backbone"/> (modified in place) on the train split and returns test accuracy.</summary>
    public static FineTuneResult Run(VisionTransformer backbone, DatasetSplits data, Normalization normalization, FineTuneConfig config,
        IProgress<TrainProgress>? progress = null, CancellationToken cancel = default)
    {
        torch.manual_seed(config.Seed);
        var classifier = new ViTClassifier(backbone, data.Train.ClassCount, config.Pooling).to(Compute.Device);
        backbone.FreezeAllBut(config.Blocks);
        var train = data.Train.Take(config.TrainLimit);
        var loader = new DataLoader(train, Math.Min(config.BatchSize, (int)train.Count), normalization, shuffle: true, seed: config.Seed);
        var trainConfig = new TrainConfig(config.Epochs, config.BatchSize, config.BaseLearningRate, config.WeightDecay, Beta2: 0.999, Seed: config.Seed);
        var result = new Trainer(classifier, trainConfig).Fit(loader,
            (batch, _) => nn.functional.cross_entropy(classifier.call(batch.Images), batch.Labels), progress, cancel);
        data.Train.DisposeIfCopy(train);
        return new FineTuneResult(Accuracy(classifier, data.Test, normalization), result);
    }

    /// <summary>Top-1 accuracy of a classifier on a split, in 0..1.</summary>
    public static double Accuracy(nn.Module<Tensor, Tensor> classifier, ImageDataset test, Normalization normalization, int batchSize = 512)
    {
        classifier.eval();
        long correct = 0;
        using (no_grad())
            foreach (var indices in DataLoader.Sequential(test.Count, batchSize))
            {
                using var scope = NewDisposeScope();
                var index = tensor(indices.Indices);
                var logits = classifier.call(normalization.Apply(test.Images.index_select(0, index), Compute.Device));
                correct += logits.argmax(1).eq(test.Labels.index_select(0, index).to(Compute.Device)).sum().item<long>();
            }
        return (double)correct / test.Count;
    }
}
