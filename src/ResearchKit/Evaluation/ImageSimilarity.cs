using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Evaluation;

/// <summary>Similarity of two image batches in pixel space [0, 1].</summary>
public static class ImageSimilarity
{
    /// <summary>
    /// SSIM (Wang et al., 2004, "Image Quality Assessment: From Error Visibility to Structural Similarity", Eq. 13): local
    /// means, variances and covariance under an 11×11 Gaussian window of σ = 1.5 (§III-C), C1 = (0.01·L)², C2 = (0.03·L)²
    /// with L = 1, averaged over the positions where the window fits (no padding), the channels and the images. Images
    /// smaller than the window use a window of their size. 1 for identical images.
    /// </summary>
    public static double Ssim(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape) || a.dim() != 4)
            throw new ResearchKitException($"SSIM needs two image batches of one shape [N, C, H, W]; got [{string.Join(", ", a.shape)}] and [{string.Join(", ", b.shape)}]");
        const double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
        int size = (int)Math.Min(11, Math.Min(a.shape[2], a.shape[3]));
        var offsets = arange(size, dtype: ScalarType.Float64, device: a.device) - (size - 1) / 2.0;
        var line = (-offsets.square() / (2 * 1.5 * 1.5)).exp();
        line = line / line.sum();
        long channels = a.shape[1];
        var window = line.outer(line).to_type(ScalarType.Float64).expand(channels, 1, size, size).contiguous();
        Tensor Local(Tensor x) => functional.conv2d(x, window, groups: channels);
        var (x, y) = (a.to_type(ScalarType.Float64), b.to_type(ScalarType.Float64));
        var (muX, muY) = (Local(x), Local(y));
        var varX = Local(x * x) - muX.square();
        var varY = Local(y * y) - muY.square();
        var covariance = Local(x * y) - muX * muY;
        var map = (2 * muX * muY + c1) * (2 * covariance + c2) / ((muX.square() + muY.square() + c1) * (varX + varY + c2));
        return map.mean().item<double>();
    }
}
