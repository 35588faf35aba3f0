using ResearchKit.Layers;
using ResearchKit.Methods;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>The adversarial objective of a GAN (both papers SSGAN compares, §4 "Settings").</summary>
public enum GanLoss
{
    /// <summary>Goodfellow et al. 2014's non-saturating loss: D minimises softplus(−D(x)) + softplus(D(G(z))), G minimises
    /// softplus(−D(G(z))). SSGAN's default.</summary>
    NonSaturating,
    /// <summary>The hinge loss (Lim and Ye 2017; Miyato et al. 2018): D minimises relu(1 − D(x)) + relu(1 + D(G(z))),
    /// G minimises −D(G(z)).</summary>
    Hinge,
}

/// <summary>The two halves of a <see cref="GanLoss"/> on the discriminator's logits [N] or [N, 1].</summary>
public static class GanLosses
{
    public static Tensor Discriminator(GanLoss loss, Tensor realLogits, Tensor fakeLogits) => loss switch
    {
        GanLoss.Hinge => functional.relu(1 - realLogits).mean() + functional.relu(1 + fakeLogits).mean(),
        _ => functional.softplus(-realLogits).mean() + functional.softplus(fakeLogits).mean(),
    };

    public static Tensor Generator(GanLoss loss, Tensor fakeLogits) => loss switch
    {
        GanLoss.Hinge => -fakeLogits.mean(),
        _ => functional.softplus(-fakeLogits).mean(),
    };
}

/// <summary>
/// A convolution or linear layer whose weight is divided by its largest singular value (Miyato et al., 2018, "Spectral
/// Normalization for Generative Adversarial Networks", §2.1), estimated by one power iteration per training forward pass
/// with the vector u kept as a buffer (checkpointed, so a resumed run continues the same estimate). In eval mode u is
/// not updated. Without <c>normalize</c> it is the plain layer.
/// </summary>
public sealed class SpectralLayer : Module<Tensor, Tensor>
{
    readonly Parameter weight;
    readonly Parameter? bias;
    readonly Tensor u, v;
    readonly bool normalize;
    readonly long stride, padding;
    readonly bool convolution;

    SpectralLayer(long[] weightShape, bool convolution, long stride, long padding, bool normalize, bool withBias = true) : base(nameof(SpectralLayer))
    {
        (this.convolution, this.stride, this.padding, this.normalize) = (convolution, stride, padding, normalize);
        long outputs = weightShape[0], fanIn = weightShape.Skip(1).Aggregate(1L, (a, b) => a * b);
        // PyTorch's default initialisation of Conv2d and Linear: kaiming-uniform with a = √5, bias uniform in ±1/√fan_in.
        weight = Parameter(empty(weightShape, device: CPU));   // built on the host, then moved (Pretraining.Build)
        bias = withBias ? Parameter(empty(outputs, device: CPU)) : null;
        using (no_grad())
        {
            init.kaiming_uniform_(weight, a: Math.Sqrt(5));
            if (bias is not null) init.uniform_(bias, -1 / Math.Sqrt(fanIn), 1 / Math.Sqrt(fanIn));
        }
        u = functional.normalize(randn(outputs, device: CPU), dim: 0);
        v = functional.normalize(randn(fanIn, device: CPU), dim: 0);
        register_parameter(nameof(weight), weight);
        if (bias is not null) register_parameter(nameof(bias), bias);
        register_buffer(nameof(u), u);
        register_buffer(nameof(v), v);
    }

    public static SpectralLayer Conv2d(long inputs, long outputs, long kernel, long stride = 1, long padding = 0, bool normalize = true,
        bool bias = true) => new([outputs, inputs, kernel, kernel], true, stride, padding, normalize, bias);

    public static SpectralLayer Linear(long inputs, long outputs, bool normalize = true) => new([outputs, inputs], false, 1, 0, normalize);

    /// <summary>The weight the layer applies: W / σ(W) when normalised, else W. σ = uᵀWv with u and v held constant (the power
    /// iteration's vectors carry no gradient), as torch.nn.utils.spectral_norm computes it.</summary>
    public Tensor EffectiveWeight()
    {
        if (!normalize) return weight;
        var matrix = weight.flatten(1);                                                        // out, in·k·k
        if (training)
            using (no_grad())
            {
                v.copy_(functional.normalize(matrix.t().mv(u), dim: 0));
                u.copy_(functional.normalize(matrix.mv(v), dim: 0));
            }
        // Copies: the buffers change in place at the next forward pass, which may come before this one's backward.
        var sigma = u.clone().dot(matrix.mv(v.clone()));
        return weight / sigma;
    }

    public override Tensor forward(Tensor x) => convolution
        ? functional.conv2d(x, EffectiveWeight(), bias, strides: [stride, stride], padding: [padding, padding])
        : functional.linear(x, EffectiveWeight(), bias);
}

/// <summary>
/// The size of a DCGAN-style generator and discriminator for 28–32 px images, grey or RGB (Radford et al., 2016; the
/// SNDCGAN variant of Miyato et al. 2018, Table 3, that SSGAN's §4 uses on CIFAR-10): the discriminator has
/// <see cref="Depth"/> blocks of a 3×3 convolution and a 4×4 convolution with stride 2, widths <see cref="Width"/>,
/// 2·Width, 4·Width…, LeakyReLU 0.1, no BatchNorm; the generator maps a <see cref="Latent"/>-dimensional Gaussian through a
/// linear layer to a map of a quarter of the side with 4·<see cref="GeneratorWidth"/> channels and two 4×4 transposed
/// convolutions with BatchNorm and ReLU that halve the channels and double the side.
/// </summary>
/// <param name="SpectralNorm">Spectral normalisation of every discriminator layer (SSGAN's setting; Miyato et al. 2018).</param>
/// <param name="ProbeFeatures">Each block's map is average-pooled to about this many values for per-block probes, as
/// <see cref="ConvNetConfig.ProbeFeatures"/>.</param>
public sealed record GanNetworksConfig(int ImageSize = 32, int Channels = 3, int Width = 64, int Depth = 3, int Latent = 128,
    bool SpectralNorm = true, int ProbeFeatures = 1024, int GeneratorWidth = 64)
{
    /// <summary>CPU scale: discriminator widths 16, 32, 64; generator 64 → 32 → 16 channels; a 64-d latent; probes see
    /// about 576 values per block. Measured: the generator's transposed convolutions dominate a step at larger widths.</summary>
    public static GanNetworksConfig Tiny(int imageSize = 28, int channels = 1) =>
        new(imageSize, channels, Width: 16, Depth: 3, Latent: 64, ProbeFeatures: 576, GeneratorWidth: 16);

    /// <summary>Channels of discriminator block <paramref name="block"/> (doubling, at most 8·Width).</summary>
    public int BlockWidth(int block) => Width << Math.Min(block, 3);

    /// <summary>Side of block <paramref name="block"/>'s output map: each block halves it (rounding up).</summary>
    public int SpatialSize(int block)
    {
        int side = ImageSize;
        for (int i = 0; i <= block; i++) side = (side + 1) / 2;
        return side;
    }

    /// <summary>Both networks' parameters, counted exactly (weights, biases, BatchNorm scales), and per image the activations
    /// each layer keeps (both convolutions and their LeakyReLUs per discriminator block; the generator's maps three times).</summary>
    public ModelSize Size()
    {
        var size = ModelSize.None;
        for (int block = 0; block < Depth; block++)
        {
            double inputs = block == 0 ? Channels : BlockWidth(block - 1), w = BlockWidth(block), side = SpatialSize(block);
            size += new ModelSize(9 * inputs * w + w + 16 * w * w + w, 2 * 4 * side * side * w);
        }
        double g = 4.0 * GeneratorWidth, h = g / 2, last = GeneratorWidth, q = ImageSize / 4;
        double generator = Latent * g * q * q + g * q * q + 2 * g          // projection and its BatchNorm
            + 16 * g * h + h + 2 * h                                       // first transposed convolution and BatchNorm
            + 16 * h * last + last + 2 * last                              // second
            + 9 * last * Channels + Channels;                              // the output convolution
        return size + new ModelSize(generator, 3 * (g * q * q + h * 4 * q * q + last * 16 * q * q));
    }

    public void Validate(string method)
    {
        if (Channels is < 1 or > 4) throw new ResearchKitException($"{method}: image channels must be 1–4; got {Channels}");
        if (ImageSize < 8 || ImageSize % 4 != 0)
            throw new ResearchKitException($"{method}: image size must be a multiple of 4, at least 8 (the generator doubles a quarter-size map twice); got {ImageSize}");
        if (Width < 1) throw new ResearchKitException($"{method}: width (--width) must be positive; got {Width}");
        if (GeneratorWidth < 2) throw new ResearchKitException($"{method}: generator width (--generator-width) must be at least 2; got {GeneratorWidth}");
        if (Depth is < 1 or > 4) throw new ResearchKitException($"{method}: discriminator blocks (--blocks) must be 1–4; got {Depth}");
        if (Latent < 1) throw new ResearchKitException($"{method}: latent size (--latent) must be positive; got {Latent}");
        if (ProbeFeatures < 1) throw new ResearchKitException($"{method}: probe features must be positive; got {ProbeFeatures}");
    }
}

/// <summary>
/// The DCGAN-style discriminator as a <see cref="Backbone"/> (<see cref="GanNetworksConfig"/>): per-block features for
/// probes (`probe --layer all` works on it), pooled features the real/fake and other heads read.
/// </summary>
public sealed class GanDiscriminator : Backbone
{
    public GanNetworksConfig Config { get; }
    readonly ModuleList<Sequential> blocks;

    public GanDiscriminator(GanNetworksConfig config) : base(nameof(GanDiscriminator))
    {
        Config = config;
        bool sn = config.SpectralNorm;
        blocks = new ModuleList<Sequential>(Enumerable.Range(0, config.Depth).Select(i =>
        {
            int inputs = i == 0 ? config.Channels : config.BlockWidth(i - 1), w = config.BlockWidth(i);
            return Sequential(
                SpectralLayer.Conv2d(inputs, w, 3, padding: 1, normalize: sn), LeakyReLU(0.1),
                SpectralLayer.Conv2d(w, w, 4, stride: 2, padding: 1, normalize: sn), LeakyReLU(0.1));
        }).ToArray());
        RegisterComponents();
    }

    public override int Depth => Config.Depth;
    public override int FeatureDim => Config.BlockWidth(Config.Depth - 1);

    /// <summary>images [B, C, H, W] → each block's map.</summary>
    public Tensor[] FeatureMaps(Tensor images)
    {
        var maps = new Tensor[Depth];
        var x = images;
        for (int i = 0; i < Depth; i++) x = maps[i] = blocks[i].call(x);
        return maps;
    }

    /// <summary>The last block's map summed over space: the input of SNDCGAN's final linear layer up to its flattening
    /// (a sum keeps a layer's Lipschitz bound independent of the map's size, where a mean would shrink it).</summary>
    public override Tensor Features(Tensor images) => FeatureMaps(images)[^1].sum([2, 3]);

    int ProbeGrid(int block) =>
        Math.Clamp((int)Math.Round(Math.Sqrt((double)Config.ProbeFeatures / Config.BlockWidth(block))), 1, Config.SpatialSize(block));

    public override Tensor[] LayerFeatures(Tensor images) =>
        FeatureMaps(images).Select((map, i) => functional.adaptive_avg_pool2d(map, [ProbeGrid(i), ProbeGrid(i)]).flatten(1)).ToArray();

    /// <summary>Only the last <paramref name="trainableBlocks"/> blocks train; frozen blocks keep their spectral-norm estimates.</summary>
    public override void FreezeAllBut(int trainableBlocks) => FreezeBlocksBut(trainableBlocks, blocks);
}

/// <summary>
/// The DCGAN generator (<see cref="GanNetworksConfig"/>): z [B, Latent] → images normalised as the run's data. Its last layer
/// gives pixels in [0, 1] through (tanh + 1) / 2, which the run's normalisation then standardises, so the discriminator sees
/// fakes on the scale of the real images it is given.
/// </summary>
public sealed class GanGenerator : Module<Tensor, Tensor>
{
    readonly GanNetworksConfig config;
    readonly Linear project;
    readonly Sequential body;
    readonly Func<Tensor, Tensor> fromPixels;

    public GanGenerator(GanNetworksConfig config, Func<Tensor, Tensor> fromPixels) : base(nameof(GanGenerator))
    {
        this.config = config;
        this.fromPixels = fromPixels;
        int g = 4 * config.GeneratorWidth, q = config.ImageSize / 4;
        project = Linear(config.Latent, g * q * q);
        body = Sequential(
            BatchNorm2d(g), ReLU(),
            ConvTranspose2d(g, g / 2, 4, stride: 2, padding: 1), BatchNorm2d(g / 2), ReLU(),
            ConvTranspose2d(g / 2, config.GeneratorWidth, 4, stride: 2, padding: 1), BatchNorm2d(config.GeneratorWidth), ReLU(),
            Conv2d(config.GeneratorWidth, config.Channels, 3, padding: 1), Tanh());
        RegisterComponents();
    }

    public override Tensor forward(Tensor z)
    {
        int q = config.ImageSize / 4;
        var x = project.call(z).reshape(z.shape[0], 4 * config.GeneratorWidth, q, q);
        return fromPixels((body.call(x) + 1) / 2);
    }
}

/// <summary>A model that draws images (a GAN's generator): what sample-quality measures (<see cref="Evaluation.SampleQuality"/>) need.</summary>
public interface IImageSampler
{
    /// <summary><paramref name="count"/> images, normalised as the run's data, on <see cref="Compute.Device"/>.</summary>
    Tensor Sample(long count, Generator generator);
}
