using static TorchSharp.torch;

namespace ResearchKit.Evaluation;

/// <summary>Reconstruction error metrics on pixel values scaled to [0, maxValue].</summary>
public static class Reconstruction
{
    /// <summary>Mean squared error over all elements, optionally only where weights [same shape or broadcastable] are 1.</summary>
    public static double Mse(Tensor prediction, Tensor target, Tensor? weights = null)
    {
        using var scope = NewDisposeScope();
        var squared = (prediction - target).square();
        if (weights is null) return squared.mean().item<float>();
        var w = weights.expand_as(squared);
        return (squared * w).sum().item<float>() / w.sum().item<float>();
    }

    /// <summary>Peak signal-to-noise ratio in dB: 10·log10(max² / MSE).</summary>
    public static double Psnr(double mse, double maxValue = 1.0) =>
        mse <= 0 ? double.PositiveInfinity : 10 * Math.Log10(maxValue * maxValue / mse);
}
