using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>
/// A PatchGAN discriminator (Isola et al., 2017, pix2pix §3.2.2) as pix2pixHD and TSIT's code build it: 4×4 convolutions
/// with padding 2; the first (stride 2, width <c>width</c>) without normalisation; then <c>layers</c> − 1 more, each
/// doubling the width (at most 8×), stride 2 except a fourth layer's 1, spectrally normalised, instance-normalised
/// (no bias); LeakyReLU 0.2 after each; a last plain convolution to one logit per patch.
/// </summary>
public sealed class PatchDiscriminator : Module<Tensor, Tensor[]>
{
    readonly ModuleList<Module<Tensor, Tensor>> layers;
    readonly Conv2d output;

    public PatchDiscriminator(long inputs, int width, int layerCount, bool spectralNorm) : base(nameof(PatchDiscriminator))
    {
        var list = new List<Module<Tensor, Tensor>> { Conv2d(inputs, width, 4, stride: 2, padding: 2) };
        long channels = width;
        for (int n = 1; n < layerCount; n++)
        {
            long next = Math.Min(channels * 2, 8L * width);
            list.Add(SpectralLayer.Conv2d(channels, next, 4, stride: n == 3 ? 1 : 2, padding: 2, normalize: spectralNorm, bias: false));
            channels = next;
        }
        layers = new ModuleList<Module<Tensor, Tensor>>(list.ToArray());
        output = Conv2d(channels, 1, 4, padding: 2);
        RegisterComponents();
    }

    /// <summary>Each layer's activation (for feature matching), then the patch logits [N, 1, h, w] last.</summary>
    public override Tensor[] forward(Tensor x)
    {
        var outputs = new Tensor[layers.Count + 1];
        for (int n = 0; n < layers.Count; n++)
        {
            x = layers[n].call(x);
            if (n > 0) x = FeatureStatistics.InstanceNorm(x);
            x = outputs[n] = functional.leaky_relu(x, 0.2);
        }
        outputs[^1] = Layers.Mixed.Conv(output, x);
        return outputs;
    }
}

/// <summary>
/// PatchGAN discriminators at several scales (pix2pixHD; TSIT uses 2): the input, then the input average-pooled by 3×3,
/// stride 2, padding 1 without counting the padding, and so on.
/// </summary>
public sealed class MultiScaleDiscriminator : Module<Tensor, Tensor[][]>
{
    readonly ModuleList<PatchDiscriminator> scales;

    public MultiScaleDiscriminator(long inputs, int width, int layerCount, int scaleCount, bool spectralNorm) : base(nameof(MultiScaleDiscriminator))
    {
        scales = new ModuleList<PatchDiscriminator>(Enumerable.Range(0, scaleCount)
            .Select(_ => new PatchDiscriminator(inputs, width, layerCount, spectralNorm)).ToArray());
        RegisterComponents();
    }

    /// <summary>The average pooling between scales: 3×3, stride 2, padding 1, padding not counted (a flat image stays flat).</summary>
    public static Tensor Downsample(Tensor x) => functional.avg_pool2d(x, 3, stride: 2, padding: 1, count_include_pad: false);

    /// <summary>Per scale, finest first: each layer's activation, then the patch logits.</summary>
    public override Tensor[][] forward(Tensor x)
    {
        var outputs = new Tensor[scales.Count][];
        for (int s = 0; s < scales.Count; s++)
        {
            if (s > 0) x = Downsample(x);
            outputs[s] = scales[s].call(x);
        }
        return outputs;
    }

    /// <summary>The hinge loss of the discriminator (Lim and Ye, 2017), averaged over the scales' patch logits.</summary>
    public static Tensor DiscriminatorHinge(Tensor[][] real, Tensor[][] fake) =>
        stack(real.Zip(fake, (r, f) => GanLosses.Discriminator(GanLoss.Hinge, r[^1], f[^1]))).mean();

    /// <summary>The generator's hinge loss, −D(fake), averaged over the scales' patch logits.</summary>
    public static Tensor GeneratorHinge(Tensor[][] fake) => stack(fake.Select(f => GanLosses.Generator(GanLoss.Hinge, f[^1]))).mean();

    /// <summary>
    /// Feature matching (pix2pixHD §3.2, TSIT's code): Σ over scales and layers (all but the logits) of the mean absolute
    /// difference between the fake's activation and the real's (held constant), divided by the number of scales.
    /// </summary>
    public static Tensor FeatureMatching(Tensor[][] real, Tensor[][] fake)
    {
        Tensor? total = null;
        for (int s = 0; s < real.Length; s++)
            for (int n = 0; n < real[s].Length - 1; n++)
            {
                var term = functional.l1_loss(fake[s][n], real[s][n].detach());
                total = total is null ? term : total + term;
            }
        return total! / real.Length;
    }
}

/// <summary>
/// pix2pix's generator (Isola et al., 2017, §3.2.1) at the kit's scale, the baseline of TSIT's synthesis task: a U-Net whose
/// encoder halves the map twice (4×4 convolutions, stride 2, LeakyReLU 0.2, instance norm after the first), a 3×3
/// bottleneck, and a decoder that upsamples (nearest, then a 3×3 convolution, instance norm, ReLU) with the encoder's map of
/// the same size concatenated (the skips), ending in a 3×3 convolution to the image's channels and tanh. As a backbone its
/// encoder's three maps are the layers probes read.
/// </summary>
public sealed class UNetGenerator : Backbone
{
    readonly Conv2d down1, down2, bottleneck, up2, up1, output;
    readonly int width;

    public UNetGenerator(int inputs, int outputs, int width) : base(nameof(UNetGenerator))
    {
        this.width = width;
        down1 = Conv2d(inputs, width, 4, stride: 2, padding: 1);
        down2 = Conv2d(width, 2 * width, 4, stride: 2, padding: 1);
        bottleneck = Conv2d(2 * width, 2 * width, 3, padding: 1);
        up2 = Conv2d(4 * width, width, 3, padding: 1);
        up1 = Conv2d(2 * width, width, 3, padding: 1);
        output = Conv2d(width + inputs, outputs, 3, padding: 1);
        RegisterComponents();
    }

    /// <summary>The encoder's maps at 1/2, 1/4 and 1/4 (bottleneck) of the input's side.</summary>
    public Tensor[] Encode(Tensor x)
    {
        var e1 = functional.leaky_relu(down1.call(x), 0.2);
        var e2 = functional.leaky_relu(FeatureStatistics.InstanceNorm(down2.call(e1)), 0.2);
        var b = functional.relu(FeatureStatistics.InstanceNorm(bottleneck.call(e2)));
        return [e1, e2, b];
    }

    /// <summary>An image in [−1, 1] from the input map [N, inputs, H, W] (H and W multiples of 4).</summary>
    public Tensor Generate(Tensor x)
    {
        var (e1, e2, b) = Encode(x) switch { var e => (e[0], e[1], e[2]) };
        Tensor Up(Tensor t, Tensor like) => functional.interpolate(t, size: [like.shape[2], like.shape[3]], mode: InterpolationMode.Nearest);
        var d2 = functional.relu(FeatureStatistics.InstanceNorm(up2.call(Up(cat([b, e2], 1), e1))));
        var d1 = functional.relu(FeatureStatistics.InstanceNorm(up1.call(Up(cat([d2, e1], 1), x))));
        return Layers.Mixed.Conv(output, cat([d1, x], 1)).tanh();
    }

    public override int Depth => 3;
    public override int FeatureDim => 2 * width;
    public override Tensor Features(Tensor images) => Encode(images)[^1].mean([2, 3]);
    public override Tensor[] LayerFeatures(Tensor images) =>
        Encode(images).Select(map => functional.adaptive_avg_pool2d(map, [4, 4]).flatten(1)).ToArray();
    public override void FreezeAllBut(int trainableBlocks) =>
        FreezeAllBut(trainableBlocks, [down1, down2, bottleneck], new[] { up2, up1, output }.SelectMany(m => m.parameters()));
}
