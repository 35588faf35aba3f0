using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Layers;
using ResearchKit.Methods;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>Which backbone a supervised run trains.</summary>
public enum SupervisedBackbone { Cnn, Vit }

/// <summary>
/// Supervised training: cross-entropy on the labels through a backbone and a linear head. Not a paper's method but the
/// reference every self-supervised result is read against ("training from scratch"), and the teacher or source network
/// later methods load (Go-Wide-Then-Narrow, robust transfer). Recipes as the backbones' papers train them: the NIN CNN with
/// RotNet's SGD (momentum 0.9, Nesterov, weight decay 5e-4, base lr 0.2 per 256), the ViT with AdamW (β = 0.9, 0.999,
/// weight decay 0.05, base lr 1e-3 per 256, as DeiT) and label smoothing 0.1 (DeiT); warmup then cosine for both.
/// </summary>
/// <param name="Classes">The labels' classes: set from the training data before a run (<see cref="ForData"/>) and recorded; the
/// presets' 10 (MNIST, Fashion-MNIST, CIFAR-10) serve `bench`, which times random images.</param>
/// <param name="LabelSmoothing">Share of the target spread over all classes (Szegedy et al., 2016); 0 for the CNN.</param>
/// <param name="Adversarial">PGD adversarial training (Madry et al., 2018, §2: min over weights of the max over the ε-ball of the
/// loss): each batch is replaced by its PGD attack under this threat model before the update; null: standard training. Left
/// out of the JSON when null, so configurations from before it keep their keys.</param>
public sealed record SupervisedConfig(SupervisedBackbone Backbone, ConvNetConfig Cnn, ViTConfig Vit, int Classes = 10, double LabelSmoothing = 0,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    ThreatModel? Adversarial = null)
    : MethodConfig
{
    static readonly OptimizerConfig CnnRecipe = new(OptimizerKind.Sgd, BaseLearningRate: 0.2, WeightDecay: 5e-4, Momentum: 0.9, Nesterov: true, WarmupFraction: 0.02);
    static readonly OptimizerConfig VitRecipe = new(BaseLearningRate: 1e-3, WeightDecay: 0.05, Beta2: 0.999, WarmupFraction: 0.05);

    public override OptimizerConfig Optimizer { get; init; } = Backbone == SupervisedBackbone.Cnn ? CnnRecipe : VitRecipe;

    /// <summary>CPU scale, the CNN: RotNet's tiny NIN (its own comparisons use the same network), base lr 0.1.</summary>
    public static SupervisedConfig Tiny(int imageSize = 28, int channels = 1) =>
        new(SupervisedBackbone.Cnn, ConvNetConfig.Tiny(imageSize, channels), ViTConfig.Tiny(imageSize, channels)) { Optimizer = CnnRecipe with { BaseLearningRate = 0.1 } };

    /// <summary>CPU scale, a wide teacher: the tiny CNN at twice its width (128 channels), for Go-Wide-Then-Narrow's students.</summary>
    public static SupervisedConfig Wide(int imageSize = 28, int channels = 1)
    {
        var tiny = Tiny(imageSize, channels);
        return tiny with { Cnn = tiny.Cnn with { Width = 128 } };
    }

    /// <summary>CPU scale, the ViT: MAE's tiny encoder.</summary>
    public static SupervisedConfig TinyVit(int imageSize = 28, int channels = 1) =>
        new(SupervisedBackbone.Vit, ConvNetConfig.Tiny(imageSize, channels), ViTConfig.Tiny(imageSize, channels), LabelSmoothing: 0.1);

    public override MethodConfig ForInput(int imageSize, int channels) => this with
    {
        Cnn = Cnn with { ImageSize = imageSize, Channels = channels },
        Vit = Vit with { ImageSize = imageSize, Channels = channels },
    };

    public override (int ImageSize, int Channels) InputShape() =>
        Backbone == SupervisedBackbone.Cnn ? (Cnn.ImageSize, Cnn.Channels) : (Vit.ImageSize, Vit.Channels);

    /// <summary>Records the number of classes, which sizes the head.</summary>
    public override MethodConfig ForData(ImageDataset train, Normalization normalization) => this with { Classes = train.ClassCount };

    public override void Validate()
    {
        if (!Enum.IsDefined(Backbone)) throw new ResearchKitException($"supervised: backbone must be cnn or vit; got {Backbone}");
        if (Backbone == SupervisedBackbone.Cnn) Cnn.Validate(); else Vit.Validate();
        if (Classes < 2) throw new ResearchKitException($"supervised: needs labelled data with at least 2 classes; got {Classes}");
        if (LabelSmoothing is < 0 or >= 1 || double.IsNaN(LabelSmoothing))
            throw new ResearchKitException($"supervised: --label-smoothing must be in [0, 1); got {LabelSmoothing}");
        Adversarial?.Validate("supervised: --adversarial");
        if (Adversarial is { Restarts: not 1 }) throw new ResearchKitException("supervised: --adversarial: restarts apply to evaluation, not training; leave them out");
    }

    public override IPretrainModel Build(BuildContext context) => new Supervised(this, context);

    public override ModelSize? Size() => Backbone == SupervisedBackbone.Cnn
        ? Cnn.Size() + ModelSize.Linear(Cnn.Width, Classes) : Vit.Size() + ModelSize.Linear(Vit.Dim, Classes);
}

/// <summary>A backbone and a linear head trained on the labels (<see cref="SupervisedConfig"/>). The preset picks the backbone
/// and its recipe (tiny: the CNN, wide: the CNN at twice the width, tiny-vit: the ViT); the options size it.</summary>
public sealed class Supervised : Module<Tensor, Tensor>, IPretrainModel
{
    public static MethodInfo Method { get; } = new("supervised", "Supervised training from scratch (cross-entropy on the labels): the reference, teacher and source",
        typeof(SupervisedConfig),
        new Dictionary<string, Func<MethodConfig>>
        {
            ["tiny"] = () => SupervisedConfig.Tiny(),
            ["tiny-vit"] = () => SupervisedConfig.TinyVit(),
            ["wide"] = () => SupervisedConfig.Wide(),
        },
        [
            MethodOption.Integer<SupervisedConfig>("--blocks", "blocks of the backbone (CNN: conv blocks; ViT: transformer blocks)",
                (c, v) => c.Backbone == SupervisedBackbone.Cnn ? c with { Cnn = c.Cnn with { Depth = v } } : c with { Vit = c.Vit with { Depth = v } }),
            MethodOption.Integer<SupervisedConfig>("--width", "CNN channels per block, or ViT width",
                (c, v) => c.Backbone == SupervisedBackbone.Cnn ? c with { Cnn = c.Cnn with { Width = v } } : c with { Vit = c.Vit with { Dim = v } }),
            MethodOption.Number<SupervisedConfig>("--label-smoothing", "share of the target spread over all classes (DeiT: 0.1)", (c, v) => c with { LabelSmoothing = v }),
            MethodOption.Text<SupervisedConfig>("--adversarial", "PGD adversarial training, NORM:EPS[,steps:K][,step:A] in [0, 1] pixels (e.g. linf:8/255,steps:7)",
                (c, v) => c with { Adversarial = ThreatModel.Parse(v, "--adversarial") }),
        ])
    {
        Evaluations =
        [
            new MethodEvaluation("classifier", "its own head on labelled test images: accuracy, NLL and expected calibration error (15 bins)",
                MeasureClassifier),
            new MethodEvaluation("ood", "out-of-distribution detection by maximum softmax probability: AUROC and FPR at 95% TPR",
                MeasureOod) { Needs = ["ood"] },
            new MethodEvaluation("robustness", $"accuracy under PGD ({RobustnessSteps} steps, {RobustnessRestarts} restarts) at L∞ ε 0.02, 0.05, 0.1 and " +
                "L2 ε 0.5, 1, 2, and at the training threat model attacked harder", MeasureRobustness) { OnRequest = true },
        ],
    };

    /// <summary>Probabilities [N, Classes] of normalised images, in batches.</summary>
    Tensor Probabilities(Tensor images) => ClassifierMetrics.Probabilities(call, images);

    /// <summary>Test accuracy, negative log-likelihood and ECE (Guo et al., 2017) with the reliability diagram's points.</summary>
    static EvaluationReport MeasureClassifier(EvaluationRequest request) =>
        ClassifierMetrics.Report(((Supervised)request.Model).Probabilities(request.Images), request.Labels);

    /// <summary>Maximum softmax probability as the in-distribution score (Hendrycks &amp; Gimpel, 2017): test images against the
    /// "ood" data set's.</summary>
    static EvaluationReport MeasureOod(EvaluationRequest request)
    {
        var model = (Supervised)request.Model;
        double[] Scores(Tensor images) => model.Probabilities(images).amax(1).to_type(ScalarType.Float64).cpu().data<double>().ToArray();
        double[] inScores = Scores(request.Images), outScores = Scores(request.ExtraImages("ood"));
        return new EvaluationReport(new Dictionary<string, double>
        {
            ["ood_auroc"] = OodDetection.Auroc(inScores, outScores),
            ["ood_fpr_at_95_tpr"] = OodDetection.FalsePositiveRateAt95(inScores, outScores),
        });
    }

    /// <summary>The robustness evaluation's attack: stronger than a 7-step training attack (Madry et al. evaluate with 20 steps
    /// and restarts).</summary>
    public const int RobustnessSteps = 20, RobustnessRestarts = 2;

    /// <summary>Robust accuracy at <see cref="Pgd.Budgets"/>, and for an adversarially trained model at its own threat model
    /// attacked harder (<see cref="ThreatModel.Stronger"/>) as robust_accuracy_trained.</summary>
    static EvaluationReport MeasureRobustness(EvaluationRequest request)
    {
        var model = (Supervised)request.Model;
        var scalars = Pgd.RobustAccuracies(model.call, request, RobustnessSteps, RobustnessRestarts);
        if (model.Config.Adversarial is { } threat) scalars["robust_accuracy_trained"] = Pgd.RobustAccuracy(model.call, request, threat.Stronger());
        return new EvaluationReport(scalars);
    }

    public SupervisedConfig Config { get; }
    readonly Backbone backbone;
    readonly Linear head;
    readonly BuildContext context;

    public Supervised(SupervisedConfig config, BuildContext context) : base(nameof(Supervised))
    {
        config.Validate();
        Config = config;
        this.context = context;
        backbone = config.Backbone == SupervisedBackbone.Cnn ? new ConvNet(config.Cnn) : new VisionTransformer(config.Vit);
        head = Linear(backbone.FeatureDim, config.Classes);
        RegisterComponents();
    }

    public Backbone Backbone => backbone;
    public nn.Module Module => this;

    /// <summary>The linear head on the pooled features (a student's head can start from a teacher's).</summary>
    public Linear Head => head;

    /// <summary>Class logits [B, Classes] for images [B, C, H, W] (normalised).</summary>
    public override Tensor forward(Tensor images) => Mixed.Head(head, backbone.Features(images));

    /// <summary>One phase: cross-entropy on the labels (of the PGD-attacked batch with --adversarial); the backbone's own
    /// exemptions from weight decay (a ViT's [CLS]).</summary>
    public IReadOnlyList<UpdatePhase> Phases() =>
    [
        new UpdatePhase("loss", (batch, draws) => functional.cross_entropy(call(Adversarial(batch, draws)), batch.Labels, label_smoothing: Config.LabelSmoothing),
            UpdatePhase.TrainableOf(this), NoWeightDecay: name => name.StartsWith("backbone.") && backbone.NoWeightDecay.Contains(name["backbone.".Length..])),
    ];

    /// <summary>
    /// The batch's images, or with <see cref="SupervisedConfig.Adversarial"/> their PGD attack (Madry et al., 2018, §2's inner
    /// maximisation) in pixel space, so ε is in [0, 1] pixels whatever the normalisation. The attack runs in eval mode, as
    /// the robustness library's does, so its steps do not move BatchNorm's running statistics; it leaves no weight gradients.
    /// </summary>
    Tensor Adversarial(Batch batch, Generator draws)
    {
        if (Config.Adversarial is not { } threat) return batch.Images;
        eval();
        try
        {
            var attacked = Pgd.Attack(x => call(context.FromPixels(x)), context.ToPixels(batch.Images), batch.Labels, threat.Norm, threat.Epsilon,
                threat.Steps, draws, threat.StepSize);
            return context.FromPixels(attacked).detach();
        }
        finally { train(); }
    }
}
