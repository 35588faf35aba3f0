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

    /// <summary>Runs any backbone once over the data set (eval mode, no gradients) and keeps every block's pooled features.</summary>
    public static LayerFeatures Extract(Backbone backbone, ImageDataset data, Normalization normalization, int batchSize = 512, Device? device = null)
    {
        device ??= Compute.Device;
        var perLayer = Enumerable.Range(0, backbone.Depth).Select(_ => new List<Tensor>()).ToArray();
        bool wasTraining = backbone.training;
        backbone.eval();
        using (no_grad())
        {
            foreach (var indices in DataLoader.Sequential(data.Count, batchSize))
            {
                using var scope = NewDisposeScope();
                var images = normalization.Apply(data.On(device).Images.narrow(0, indices.Indices[0], indices.Indices.Length), device);   // batches are contiguous ranges
                var layers = backbone.LayerFeatures(images);
                for (int l = 0; l < layers.Length; l++) perLayer[l].Add(layers[l].cpu().MoveToOuterDisposeScope());
            }
        }
        backbone.train(wasTraining);
        var stacked = perLayer.Select(chunks =>
        {
            var all = cat(chunks, 0);
            foreach (var c in chunks) c.Dispose();
            return all;
        }).ToArray();
        return new LayerFeatures(stacked, data.Labels.clone());
    }

    public void Dispose()
    {
        foreach (var l in Layers) l.Dispose();
        Labels.Dispose();
    }
}
