using ResearchKit.Layers;
using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>
/// RotNet configuration (Gidaris et al., 2018, "Unsupervised Representation Learning by Predicting Image
/// Rotations"). Defaults are the paper's CIFAR-10 setting: a NIN backbone of 4 conv blocks, 192 channels, and SGD
/// with momentum 0.9, weight decay 5e-4, lr 0.1 at batch 128 (base 0.2 per 256). Shortcuts, said plainly: the
/// paper drops the rate in steps (×0.2 at epochs 30, 60, 80) where the presets keep warmup + cosine (the paper's is
/// <c>Schedule = ScheduleConfig.Step(0.2, 0.3, 0.6, 0.8)</c>), and it decays every parameter where the shared
/// optimizer exempts 1-D ones (biases, BatchNorm scales).
/// </summary>
public sealed record RotNetConfig(ConvNetConfig Backbone) : ConvNetMethodConfig(Backbone)
{
    public override OptimizerConfig Optimizer { get; init; } =
        new(OptimizerKind.Sgd, BaseLearningRate: 0.2, WeightDecay: 5e-4, Momentum: 0.9, Nesterov: true, WarmupFraction: 0.02);

    public static RotNetConfig Paper => new(new ConvNetConfig());

    /// <summary>CPU scale: the tiny NIN (width 64, 4 blocks); SGD base lr 0.1 (measured stable at batch 128–256 on Fashion-MNIST).</summary>
    public static RotNetConfig Tiny(int imageSize = 28, int channels = 1) =>
        new(ConvNetConfig.Tiny(imageSize, channels)) { Optimizer = Paper.Optimizer with { BaseLearningRate = 0.1 } };

    public override IPretrainModel Build(BuildContext context) => new RotNet(this);

    public override void Validate()
    {
        // Its own bound first: the backbone's (at least 1) would name the wrong minimum.
        if (Backbone.Depth < 2) throw new ResearchKitException($"rotnet: blocks (--blocks) must be at least 2; got {Backbone.Depth}");
        Backbone.Validate();
    }
}

/// <summary>What a RotNet forward pass returns: the loss, the 4-way logits [4B, 4] and the rotation labels [4B].</summary>
public sealed record RotNetOutput(Tensor Loss, Tensor Logits, Tensor Labels);

/// <summary>
/// RotNet: every image is shown at 0°, 90°, 180° and 270° in the same batch (the paper's best variant, §3.1)
/// and the backbone plus a linear head classify which rotation was applied.
/// </summary>
public sealed class RotNet : Module<Tensor, RotNetOutput>, IPretrainModel
{
    public static MethodInfo Method { get; } = new("rotnet", "Gidaris et al., 2018. Unsupervised Representation Learning by Predicting Image Rotations",
        typeof(RotNetConfig),
        new Dictionary<string, Func<MethodConfig>>
        {
            ["tiny"] = () => RotNetConfig.Tiny(),
            ["nin"] = () => RotNetConfig.Paper,
        },
        [
            .. ConvNetMethodConfig.SizeOptions<RotNetConfig>("conv blocks in the backbone (paper: 3–5, best 4)", "channels per block (paper: 192)"),
        ])
    {
        Evaluations = [new MethodEvaluation("rotation", "rotation-prediction accuracy on test images (the pretext task; chance 0.25)", MeasureRotation)],
    };

    public const int Rotations = 4;

    public RotNetConfig Config { get; }
    readonly ConvNet backbone;
    readonly Linear head;

    public RotNet(RotNetConfig config) : base(nameof(RotNet))
    {
        config.Validate();
        Config = config;
        backbone = new ConvNet(config.Backbone);
        head = Linear(config.Backbone.Width, Rotations);
        RegisterComponents();
    }

    public Backbone Backbone => backbone;
    public nn.Module Module => this;

    public IReadOnlyList<UpdatePhase> Phases() =>
        [new UpdatePhase("loss", (batch, _) => call(batch.Images).Loss, UpdatePhase.TrainableOf(this))];

    /// <summary>images [B, C, H, W] → [4B, C, H, W]: all images at 0°, then all at 90°, 180°, 270° (counter-clockwise), and labels [4B].</summary>
    public static (Tensor Images, Tensor Labels) RotateAll(Tensor images)
    {
        long B = images.shape[0];
        var rotated = cat(Enumerable.Range(0, Rotations).Select(k => images.rot90(k, (2, 3))).ToArray(), 0);
        var labels = arange(Rotations, dtype: ScalarType.Int64, device: images.device).repeat_interleave(B);
        return (rotated, labels);
    }

    public override RotNetOutput forward(Tensor images)
    {
        var (rotated, labels) = RotateAll(images);
        var logits = Mixed.Head(head, backbone.Features(rotated));                       // 4B, 4
        return new RotNetOutput(functional.cross_entropy(logits, labels), logits, labels);
    }

    /// <summary>Rotation-prediction accuracy on held-out images (the pretext task itself; chance 0.25).</summary>
    static EvaluationReport MeasureRotation(EvaluationRequest request)
    {
        var output = ((RotNet)request.Model).call(request.Images);
        double accuracy = output.Logits.argmax(1).eq(output.Labels).to_type(ScalarType.Float64).mean().item<double>();
        return EvaluationReport.Of("rotation_accuracy", accuracy);
    }
}
