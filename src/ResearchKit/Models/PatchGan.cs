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
        outputs[^1] = output.call(x);
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
