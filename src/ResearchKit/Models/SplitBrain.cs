using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Methods;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>
/// Split-brain autoencoder (Zhang et al., 2017, "Split-Brain Autoencoders: Unsupervised Learning by Cross-Channel
/// Prediction"): the network is split into two disjoint halves of half the width. One sees L and predicts ab, the other
/// sees ab and predicts L; the representation is both halves' features side by side (§3.2). Both predictions are
/// classifications over bins (the paper's best loss, §4.1): ab in <see cref="ColorBins.Ab"/>, L in
/// <see cref="ColorBins.Lightness"/>, at a quarter of the side through a 1 × 1 convolution, hard-encoded and not
/// rebalanced. The halves are the shared NIN CNN.
/// </summary>
/// <param name="Backbone">The whole network: <c>Width</c> is both halves' together (each gets half); <c>Channels</c> records
/// the data's (3: colour only).</param>
/// <param name="Temperature">T of the annealed mean for the coloured
/// images of figures and metrics (as colorization: 0.38).</param>
public sealed record SplitBrainConfig(ConvNetConfig Backbone, double Temperature = 0.38) : ConvNetMethodConfig(Backbone)
{
    /// <summary>Adam at 4e-3 per 256 (1e-3 at batch 64, the common rate for small CNNs;
    /// measured: colorization and split-brain barely move at 1e-3 per 256 in 64 steps), warmup
    /// then cosine, no weight decay: the recipe every pretext task here shares.</summary>
    public override OptimizerConfig Optimizer { get; init; } =
        new(BaseLearningRate: 4e-3, WeightDecay: 0, Beta2: 0.999, WarmupFraction: 0.02);

    /// <summary>CPU scale: two halves of RotNet's tiny NIN (32 + 32 channels) on 32 px colour images (`shapes`).</summary>
    public static SplitBrainConfig Tiny(int imageSize = 32, int channels = 3) =>
        new(ConvNetConfig.Tiny(imageSize, channels));

    public override IPretrainModel Build(BuildContext context) => new SplitBrain(this, context);

    /// <summary>Two half-width networks, one on L and one on ab (§3.1).</summary>
    public override ModelSize? Size() => Half(1).Size() + Half(2).Size();

    /// <summary>One half: half the width, taking <paramref name="channels"/> (1: L, 2: ab).</summary>
    public ConvNetConfig Half(int channels) => Backbone with
    {
        Channels = channels, Width = Backbone.Width / 2, ProbeFeatures = Math.Max(1, Backbone.ProbeFeatures / 2),
    };

    public override void Validate()
    {
        if (Backbone.Channels != 3)
            throw new ResearchKitException($"split-brain: needs colour (RGB) images; "
                + $"this data has {Backbone.Channels} channel(s) (use shapes, cifar10 or an image folder)");
        if (Backbone.Width < 2 || Backbone.Width % 2 != 0)
            throw new ResearchKitException($"split-brain: width (--width) must be even (two halves); got {Backbone.Width}");
        Half(1).Validate();
        if (Backbone.Depth < 3)
            throw new ResearchKitException($"split-brain: blocks (--blocks) must be at least 3 "
                + $"(predictions at a quarter of the side); got {Backbone.Depth}");
        if (!(Temperature > 0) || !double.IsFinite(Temperature))
            throw new ResearchKitException($"split-brain: --temperature must be positive; got {Temperature}");
    }
}

/// <summary>The two halves seen as one backbone: L and ab from the normalised RGB images, each half's features, concatenated
/// block by block (the split-brain representation, §3.2).</summary>
public sealed class SplitBrainBackbone : Backbone
{
    public ConvNet LightnessHalf => lightness;
    public ConvNet ColourHalf => colour;
    readonly ConvNet lightness, colour;
    readonly BuildContext context;

    public SplitBrainBackbone(SplitBrainConfig config, BuildContext context) : base(nameof(SplitBrainBackbone))
    {
        this.context = context;
        lightness = new ConvNet(config.Half(1));
        colour = new ConvNet(config.Half(2));
        RegisterComponents();
    }

    public override int Depth => lightness.Depth;
    public override int FeatureDim => lightness.FeatureDim + colour.FeatureDim;

    /// <summary>Normalised RGB [B, 3, H, W] → (scaled L [B, 1, H, W], scaled ab [B, 2, H, W]) and Lab itself.</summary>
    public (Tensor L, Tensor Ab, Tensor Lab) Inputs(Tensor images)
    {
        var lab = Colorization.Lab(context, images);
        return (LabColor.ScaledLightness(lab), LabColor.ScaledAb(lab), lab);
    }

    public override Tensor Features(Tensor images)
    {
        var (l, ab, _) = Inputs(images);
        return cat([lightness.Features(l), colour.Features(ab)], 1);                                 // B, W
    }

    public override Tensor[] LayerFeatures(Tensor images)
    {
        var (l, ab, _) = Inputs(images);
        return lightness.LayerFeatures(l).Zip(colour.LayerFeatures(ab), (x, y) => cat([x, y], 1)).ToArray();
    }

    public override void FreezeAllBut(int trainableBlocks)
    {
        lightness.FreezeAllBut(trainableBlocks);
        colour.FreezeAllBut(trainableBlocks);
    }
}

/// <summary>What a split-brain forward pass returns: the summed loss, each half's, the ab logits [B, Q_ab, h, w] and the L
/// logits [B, Q_L, h, w] with their targets [B, h, w].</summary>
public sealed record SplitBrainOutput(
    Tensor Loss,
    Tensor AbLoss,
    Tensor LightnessLoss,
    Tensor AbLogits,
    Tensor LightnessLogits,
    Tensor LightnessTarget);

/// <summary>The split-brain autoencoder (<see cref="SplitBrainConfig"/>).</summary>
public sealed class SplitBrain : Module<Tensor, SplitBrainOutput>, IPretrainModel
{
    public SplitBrainConfig Config { get; }
    readonly SplitBrainBackbone backbone;
    readonly Conv2d toAb, toLightness;
    readonly BuildContext context;

    public SplitBrain(SplitBrainConfig config, BuildContext context) : base(nameof(SplitBrain))
    {
        config.Validate();
        Config = config;
        this.context = context;
        backbone = new SplitBrainBackbone(config, context);
        toAb = Conv2d(config.Backbone.Width / 2, ColorBins.Ab.Count, 1);
        toLightness = Conv2d(config.Backbone.Width / 2, ColorBins.Lightness.Count, 1);
        RegisterComponents();
    }

    public Backbone Backbone => backbone;
    public nn.Module Module => this;

    /// <summary>images [B, 3, H, W] (normalised) → both halves' cross-channel classification losses.</summary>
    public override SplitBrainOutput forward(Tensor images)
    {
        var (l, ab, lab) = backbone.Inputs(images);
        var abLogits = toAb.call(backbone.LightnessHalf.FeatureMaps(l)[^1]);                         // B, Q_ab, h, w
        var lLogits = toLightness.call(backbone.ColourHalf.FeatureMaps(ab)[^1]);                     // B, Q_L, h, w
        long side = abLogits.shape[2];
        var abTarget = ColorBins.Ab.Encode(Colorization.AbAt(lab, side));                           // B, h, w
        var lTarget = ColorBins.Lightness.Encode(functional.adaptive_avg_pool2d(lab[.., 0..1], new[] { side, side }));
        var abLoss = functional.cross_entropy(abLogits, abTarget);
        var lLoss = functional.cross_entropy(lLogits, lTarget);
        return new SplitBrainOutput(abLoss + lLoss, abLoss, lLoss, abLogits, lLogits, lTarget);
    }

    public IReadOnlyList<UpdatePhase> Phases() =>
        [new UpdatePhase("loss", (batch, _) => call(batch.Images).Loss, UpdatePhase.TrainableOf(this))];

    /// <summary>Held-out: PSNR of the L → ab half's colouring, and the ab → L half's accuracy over L bins.</summary>
    static EvaluationReport MeasureCrossChannel(EvaluationRequest request)
    {
        var (model, images) = ((SplitBrain)request.Model, request.Images);
        var output = model.call(images);
        return new EvaluationReport(new Dictionary<string, double>
        {
            ["colour_psnr"] =
                Colorization.ColourPsnr(model.context, images, ColorBins.Ab.Decode(output.AbLogits, model.Config.Temperature)),
            ["lightness_accuracy"] = LinearProbe.Accuracy(output.LightnessLogits, output.LightnessTarget),
        });
    }

    static Figure DrawColourings(FigureRequest request)
    {
        var model = (SplitBrain)request.Model;
        var images = request.TestImages(request.Count);
        var ab = ColorBins.Ab.Decode(model.call(images).AbLogits, model.Config.Temperature);
        return Colorization.Colourings(model.context, images, ab,
            $"{request.Count} test images coloured by the L → ab half");
    }

    public static MethodInfo Method { get; } = new("split-brain",
        "Zhang et al., 2017. Split-Brain Autoencoders: Unsupervised Learning by Cross-Channel Prediction",
        typeof(SplitBrainConfig),
        new Dictionary<string, Func<MethodConfig>> { ["tiny"] = () => SplitBrainConfig.Tiny() },
        [
            .. ConvNetMethodConfig.SizeOptions<SplitBrainConfig>("conv blocks in each half", "channels per block, both halves together"),
            MethodOption.Number<SplitBrainConfig>("--temperature", "T of the annealed mean for colourings",
                (c, v) => c with { Temperature = v }),
        ])
    {
        Evaluations = [new MethodEvaluation("cross-channel", "PSNR of the L → ab half's colourings and the ab → L half's accuracy over L bins", MeasureCrossChannel)],
        Figures = [new MethodFigure("colourings",
            "test images in grey, coloured by the L → ab half, and the originals", [], DrawColourings)],
    };
}
