using ResearchKit.Training;
using static TorchSharp.torch;

namespace ResearchKit.Data;

/// <summary>
/// CIE Lab colour (D65 white, 2° observer) for sRGB images, the space colorization and
/// split-brain autoencoders work in (Zhang et al., 2016, §2; 2017, §3): L in [0, 100] is
/// lightness, a and b (about −110 … 110 for sRGB) the colour. Pure tensor code on the
/// images' device, differentiable, with the standard sRGB transfer curve and XYZ matrix.
/// </summary>
public static class LabColor
{
    // sRGB (linear) → XYZ, IEC 61966-2-1; rows X, Y, Z. Its inverse for the way back.
    static readonly float[] RgbToXyz = [0.4124564f, 0.3575761f, 0.1804375f,
        0.2126729f, 0.7151522f, 0.0721750f,
        0.0193339f, 0.1191920f, 0.9503041f];
    static readonly float[] XyzToRgb = [3.2404542f, -1.5371385f, -0.4985314f,
        -0.9692660f, 1.8760108f, 0.0415560f,
        0.0556434f, -0.2040259f, 1.0572252f];
    static readonly float[] White = [0.95047f, 1f, 1.08883f];   // D65
    const float Delta = 6f / 29f;

    /// <summary>RGB [B, 3, H, W] in [0, 1] → Lab [B, 3, H, W] (L, a, b).</summary>
    public static Tensor FromRgb(Tensor rgb)
    {
        RequireRgb(rgb, "rgb");
        var c = rgb.clamp(0, 1);
        var linear = where(c.le(0.04045), c / 12.92, ((c + 0.055) / 1.055).pow(2.4));
        var xyz = Mix(linear, RgbToXyz) / DeviceCopy.Of(White, [1, 3, 1, 1], rgb.device);
        var f = where(xyz.gt(Delta * Delta * Delta), xyz.clamp_min(1e-12).pow(1.0 / 3),
            xyz / (3 * Delta * Delta) + 4.0 / 29);
        var (fx, fy, fz) = (f[.., 0..1], f[.., 1..2], f[.., 2..3]);
        return cat([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1);
    }

    /// <summary>Lab [B, 3, H, W] → RGB [B, 3, H, W] in [0, 1] (out-of-gamut colours clipped).</summary>
    public static Tensor ToRgb(Tensor lab)
    {
        RequireRgb(lab, "lab");
        var fy = (lab[.., 0..1] + 16) / 116;
        var f = cat([fy + lab[.., 1..2] / 500, fy, fy - lab[.., 2..3] / 200], 1);
        var xyz = where(f.gt(Delta), f.pow(3), 3 * Delta * Delta * (f - 4.0 / 29))
            * DeviceCopy.Of(White, [1, 3, 1, 1], lab.device);
        var linear = Mix(xyz, XyzToRgb).clamp(0, 1);
        return where(linear.le(0.0031308), 12.92 * linear, 1.055 * linear.clamp_min(1e-12).pow(1 / 2.4) - 0.055).clamp(0, 1);
    }

    /// <summary>Lab [B, 3, H, W] → L scaled to about [−1, 1] [B, 1, H, W]:
    /// the grey input of colorization and split-brain.</summary>
    public static Tensor ScaledLightness(Tensor lab) => lab[.., 0..1] / 50 - 1;

    /// <summary>Lab [B, 3, H, W] → ab scaled to about [−1, 1] [B, 2, H, W]:
    /// split-brain's colour input, the regression target.</summary>
    public static Tensor ScaledAb(Tensor lab) => lab[.., 1..3] / AbScale;

    /// <summary>The a and b range divided out by <see cref="ScaledAb"/>.</summary>
    public const float AbScale = 110;

    /// <summary>L [B, 1, H, W] and ab [B, 2, h, w] (any smaller side: resized bilinearly, as the papers upsample their
    /// quarter-resolution predictions) → RGB [B, 3, H, W] in [0, 1].</summary>
    public static Tensor Compose(Tensor lightness, Tensor ab)
    {
        if (ab.shape[2] != lightness.shape[2] || ab.shape[3] != lightness.shape[3])
            ab = nn.functional.interpolate(ab, new long[] { lightness.shape[2], lightness.shape[3] },
                mode: InterpolationMode.Bilinear, align_corners: false);
        return ToRgb(cat([lightness, ab], 1));
    }

    /// <summary>Per pixel, a 3×3 matrix (row-major) times the channel vector.</summary>
    static Tensor Mix(Tensor x, float[] matrix) =>
        einsum("oc,bchw->bohw", DeviceCopy.Of(matrix, [3, 3], x.device), x);

    static void RequireRgb(Tensor x, string name)
    {
        if (x.dim() != 4 || x.shape[1] != 3)
            throw new ResearchKitException($"{name}: expected images [B, 3, H, W]; got [{string.Join(", ", x.shape)}]");
    }
}

/// <summary>
/// A quantisation of one or two colour coordinates into bins on a regular grid (Zhang et al., 2016, §2.1: ab in bins of
/// 10, of which the in-gamut ones are the classes; split-brain's L in bins). Values outside the range go to the edge bins.
/// </summary>
/// <param name="Min">Lower edge of the range on each axis.</param>
/// <param name="Width">Bin width.</param>
/// <param name="PerAxis">Bins per axis.</param>
/// <param name="Axes">1 (L) or 2 (ab).</param>
public sealed record ColorBins(float Min, float Width, int PerAxis, int Axes)
{
    /// <summary>The paper's ab grid: bins of 10 over [−110, 110) on both
    /// axes (484 cells; sRGB fills 313 of them at ImageNet scale).</summary>
    public static ColorBins Ab => new(-110, 10, 22, 2);

    /// <summary>Lightness L in [0, 100] in bins of 5 (the split-brain ab → L half's classes).</summary>
    public static ColorBins Lightness => new(0, 5, 20, 1);

    public int Count => Axes == 1 ? PerAxis : PerAxis * PerAxis;

    /// <summary>values [B, Axes, H, W] → bin index [B, H, W] (int64).</summary>
    public Tensor Encode(Tensor values)
    {
        var cell = ((values - Min) / Width).floor().clamp(0, PerAxis - 1).to_type(ScalarType.Int64);
        return Axes == 1 ? cell[.., 0] : cell[.., 0] * PerAxis + cell[.., 1];
    }

    /// <summary>The centres of the bins [Count, Axes] on <paramref name="device"/>.</summary>
    public Tensor Centres(Device device)
    {
        var axis = arange(PerAxis, ScalarType.Float32, device) * Width + (Min + Width / 2);
        if (Axes == 1) return axis.unsqueeze(1);
        return stack([axis.repeat_interleave(PerAxis), axis.repeat(PerAxis)], 1);
    }

    /// <summary>
    /// values [B, Axes, H, W] → soft targets [B, Count, H, W]: each pixel spread over
    /// its <paramref name="neighbours"/> nearest bin centres with Gaussian weights of
    /// <paramref name="sigma"/> (Zhang et al., 2016, §2.1: 5 neighbours, σ = 5).
    /// </summary>
    public Tensor SoftEncode(Tensor values, int neighbours = 5, double sigma = 5)
    {
        long B = values.shape[0], H = values.shape[2], W = values.shape[3];
        var points = values.permute(0, 2, 3, 1).reshape(-1, Axes);                       // N, Axes
        var distances = cdist(points, Centres(values.device));                            // N, Count
        var (nearest, index) = distances.topk(Math.Min(neighbours, Count), dim: 1, largest: false);
        var weights = (-nearest.square() / (2 * sigma * sigma)).softmax(1);               // N, k
        var soft = zeros(points.shape[0], Count, device: values.device).scatter_(1, index, weights);
        return soft.reshape(B, H, W, Count).permute(0, 3, 1, 2);                           // B, Count, H, W
    }

    /// <summary>
    /// Logits [B, Count, H, W] → values [B, Axes, H, W]: the annealed mean of the bin centres under softmax(logits / T)
    /// (Zhang et al., 2016, Eq. 5: T = 0.38 between the mean, T = 1, and the mode, T → 0).
    /// </summary>
    public Tensor Decode(Tensor logits, double temperature = 0.38)
    {
        var probabilities = (logits / temperature).softmax(1);
        return einsum("bkhw,ka->bahw", probabilities, Centres(logits.device));
    }

    /// <summary>
    /// Class-rebalancing weights (Zhang et al., 2016, Eq. 3–4) from the bin indices of training pixels: the empirical
    /// distribution, smoothed by a Gaussian of <paramref name="sigma"/> (in the values' units; paper: 5), mixed with the
    /// uniform over the Q bins that occur by <paramref name="lambda"/> (paper: ½), inverted and scaled so that the expected
    /// weight under the smoothed distribution is 1. [Count] on the host.
    /// </summary>
    public float[] RebalancingWeights(Tensor indices, double lambda = 0.5, double sigma = 5)
    {
        using var scope = NewDisposeScope();
        var counts = bincount(indices.flatten().cpu(), minlength: Count)
            .to_type(ScalarType.Float64);   // once, before training
        var empirical = counts / counts.sum();
        int q = (int)counts.gt(0).sum().item<long>();
        // Separable Gaussian smoothing over the grid, in bin units.
        double s = sigma / Width;
        int radius = Math.Max(1, (int)Math.Ceiling(3 * s));
        var offsets = arange(-radius, radius + 1, ScalarType.Float64, device: CPU);
        var kernel = (-(offsets * offsets) / (2 * s * s)).exp();
        kernel = kernel / kernel.sum();
        var grid = Axes == 1 ? empirical.reshape(1, 1, 1, PerAxis) : empirical.reshape(1, 1, PerAxis, PerAxis);
        grid = nn.functional.conv2d(grid, kernel.reshape(1, 1, 1, -1), padding: new long[] { 0, radius });
        if (Axes == 2) grid = nn.functional.conv2d(grid, kernel.reshape(1, 1, -1, 1), padding: new long[] { radius, 0 });
        var smoothed = grid.flatten();
        smoothed = smoothed / smoothed.sum();
        var weights = 1 / ((1 - lambda) * smoothed + lambda / q);
        weights = weights / (smoothed * weights).sum();
        return weights.to_type(ScalarType.Float32).data<float>().ToArray();
    }
}
