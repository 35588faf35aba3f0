using System.Text.Json.Serialization;
using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Methods;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>How colorization predicts ab (Zhang et al., 2016, §2.1 and Table 2's "L2" row).</summary>
public enum ColorizationLoss
{
    /// <summary>A distribution over quantised ab bins, soft-encoded
    /// targets, class rebalancing: the paper's choice.</summary>
    Classification,
    /// <summary>ab directly under squared error: the baseline the paper finds desaturated.</summary>
    Regression,
}

/// <summary>
/// Colorization (Zhang et al., 2016, "Colorful Image Colorization"): given the L channel of Lab, predict ab. The paper's
/// network is a VGG-style CNN predicting at a quarter of the image side; here the L-only NIN CNN predicts ab through a
/// 1 × 1 convolution on its last map, which is a quarter of the image side too, against ab averaged to that size.
/// Classification (§2.1): ab in bins of 10 (<see cref="ColorBins.Ab"/>), targets soft-encoded over 5 neighbours (σ 5),
/// cross-entropy weighted by class rebalancing (λ = ½, σ = 5, Eq. 3–4) fitted on the training images; decoded by the
/// annealed mean (T = 0.38, Eq. 5). The representation is the network's features of the L channel, so a probe sees
/// grey images whatever the data.
/// </summary>
/// <param name="Backbone">The CNN. Its <c>Channels</c> records the
/// data's (3: colour only); the network itself takes L.</param>
/// <param name="Rebalancing">λ, the uniform share mixed into the colour prior (paper: ½; 1: no rebalancing).</param>
/// <param name="Temperature">T of the annealed mean that turns the
/// predicted distribution into one colour (paper: 0.38).</param>
/// <param name="Weights">The rebalancing weight of each ab bin, fitted on the training images (<see cref="ForData"/>) and
/// recorded in config.json; null: all 1.</param>
public sealed record ColorizationConfig(ConvNetConfig Backbone, ColorizationLoss Loss = ColorizationLoss.Classification,
    double Rebalancing = 0.5, double Temperature = 0.38,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] float[]? Weights = null) : ConvNetMethodConfig(Backbone)
{
    /// <summary>Images the rebalancing weights are fitted on.</summary>
    public const int WeightImages = 2000;

    /// <summary>Adam at 4e-3 per 256 (1e-3 at batch 64, the common rate for small CNNs;
    /// measured: colorization and split-brain barely move at 1e-3 per 256 in 64 steps),
    /// warmup then cosine, no weight decay: the recipe every pretext task here shares (the
    /// paper: Adam, 3e-5, β = 0.9, 0.99, weight decay 1e-3, at ImageNet scale).</summary>
    public override OptimizerConfig Optimizer { get; init; } =
        new(BaseLearningRate: 4e-3, WeightDecay: 0, Beta2: 0.999, WarmupFraction: 0.02);

    /// <summary>CPU scale: RotNet's tiny NIN on 32 px colour images (`shapes`).</summary>
    public static ColorizationConfig Tiny(int imageSize = 32, int channels = 3) =>
        new(ConvNetConfig.Tiny(imageSize, channels));

    /// <summary>Fits the rebalancing weights on the first <see cref="WeightImages"/> training images, at the resolution the
    /// loss sees (a quarter of the side).</summary>
    public override MethodConfig ForData(ImageDataset train, Normalization normalization)
    {
        Validate();
        if (Loss != ColorizationLoss.Classification) return this with { Weights = null };
        using var scope = NewDisposeScope();
        var pixels = Normalization.ToUnit(train.Images[..(int)Math.Min(WeightImages, train.Count)], CPU);
        var ab = functional.avg_pool2d(LabColor.FromRgb(pixels)[.., 1..3], 4);
        return this with { Weights = ColorBins.Ab.RebalancingWeights(ColorBins.Ab.Encode(ab), Rebalancing) };
    }

    public override IPretrainModel Build(BuildContext context) => new Colorization(this, context);

    public override void Validate()
    {
        if (Backbone.Channels != 3)
            throw new ResearchKitException($"colorization: needs colour (RGB) images; "
                + $"this data has {Backbone.Channels} channel(s) (use shapes, cifar10 or an image folder)");
        (Backbone with { Channels = 1 }).Validate();
        if (Backbone.Depth < 3)
            throw new ResearchKitException($"colorization: blocks (--blocks) must be at least 3 "
                + $"(ab is predicted at a quarter of the side); got {Backbone.Depth}");
        if (!Enum.IsDefined(Loss))
            throw new ResearchKitException($"colorization: --loss must be classification or regression; got {Loss}");
        if (Rebalancing is <= 0 or > 1 || double.IsNaN(Rebalancing))
            throw new ResearchKitException($"colorization: --rebalancing must be in (0, 1]; got {Rebalancing}");
        if (!(Temperature > 0) || !double.IsFinite(Temperature))
            throw new ResearchKitException($"colorization: --temperature must be positive; got {Temperature}");
        if (Weights is { } w && (w.Length != ColorBins.Ab.Count || w.Any(x => !(x > 0) || !float.IsFinite(x))))
            throw new ResearchKitException(
                $"colorization: weights must be {ColorBins.Ab.Count} positive numbers (one per ab bin); got {w.Length}");
    }
}

/// <summary>What a colorization forward pass returns: the loss and the
/// predicted ab [B, 2, h, w] in Lab units at a quarter of the side.</summary>
public sealed record ColorizationOutput(Tensor Loss, Tensor Ab);

/// <summary>Colorization (<see cref="ColorizationConfig"/>): the L channel in, ab out.</summary>
public sealed class Colorization : Module<Tensor, ColorizationOutput>, IPretrainModel
{
    public ColorizationConfig Config { get; }
    readonly PreprocessedBackbone backbone;
    readonly ConvNet network;
    readonly Conv2d head;
    readonly BuildContext context;

    public Colorization(ColorizationConfig config, BuildContext context) : base(nameof(Colorization))
    {
        config.Validate();
        Config = config;
        this.context = context;
        network = new ConvNet(config.Backbone with { Channels = 1 });
        backbone = new PreprocessedBackbone(network, images => LabColor.ScaledLightness(Lab(context, images)));
        head = Conv2d(config.Backbone.Width, config.Loss == ColorizationLoss.Classification ? ColorBins.Ab.Count : 2, 1);
        RegisterComponents();
    }

    public Backbone Backbone => backbone;
    public nn.Module Module => this;

    /// <summary>Normalised RGB images [B, 3, H, W] → Lab [B, 3, H, W], through the run's normalisation.</summary>
    public static Tensor Lab(BuildContext context, Tensor images) => LabColor.FromRgb(context.ToPixels(images).clamp(0, 1));

    /// <summary>Lab [B, 3, H, W] → ab averaged to <paramref name="side"/>²
    /// [B, 2, side, side]: the targets at the prediction's size.</summary>
    public static Tensor AbAt(Tensor lab, long side) => functional.adaptive_avg_pool2d(lab[.., 1..3], new[] { side, side });

    /// <summary>images [B, 3, H, W] (normalised) → loss and predicted ab.</summary>
    public override ColorizationOutput forward(Tensor images)
    {
        var lab = Lab(context, images);
        var output = head.call(network.FeatureMaps(LabColor.ScaledLightness(lab))[^1]);                // B, Q or 2, h, w
        var target = AbAt(lab, output.shape[2]);                                                         // B, 2, h, w
        if (Config.Loss == ColorizationLoss.Regression)
            return new ColorizationOutput(functional.mse_loss(output, target / LabColor.AbScale), output * LabColor.AbScale);
        var perPixel = -(ColorBins.Ab.SoftEncode(target) * output.log_softmax(1)).sum(1);               // B, h, w
        if (Config.Weights is { } w)
            perPixel = perPixel
                * DeviceCopy.Of(w, [w.Length], images.device)[ColorBins.Ab.Encode(target)];   // v(Z): the target's bin
        return new ColorizationOutput(perPixel.mean(), ColorBins.Ab.Decode(output, Config.Temperature));
    }

    public IReadOnlyList<UpdatePhase> Phases() =>
        [new UpdatePhase("loss", (batch, _) => call(batch.Images).Loss, UpdatePhase.TrainableOf(this))];

    /// <summary>PSNR (dB) of held-out images coloured from their
    /// own L and the predicted ab, against the originals.</summary>
    static EvaluationReport MeasureColouring(EvaluationRequest request)
    {
        var model = (Colorization)request.Model;
        return EvaluationReport.Of("colour_psnr", ColourPsnr(model.context, request.Images, model.call(request.Images).Ab));
    }

    /// <summary>PSNR of <paramref name="images"/>' L with <paramref name="ab"/>
    /// (any side) against the images, in pixels.</summary>
    public static double ColourPsnr(BuildContext context, Tensor images, Tensor ab)
    {
        var lab = Lab(context, images);
        return Reconstruction.Psnr(Reconstruction.Mse(LabColor.Compose(lab[.., 0..1], ab), LabColor.ToRgb(lab)));
    }

    /// <summary>The rows of a colourings figure: grey (L alone),
    /// coloured with <paramref name="ab"/>, and the original.</summary>
    public static Figure Colourings(BuildContext context, Tensor images, Tensor ab, string caption)
    {
        var lab = Lab(context, images);
        var lightness = lab[.., 0..1];
        return new Figure([("grey", LabColor.Compose(lightness, zeros_like(ab))),
            ("coloured", LabColor.Compose(lightness, ab)),
            ("original", LabColor.ToRgb(lab))], caption);
    }

    static Figure DrawColourings(FigureRequest request)
    {
        var model = (Colorization)request.Model;
        var images = request.TestImages(request.Count);
        return Colourings(model.context, images, model.call(images).Ab,
            $"{request.Count} test images coloured from their L channel ({EnumNames.Of(model.Config.Loss)})");
    }

    public static MethodInfo Method { get; } = new("colorization", "Zhang et al., 2016. Colorful Image Colorization",
        typeof(ColorizationConfig),
        new Dictionary<string, Func<MethodConfig>> { ["tiny"] = () => ColorizationConfig.Tiny() },
        [
            MethodOption.Choice<ColorizationConfig, ColorizationLoss>("--loss", "how ab is predicted",
                (c, v) => c with { Loss = v }),
            MethodOption.Number<ColorizationConfig>("--rebalancing", "λ of class rebalancing (paper: 0.5; 1: none)",
                (c, v) => c with { Rebalancing = v }),
            MethodOption.Number<ColorizationConfig>("--temperature", "T of the annealed mean (paper: 0.38)",
                (c, v) => c with { Temperature = v }),
            .. ConvNetMethodConfig.SizeOptions<ColorizationConfig>("conv blocks", "channels per block"),
        ])
    {
        Evaluations = [new MethodEvaluation("colouring", "PSNR of test images coloured from their own L", MeasureColouring)],
        Figures = [new MethodFigure("colourings",
            "test images in grey, coloured by the model, and the originals", [], DrawColourings)],
    };
}
