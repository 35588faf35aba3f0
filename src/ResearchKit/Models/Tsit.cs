using ResearchKit.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

// TSIT (Jiang et al., ECCV 2020, "TSIT: A Simple and Versatile Framework for Image-to-Image Translation", §3): a content
// stream and a style stream extract features at every scale, and a generator runs from the coarsest scale to the finest,
// where at each scale FAdaIN (§3.2) gives its features the style features' statistics and a FADE residual block (§3.2)
// denormalises them with a scale and shift computed from the content features. The layout follows the authors' code
// (EndlessSora/TSIT, read for reference): stream blocks halve the size by nearest interpolation, the generator upsamples
// by nearest interpolation, spectral normalisation on the residual convolutions only, LeakyReLU 0.2. Their 8 scales for
// 256 px become <see cref="TsitNetworks.Scales"/> (3 by default) for 28–32 px images.

/// <summary>Per-image, per-channel statistics over H×W, as AdaIN (Huang and Belongie, 2017) and FADE use them.</summary>
public static class FeatureStatistics
{
    /// <summary>Added to the variance before the square root (the authors' AdaIN and instance norm use 1e-5).</summary>
    public const double Epsilon = 1e-5;

    /// <summary>μ and σ [N, C, 1, 1] of x [N, C, H, W]: σ = √(unbiased variance + ε), as the authors' AdaIN function.</summary>
    public static (Tensor Mean, Tensor Std) Of(Tensor x) =>
        (x.mean([2, 3], keepdim: true), (x.var([2, 3], unbiased: true, keepdim: true) + Epsilon).sqrt());

    /// <summary>FAdaIN (§3.2): σ(s)·(x − μ(x))/σ(x) + μ(s), with the style feature s of the same channels as x.</summary>
    public static Tensor AdaIn(Tensor x, Tensor style)
    {
        var (mean, std) = Of(x);
        var (styleMean, styleStd) = Of(style);
        return styleStd * (x - mean) / std + styleMean;
    }

    /// <summary>Instance normalisation without affine parameters: (x − μ)/√(biased variance + ε) per image and channel.</summary>
    public static Tensor InstanceNorm(Tensor x) =>
        (x - x.mean([2, 3], keepdim: true)) / (x.var([2, 3], unbiased: false, keepdim: true) + Epsilon).sqrt();
}

/// <summary>
/// FADE, feature adaptive denormalisation (§3.2): norm(x)·(1 + γ(c)) + β(c), with γ and β each a 3×3 convolution of the
/// content feature c (no hidden layer, as in the authors' code). The authors normalise x by synchronised BatchNorm at
/// batch size 1 for style transfer, which is instance normalisation; the kit normalises per image at every batch size
/// (<see cref="FeatureStatistics.InstanceNorm"/>), so an image's translation does not depend on the rest of its batch.
/// Without modulation (the "no FADE" ablation) the content enters by plain concatenation instead: a 3×3
/// convolution of [norm(x), c] back to x's channels.
/// </summary>
public sealed class Fade : Module<Tensor, Tensor, Tensor>
{
    readonly Conv2d? gamma, beta, concatenated;

    public Fade(long channels, long contentChannels, bool modulate = true) : base(nameof(Fade))
    {
        if (modulate)
        {
            gamma = Conv2d(contentChannels, channels, 3, padding: 1);
            beta = Conv2d(contentChannels, channels, 3, padding: 1);
        }
        else concatenated = Conv2d(channels + contentChannels, channels, 3, padding: 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor content)
    {
        var normalised = FeatureStatistics.InstanceNorm(x);
        return concatenated is null
            ? normalised * (1 + Mixed.Conv(gamma!, content)) + Mixed.Conv(beta!, content)
            : Mixed.Conv(concatenated, cat([normalised, content], 1));
    }
}

/// <summary>
/// The generator's residual block at one scale: FADE → LeakyReLU → 3×3 conv (in → in) → FADE → LeakyReLU → 3×3 conv
/// (in → out), plus a shortcut (FADE → 1×1 conv without bias) when the widths differ. The content feature has the
/// block's input width.
/// </summary>
public sealed class FadeResBlock : Module<Tensor, Tensor, Tensor>
{
    readonly Fade fade0, fade1;
    readonly SpectralLayer conv0, conv1;
    readonly Fade? shortcutFade;
    readonly SpectralLayer? shortcutConv;

    public FadeResBlock(long inputs, long outputs, bool spectralNorm, bool modulate = true) : base(nameof(FadeResBlock))
    {
        fade0 = new Fade(inputs, inputs, modulate);
        conv0 = SpectralLayer.Conv2d(inputs, inputs, 3, padding: 1, normalize: spectralNorm);
        fade1 = new Fade(inputs, inputs, modulate);
        conv1 = SpectralLayer.Conv2d(inputs, outputs, 3, padding: 1, normalize: spectralNorm);
        if (inputs != outputs)
        {
            shortcutFade = new Fade(inputs, inputs, modulate);
            shortcutConv = SpectralLayer.Conv2d(inputs, outputs, 1, normalize: spectralNorm, bias: false);
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor content)
    {
        var h = conv0.call(functional.leaky_relu(fade0.call(x, content), 0.2));
        h = conv1.call(functional.leaky_relu(fade1.call(h, content), 0.2));
        var shortcut = shortcutConv is null ? x : shortcutConv.call(shortcutFade!.call(x, content));
        return shortcut + h;
    }
}

/// <summary>
/// A stream's residual block: 3×3 conv (in → in) → instance norm → LeakyReLU → 3×3 conv (in → out) → instance norm →
/// LeakyReLU, plus a shortcut (1×1 conv without bias → instance norm → LeakyReLU) when the widths differ.
/// </summary>
public sealed class StreamResBlock : Module<Tensor, Tensor>
{
    readonly SpectralLayer conv0, conv1;
    readonly SpectralLayer? shortcut;

    public StreamResBlock(long inputs, long outputs, bool spectralNorm) : base(nameof(StreamResBlock))
    {
        conv0 = SpectralLayer.Conv2d(inputs, inputs, 3, padding: 1, normalize: spectralNorm);
        conv1 = SpectralLayer.Conv2d(inputs, outputs, 3, padding: 1, normalize: spectralNorm);
        if (inputs != outputs) shortcut = SpectralLayer.Conv2d(inputs, outputs, 1, normalize: spectralNorm, bias: false);
        RegisterComponents();
    }

    static Tensor NormAct(Tensor x) => functional.leaky_relu(FeatureStatistics.InstanceNorm(x), 0.2);

    public override Tensor forward(Tensor x)
    {
        var h = NormAct(conv1.call(NormAct(conv0.call(x))));
        return (shortcut is null ? x : NormAct(shortcut.call(x))) + h;
    }
}

/// <summary>The sizes of TSIT's streams and generator at the kit's scale.</summary>
/// <param name="Channels">Image channels (1 or 3); the content input may have others (<see cref="ContentChannels"/>).</param>
/// <param name="ContentChannels">Channels of the content stream's input: the image's for style transfer, the structure map's
/// for synthesis.</param>
/// <param name="Width">Channels at the finest scale; scale k has Width·min(2^k, 4).</param>
/// <param name="Scales">Scales below the full size where the generator runs a block (the paper's code: 7 for 256 px).</param>
/// <param name="StartChannels">Channels of the generator's starting map at the coarsest scale: noise (style transfer) or the
/// structure map (synthesis without a style stream).</param>
/// <param name="Fade">FADE modulation by the content features (false: plain concatenation, an ablation).</param>
public sealed record TsitNetworks(int ImageSize = 28, int Channels = 1, int ContentChannels = 1, int Width = 16, int Scales = 3,
    int StartChannels = 3, bool SpectralNorm = true, bool Fade = true)
{
    /// <summary>Channels of the stream feature and generator input at scale k (0: full size).</summary>
    public int WidthAt(int scale) => Width * Math.Min(1 << scale, 4);

    /// <summary>The side of the stream feature at scale k: halved (rounded down) k times.</summary>
    public int SideAt(int scale) => ImageSize >> scale;

    /// <param name="scales">Check <see cref="Scales"/> (not for a generator that does not use them).</param>
    public void Validate(string method, bool scales = true)
    {
        if (Channels is not (1 or 3)) throw new ResearchKitException($"{method}: images must have 1 or 3 channels; got {Channels}");
        if (ContentChannels is < 1 or > 16) throw new ResearchKitException($"{method}: the content input must have 1–16 channels; got {ContentChannels}");
        if (Width is < 4 or > 256) throw new ResearchKitException($"{method}: --width must be 4–256; got {Width}");
        if (scales && Scales is < 1 or > 6) throw new ResearchKitException($"{method}: --scales must be 1–6; got {Scales}");
        if (scales && SideAt(Scales) < 2)
            throw new ResearchKitException($"{method}: {Scales} scales halve a {ImageSize} px image below 2 px (statistics need at least 2×2); use fewer");
        if (StartChannels is < 1 or > 64) throw new ResearchKitException($"{method}: the generator's start needs 1–64 channels; got {StartChannels}");
    }
}

/// <summary>
/// A content or style stream: blocks 0…Scales, the input halved (nearest) before every block but the first. As a backbone
/// (the content stream is TSIT's image encoder) its blocks are the layers probes read, each map average-pooled to 4×4.
/// </summary>
public sealed class TsitStream : Backbone
{
    readonly ModuleList<StreamResBlock> blocks;
    readonly TsitNetworks networks;

    public TsitStream(TsitNetworks networks, int inputs) : base(nameof(TsitStream))
    {
        this.networks = networks;
        blocks = new ModuleList<StreamResBlock>(Enumerable.Range(0, networks.Scales + 1)
            .Select(k => new StreamResBlock(k == 0 ? inputs : networks.WidthAt(k - 1), networks.WidthAt(k), networks.SpectralNorm)).ToArray());
        RegisterComponents();
    }

    /// <summary>Each block's feature map, finest (full size) first.</summary>
    public Tensor[] FeatureMaps(Tensor x)
    {
        var features = new Tensor[blocks.Count];
        for (int k = 0; k < blocks.Count; k++)
        {
            if (k > 0) x = functional.interpolate(x, scale_factor: [0.5, 0.5], mode: InterpolationMode.Nearest);
            x = features[k] = blocks[k].call(x);
        }
        return features;
    }

    public override int Depth => blocks.Count;
    public override int FeatureDim => networks.WidthAt(networks.Scales);
    public override Tensor Features(Tensor images) => FeatureMaps(images)[^1].mean([2, 3]);
    public override Tensor[] LayerFeatures(Tensor images) =>
        FeatureMaps(images).Select(map => functional.adaptive_avg_pool2d(map, [4, 4]).flatten(1)).ToArray();
    public override void FreezeAllBut(int trainableBlocks) => FreezeBlocksBut(trainableBlocks, blocks);
}

/// <summary>
/// TSIT's generator: a 3×3 convolution of the starting map at the coarsest scale, then for each scale k from the coarsest
/// to 1: FAdaIN with the style feature s_k (when there is a style stream), a FADE block with the content feature c_k, and
/// nearest upsampling to the next finer feature's size; then LeakyReLU, a 3×3 convolution to the image's channels and tanh.
/// </summary>
public sealed class TsitGenerator : nn.Module
{
    readonly Conv2d head, toImage;
    readonly ModuleList<FadeResBlock> blocks;   // blocks[k - 1] runs at scale k
    readonly TsitNetworks networks;

    public TsitGenerator(TsitNetworks networks) : base(nameof(TsitGenerator))
    {
        this.networks = networks;
        head = Conv2d(networks.StartChannels, networks.WidthAt(networks.Scales), 3, padding: 1);
        blocks = new ModuleList<FadeResBlock>(Enumerable.Range(1, networks.Scales)
            .Select(k => new FadeResBlock(networks.WidthAt(k), networks.WidthAt(k - 1), networks.SpectralNorm, networks.Fade)).ToArray());
        toImage = Conv2d(networks.WidthAt(0), networks.Channels, 3, padding: 1);
        RegisterComponents();
    }

    /// <summary>
    /// An image in [−1, 1] [N, Channels, H, W] from <paramref name="start"/> [N, StartChannels, h, w] (resized to the
    /// coarsest content feature), the content stream's features and, when given, the style stream's.
    /// </summary>
    public Tensor Translate(Tensor start, Tensor[] content, Tensor[]? style)
    {
        int coarsest = networks.Scales;
        var x = Mixed.Conv(head, functional.interpolate(start, size: [content[coarsest].shape[2], content[coarsest].shape[3]],
            mode: InterpolationMode.Nearest));
        for (int k = coarsest; k >= 1; k--)
        {
            if (style is not null) x = FeatureStatistics.AdaIn(x, style[k]);
            x = blocks[k - 1].call(x, content[k]);
            x = functional.interpolate(x, size: [content[k - 1].shape[2], content[k - 1].shape[3]], mode: InterpolationMode.Nearest);
        }
        return Mixed.Conv(toImage, functional.leaky_relu(x, 0.2)).tanh();
    }
}
