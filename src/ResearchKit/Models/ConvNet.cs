using System.Text.Json.Serialization;
using ResearchKit.Layers;
using ResearchKit.Methods;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>
/// A method configuration whose network is the <see cref="ConvNet"/> backbone (RotNet and the classic pretext tasks): the
/// input shape lives in <see cref="Backbone"/>, and every such method takes --blocks and --width.
/// </summary>
public abstract record ConvNetMethodConfig(ConvNetConfig Backbone) : MethodConfig
{
    /// <summary>First in config.json, where each method's own record put it before this base existed: sweep keys hash that
    /// JSON, so the order keeps earlier cached results (the serializer lists a base's properties after the derived ones).</summary>
    [JsonPropertyOrder(-1)]
    public ConvNetConfig Backbone { get; init; } = Backbone;

    public override MethodConfig ForInput(int imageSize, int channels) =>
        this with { Backbone = Backbone with { ImageSize = imageSize, Channels = channels } };

    public override (int ImageSize, int Channels) InputShape() => (Backbone.ImageSize, Backbone.Channels);

    /// <summary>The backbone's size: the pretext heads of these methods are small beside it (a method with a larger one overrides this).</summary>
    public override ModelSize? Size() => Backbone.Size();

    /// <summary>--blocks and --width, with the method's own descriptions of them.</summary>
    public static MethodOption[] SizeOptions<TConfig>(string blocks, string width) where TConfig : ConvNetMethodConfig =>
    [
        MethodOption.Integer<TConfig>("--blocks", blocks, (c, v) => (TConfig)((ConvNetMethodConfig)c with { Backbone = c.Backbone with { Depth = v } })),
        MethodOption.Integer<TConfig>("--width", width, (c, v) => (TConfig)((ConvNetMethodConfig)c with { Backbone = c.Backbone with { Width = v } })),
    ];
}

/// <summary>
/// A Network-in-Network style CNN (Lin et al., 2014) as RotNet used it (Gidaris et al., 2018, §3 and
/// Table 1: NIN with 4 conv blocks on CIFAR-10, 192 channels). Defaults are that network; <see cref="Tiny"/>
/// suits 28–32 px images on a CPU. <see cref="ProbeFeatures"/>: each block's map is average-pooled to about
/// this many values for per-block probes, so every block is probed at a similar width (Zhang et al. 2016 resize
/// every layer's features to a common size for the same reason).
/// </summary>
/// <param name="WithoutBatchNorm">Blocks of convolutions with biases and no BatchNorm: for energy-based training, whose
/// sampled images would otherwise share batch statistics with the data (JEM trains its WRN without normalisation, §4).
/// Left out of the JSON when false, so earlier configurations keep their keys.</param>
public sealed record ConvNetConfig(int ImageSize = 32, int Channels = 3, int Width = 192, int Depth = 4, int ProbeFeatures = 4096,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)] bool WithoutBatchNorm = false)
{
    /// <summary>CPU scale: width 64, 4 blocks, 145 k parameters; probes see 64 × 3 × 3 = 576 values per block.</summary>
    public static ConvNetConfig Tiny(int imageSize = 28, int channels = 1) => new(imageSize, channels, Width: 64, Depth: 4, ProbeFeatures: 576);

    /// <summary>Side of block <paramref name="block"/>'s output map: the input is halved after blocks 0 and 1, as RotNet's NIN pools after its first two blocks.</summary>
    public int SpatialSize(int block) => ImageSize >> Math.Min(block, 2);

    /// <summary>
    /// Each NIN block's three convolutions (3×3, 1×1, 1×1) and BatchNorms; per image, each block keeps its three
    /// convolution and three BatchNorm outputs at its resolution.
    /// </summary>
    public ModelSize Size()
    {
        var size = ModelSize.None;
        for (int block = 0; block < Depth; block++)
        {
            double inputs = block == 0 ? Channels : Width, side = SpatialSize(block);
            size += new ModelSize(9 * inputs * Width + 2.0 * Width * Width + 6.0 * Width, 6 * side * side * Width);
        }
        return size;
    }

    public void Validate()
    {
        if (Channels is < 1 or > 4) throw new ResearchKitException($"ConvNet: image channels must be 1–4; got {Channels}");
        if (ImageSize < 8) throw new ResearchKitException($"ConvNet: image size must be at least 8 (two 2× poolings); got {ImageSize}");
        if (Width < 1) throw new ResearchKitException($"ConvNet: width (--width) must be positive; got {Width}");
        if (Depth < 1) throw new ResearchKitException($"ConvNet: blocks (--blocks) must be at least 1; got {Depth}");
        if (ProbeFeatures < 1) throw new ResearchKitException($"ConvNet: probe features must be positive; got {ProbeFeatures}");
    }
}

/// <summary>One NIN block: a 3×3 convolution and two 1×1 convolutions, each followed by BatchNorm (or, without it, with a
/// bias) and ReLU.</summary>
public sealed class NinBlock : Module<Tensor, Tensor>
{
    readonly Sequential layers;

    public NinBlock(int inChannels, int width, bool batchNorm = true) : base(nameof(NinBlock))
    {
        IEnumerable<nn.Module<Tensor, Tensor>> Layer(int inputs, int kernel) => batchNorm
            ? [Conv2d(inputs, width, kernel, padding: kernel / 2, bias: false), BatchNorm2d(width), ReLU(inplace: true)]
            : [Conv2d(inputs, width, kernel, padding: kernel / 2), ReLU(inplace: true)];
        layers = Sequential([.. Layer(inChannels, 3), .. Layer(width, 1), .. Layer(width, 1)]);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => Mixed.Stack(layers, x);

    /// <summary>The 3×3 convolution the block starts with.</summary>
    public Conv2d First => (Conv2d)layers.children().First();
}

/// <summary>
/// The small CNN backbone: <see cref="ConvNetConfig.Depth"/> NIN blocks with 2× max pooling after the first two
/// (a simplification of RotNet's NIN, which pools 3×3 with stride 2, max after block 1 and average after block 2).
/// Pooled features are the global average of the last block's map.
/// </summary>
public sealed class ConvNet : Backbone
{
    public ConvNetConfig Config { get; }

    readonly ModuleList<NinBlock> blocks;
    readonly MaxPool2d pool;

    public ConvNet(ConvNetConfig config) : base(nameof(ConvNet))
    {
        config.Validate();
        Config = config;
        blocks = new ModuleList<NinBlock>(Enumerable.Range(0, config.Depth)
            .Select(i => new NinBlock(i == 0 ? config.Channels : config.Width, config.Width, !config.WithoutBatchNorm)).ToArray());
        pool = MaxPool2d(2, 2);
        RegisterComponents();
        using var _ = no_grad();
        foreach (var (_, module) in named_modules())
            if (module is Conv2d conv) init.kaiming_normal_(conv.weight, mode: init.FanInOut.FanOut, nonlinearity: init.NonlinearityType.ReLU);
    }

    public override int Depth => Config.Depth;
    public override int FeatureDim => Config.Width;

    /// <summary>Side of the square grid block <paramref name="block"/>'s map is pooled to for probes.</summary>
    public int ProbeGrid(int block) =>
        Math.Clamp((int)Math.Round(Math.Sqrt((double)Config.ProbeFeatures / Config.Width)), 1, Config.SpatialSize(block));

    /// <summary>images [B, C, H, W] → each block's feature map [B, W, h_l, w_l].</summary>
    public Tensor[] FeatureMaps(Tensor images)
    {
        var maps = new Tensor[Depth];
        var x = images;
        for (int i = 0; i < Depth; i++)
        {
            x = blocks[i].call(x);
            maps[i] = x;
            if (i < 2) x = pool.call(x);
        }
        return maps;
    }

    public override Tensor Features(Tensor images) => FeatureMaps(images)[^1].mean(new long[] { 2, 3 });

    /// <summary>Block <paramref name="block"/> on its input, with the pooling that follows it: the input of the next block (or, for
    /// the last, the map <see cref="Features"/> averages). Running the blocks one by one lets a caller stand between them.</summary>
    public Tensor Stage(int block, Tensor x)
    {
        x = blocks[block].call(x);
        return block < 2 ? pool.call(x) : x;
    }

    /// <summary>Block <paramref name="block"/>'s first convolution (3×3): what a linear map of its input folds into.</summary>
    public Conv2d FirstConvolution(int block) => blocks[block].First;

    /// <summary>Each block's map average-pooled to <see cref="ProbeGrid"/>² cells and flattened: [B, W·g²].</summary>
    public override Tensor[] LayerFeatures(Tensor images) =>
        FeatureMaps(images).Select((map, i) => functional.adaptive_avg_pool2d(map, new long[] { ProbeGrid(i), ProbeGrid(i) }).flatten(1)).ToArray();

    /// <summary>Only the last <paramref name="trainableBlocks"/> blocks train; frozen blocks keep their BatchNorm statistics.</summary>
    public override void FreezeAllBut(int trainableBlocks) => FreezeBlocksBut(trainableBlocks, blocks);
}
