using ResearchKit.Data;
using ResearchKit.Models;
using static TorchSharp.torch;

namespace ResearchKit.Evaluation;

/// <summary>Frozen features of every layer for one split, computed in a single pass and kept on the CPU.</summary>
/// <param name="Layers">Per layer: [N, D] float32.</param>
/// <param name="Labels">[N] int64.</param>
public sealed record LayerFeatures(Tensor[] Layers, Tensor Labels) : IDisposable
{
    public int Depth => Layers.Length;

    /// <summary>
    /// Runs any backbone once over the data set (eval mode, no gradients) and keeps every block's pooled features. Each
    /// layer's [N, D] result is allocated once, at the first batch, and filled in place: a small tensor kept per batch
    /// between the batches' large temporaries fragments the heap (.config/researchkit.env keeps freed memory mapped), and
    /// peak memory then grew with every batch (issue 22, item 13).
    /// </summary>
    public static LayerFeatures Extract(Backbone backbone, ImageDataset data, Normalization normalization, int batchSize = 64, Device? device = null)
    {
        device ??= Compute.Device;
        var perLayer = new Tensor?[backbone.Depth];
        bool wasTraining = backbone.training;
        backbone.eval();
        using (no_grad())
        {
            foreach (var indices in DataLoader.Sequential(data.Count, batchSize))
            {
                using var scope = NewDisposeScope();
                long start = indices.Indices[0], count = indices.Indices.Length;   // batches are contiguous ranges
                var images = normalization.Apply(data.On(device).Images.narrow(0, start, count), device);
                var layers = backbone.LayerFeatures(images);
                for (int l = 0; l < layers.Length; l++)
                {
                    perLayer[l] ??= empty(data.Count, layers[l].shape[1], dtype: ScalarType.Float32, device: CPU).DetachFromDisposeScope();
                    perLayer[l]!.narrow(0, start, count).copy_(layers[l]);
                }
            }
        }
        backbone.train(wasTraining);
        return new LayerFeatures(perLayer.Select(l => l ?? throw new ResearchKitException($"{data.Name}: no images to extract features from")).ToArray(),
            data.Labels.clone());
    }

    public void Dispose()
    {
        foreach (var l in Layers) l.Dispose();
        Labels.Dispose();
    }
}
