using ResearchKit.Data;
using ResearchKit.Models;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Evaluation;

/// <summary>
/// Fine-tuning settings: the last <see cref="Blocks"/> backbone blocks plus a new linear head are trained
/// (int.MaxValue = all; MAE §4.3 partial fine-tuning). AdamW β = (0.9, 0.999), as MAE's fine-tuning recipe
/// (Appendix A.1, Table 9). Defaults suit the tiny presets on a CPU.
/// </summary>
public sealed record FineTuneConfig(int Epochs = 5, int Blocks = int.MaxValue, int BatchSize = 128, double BaseLearningRate = 2e-3,
    double WeightDecay = 0.05, int Seed = 0, long? TrainLimit = null);

/// <summary>
/// The loss fine-tuning minimises for a batch of normalised images and their labels. Plain cross-entropy on the
/// classifier's logits (<see cref="FineTuning.CrossEntropy"/>) unless a method provides another
/// (<see cref="Methods.MethodInfo.FineTuneObjectives"/>: iGPT keeps its generative loss, §3.5).
/// </summary>
public delegate Tensor FineTuneLoss(Classifier classifier, Tensor images, Tensor labels);

/// <param name="TrainableParameters">Parameters fine-tuning updated: the unfrozen blocks and the new head.</param>
public sealed record FineTuneResult(double Accuracy, TrainResult Training, long TrainableParameters);

public static class FineTuning
{
    /// <summary>The default objective: cross-entropy of the classifier's logits.</summary>
    public static readonly FineTuneLoss CrossEntropy = (classifier, images, labels) => nn.functional.cross_entropy(classifier.call(images), labels);

    /// <summary>Fine-tunes <paramref name="backbone"/> (modified in place) on the train split with <paramref name="loss"/>
    /// (null: <see cref="CrossEntropy"/>) and returns test accuracy.</summary>
    public static FineTuneResult Run(Backbone backbone, DatasetSplits data, Normalization normalization, FineTuneConfig config,
        IProgress<TrainProgress>? progress = null, CancellationToken cancel = default, FineTuneLoss? loss = null)
    {
        loss ??= CrossEntropy;
        torch.manual_seed(config.Seed);
        var classifier = Compute.Build(() => new Classifier(backbone, data.Train.ClassCount));
        backbone.FreezeAllBut(config.Blocks);
        long trainable = classifier.parameters().Where(p => p.requires_grad).Sum(p => p.numel());
        var train = data.Train.Take(config.TrainLimit);
        var loader = new DataLoader(train, Math.Min(config.BatchSize, (int)train.Count), normalization, shuffle: true, seed: config.Seed);
        var optimizer = new OptimizerConfig(BaseLearningRate: config.BaseLearningRate, WeightDecay: config.WeightDecay, Beta2: 0.999);
        var trainConfig = new TrainConfig(config.Epochs, config.BatchSize, optimizer, Seed: config.Seed);
        // Exempt the backbone's own no-weight-decay parameters (e.g. the ViT's [CLS] token), as MAE's fine-tuning does.
        var exempt = backbone.NoWeightDecay.Select(n => "backbone." + n).ToHashSet();
        var result = new Trainer(trainConfig).Fit(loader,
            new SingleLoss(classifier, (batch, _) => loss(classifier, batch.Images, batch.Labels), exempt.Contains), progress, cancel);
        PreciseBatchNorm.Recompute(classifier, loader);
        data.Train.DisposeIfCopy(train);
        return new FineTuneResult(Accuracy(classifier, data.Test, normalization), result, trainable);
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
                var (images, labels) = test.On(Compute.Device);
                long start = indices.Indices[0], count = indices.Indices.Length;   // batches are contiguous ranges
                var logits = classifier.call(normalization.Apply(images.narrow(0, start, count), Compute.Device));
                correct += logits.argmax(1).eq(labels.narrow(0, start, count)).sum().item<long>();
            }
        return (double)correct / test.Count;
    }
}

/// <summary>
/// "Precise BatchNorm" (Wu &amp; Johnson, 2021, "Rethinking 'Batch' in BatchNorm", §3): after training, recompute every
/// trainable BatchNorm's running statistics as a plain average over training batches with the weights fixed. An
/// exponential average still remembers its initial (0, 1) after the few dozen steps of a CPU-scale fine-tune, and
/// the mismatch shifts every test logit alike — measured: 16 fine-tuning steps of the tiny CNN scored chance (10%)
/// in eval mode, 48 steps 59%. BatchNorms that are in eval mode while the model trains (frozen blocks) keep theirs.
/// </summary>
public static class PreciseBatchNorm
{
    public static void Recompute(nn.Module<Tensor, Tensor> model, DataLoader loader, int maxBatches = 50)
    {
        model.train();
        var norms = model.modules().OfType<TorchSharp.Modules.BatchNorm>().Where(m => m.training).ToList();
        if (norms.Count > 0)
        {
            foreach (var norm in norms) norm.reset_running_stats();
            using (no_grad())
            {
                int k = 0;
                foreach (var indices in loader.Epoch(0).Take(maxBatches))
                {
                    using var scope = NewDisposeScope();
                    foreach (var norm in norms) norm.momentum = 1.0 / (k + 1);   // running = mean of the k + 1 batch statistics so far
                    model.call(loader.Load(indices).Images);
                    k++;
                }
            }
            foreach (var norm in norms) norm.momentum = 0.1;
        }
        model.eval();
    }
}
