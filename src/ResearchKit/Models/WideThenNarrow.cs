using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Layers;
using ResearchKit.Methods;
using ResearchKit.Runs;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>How a thin student learns from its wide teacher.</summary>
public enum StudentImitation
{
    /// <summary>Go-Wide-Then-Narrow: block-by-block imitation of the teacher's block outputs through linear maps, then
    /// fine-tuning on the labels.</summary>
    Layerwise,

    /// <summary>Knowledge distillation (Hinton et al., 2015): the labels and the teacher's softened outputs, at every step.</summary>
    Logits,
}

/// <summary>
/// Go Wide, Then Narrow (Zhou et al., ICML 2020, §3): a deep-thin network S is trained from a wide network B of the same depth.
/// <list type="number">
/// <item>B is trained to convergence: here a `supervised` CNN run (preset wide), the <see cref="Teacher"/> folder, loaded frozen.</item>
/// <item>S̄ is S with a pair of bias-free linear maps after each block: M_i,1 widens S's block output to B's width, M_i,2
/// narrows it back for the next block. Each prefix of S̄ learns to imitate the same prefix of B, one block after another:
/// block i's loss is the mean squared error between M_i,1 of S̄'s block-i output and B's block-i output, with the blocks
/// before it fixed. The comparison is after each block's pooling (NIN pools after blocks 1 and 2), so that a map commutes
/// with everything between it and the next block's first convolution.</item>
/// <item>The maps are folded away: M_i,2·M_i,1 is a 1×1 map of S's width, merged into block i + 1's first convolution, and
/// the last M_i,1 is merged with B's head into S's head. Folding is exact (no bias, so zero padding commutes); S then has
/// its plain architecture and is fine-tuned on the labels.</item>
/// </list>
/// <see cref="Imitation"/> = logits trains the same student by knowledge distillation instead, the usual baseline:
/// (1 − w)·CE + w·T²·KL(softmax(B/T) ‖ softmax(S/T)) (Hinton et al., 2015, §2).
/// The budget: every student takes the run's steps on the same batches (epochs × batches per epoch), whatever its stages;
/// stage-2 steps count like any other, though they are cheaper (the fixed prefix runs without gradients). The teacher's
/// own training is a cost KD and GWTN share, reported apart.
/// </summary>
/// <param name="Backbone">The student: the CNN at the student's width, of the teacher's depth.</param>
/// <param name="Teacher">The teacher's run folder (a supervised CNN of the same depth, trained on data normalised the same way).</param>
/// <param name="TeacherWidth">The teacher's width, read from its folder when the run is configured (0: not yet read), so a
/// trained student is rebuilt without its teacher.</param>
/// <param name="ImitationFraction">Share of the run's steps spent in stage 2, split equally among the blocks; the rest fine-tunes.</param>
/// <param name="Temperature">T, the distillation temperature (logits imitation).</param>
/// <param name="DistillWeight">w, the weight of the distillation term against cross-entropy (logits imitation).</param>
public sealed record GwtnConfig(ConvNetConfig Backbone, string Teacher = "", int TeacherWidth = 0, int Classes = 10,
    StudentImitation Imitation = StudentImitation.Layerwise, double ImitationFraction = 0.5, double Temperature = 4,
    double DistillWeight = 0.9) : ConvNetMethodConfig(Backbone)
{
    /// <summary>Fine-tuning and distillation train as the teacher did: the supervised CNN's SGD recipe at the tiny preset's rate.</summary>
    public override OptimizerConfig Optimizer { get; init; } = SupervisedConfig.Tiny().Optimizer;

    /// <summary>Stage 2's optimizer: Adam at 1e-3, no weight decay, warmup then cosine within each block's window. A regression
    /// onto activations whose scale differs from block to block, which Adam's per-weight step sizes do not mind.</summary>
    public OptimizerConfig ImitationOptimizer { get; init; } =
        new(BaseLearningRate: 1e-3, WeightDecay: 0, Beta2: 0.999, WarmupFraction: 0.05) { AbsoluteLearningRate = true };

    /// <summary>CPU scale: the tiny CNN at width 32, a quarter of the supervised wide preset's 128.</summary>
    public static GwtnConfig Tiny(int imageSize = 28, int channels = 1) => new(ConvNetConfig.Tiny(imageSize, channels) with { Width = 32 });

    public override MethodConfig ForData(ImageDataset train, Normalization normalization) =>
        this with { Classes = train.ClassCount, TeacherWidth = CheckTeacher(normalization).Cnn.Width };

    public override IEnumerable<FrozenDependency> FrozenDependencies() => [FrozenDependency.Run("teacher", Teacher)];

    /// <summary>The teacher's configuration, refused in one line unless it is a supervised CNN of this depth and input, trained
    /// on data normalised as <paramref name="normalization"/> (null: not checked).</summary>
    public SupervisedConfig CheckTeacher(Normalization? normalization = null)
    {
        var run = Pretraining.ReadConfig(Teacher);
        if (run.Method is not SupervisedConfig { Backbone: SupervisedBackbone.Cnn } teacher)
            throw new ResearchKitException($"gwtn: --teacher {Teacher}: expected a supervised CNN run (pretrain --method supervised --preset wide); " +
                $"got {MethodRegistry.Of(run.Method).Name}");
        if (teacher.Cnn.Depth != Backbone.Depth)
            throw new ResearchKitException($"gwtn: --teacher {Teacher} has {teacher.Cnn.Depth} blocks; the student has {Backbone.Depth} (--blocks): the depths must match");
        if (teacher.Cnn.WithoutBatchNorm != Backbone.WithoutBatchNorm)
            throw new ResearchKitException($"gwtn: --teacher {Teacher}: its blocks {(teacher.Cnn.WithoutBatchNorm ? "have no" : "have")} BatchNorm; the student's must match");
        if (normalization is not null && (!run.Normalization.Mean.SequenceEqual(normalization.Mean) || !run.Normalization.Std.SequenceEqual(normalization.Std)))
            throw new ResearchKitException($"gwtn: --teacher {Teacher} was trained on {run.Dataset}, normalised otherwise than this run's data: " +
                "train the teacher on the student's data set");
        return teacher;
    }

    public override void Validate()
    {
        Backbone.Validate();
        if (string.IsNullOrWhiteSpace(Teacher)) throw new ResearchKitException("gwtn: --teacher FOLDER is required (a run of pretrain --method supervised --preset wide)");
        if (TeacherWidth < 0) throw new ResearchKitException($"gwtn: the teacher's width must be positive; got {TeacherWidth}");
        if (Classes < 2) throw new ResearchKitException($"gwtn: needs labelled data with at least 2 classes; got {Classes}");
        if (!Enum.IsDefined(Imitation)) throw new ResearchKitException($"gwtn: --imitation must be layerwise or logits; got {Imitation}");
        if (ImitationFraction is <= 0 or >= 1 || double.IsNaN(ImitationFraction))
            throw new ResearchKitException($"gwtn: --imitation-fraction must be in (0, 1); got {ImitationFraction}");
        if (!(Temperature > 0) || !double.IsFinite(Temperature)) throw new ResearchKitException($"gwtn: --temperature must be positive; got {Temperature}");
        if (DistillWeight is < 0 or > 1 || double.IsNaN(DistillWeight)) throw new ResearchKitException($"gwtn: --distill-weight must be in [0, 1]; got {DistillWeight}");
        ImitationOptimizer.Validate("gwtn: imitation optimizer");
    }

    public override IPretrainModel Build(BuildContext context) => new Gwtn(this, context);

    /// <summary>The student and its head; for layerwise imitation also S̄'s blocks and the maps (the teacher is not the model's).</summary>
    public override ModelSize? Size()
    {
        var student = Backbone.Size() + ModelSize.Linear(Backbone.Width, Classes);
        if (Imitation != StudentImitation.Layerwise) return student;
        double maps = (2 * Backbone.Depth - 1.0) * Backbone.Width * Math.Max(TeacherWidth, 1);
        return student + Backbone.Size() + ModelSize.Table(maps);
    }
}

/// <summary>The thin student of <see cref="GwtnConfig"/>: S (what evaluation probes and fine-tunes) and its head, and for
/// layerwise imitation S̄'s blocks and the widening and narrowing maps, trained in stages that <see cref="Phases"/> lays out.</summary>
public sealed class Gwtn : Module<Tensor, Tensor>, IPretrainModel
{
    public GwtnConfig Config { get; }
    readonly ConvNet student;
    readonly Linear head;
    readonly ConvNet? imitator;                              // S̄'s blocks, folded into the student when fine-tuning starts
    readonly ModuleList<Conv2d>? widen, narrow;              // M_i,1 after every block; M_i,2 after all but the last
    readonly BuildContext context;

    public Gwtn(GwtnConfig config, BuildContext context) : base(nameof(Gwtn))
    {
        config.Validate();
        Config = config;
        this.context = context;
        student = new ConvNet(config.Backbone);
        head = Linear(student.FeatureDim, config.Classes);
        if (config.Imitation == StudentImitation.Layerwise)
        {
            int thin = config.Backbone.Width, wide = config.TeacherWidth > 0 ? config.TeacherWidth : config.CheckTeacher().Cnn.Width;
            imitator = new ConvNet(config.Backbone);
            widen = new ModuleList<Conv2d>(Enumerable.Range(0, config.Backbone.Depth).Select(_ => Conv2d(thin, wide, 1, bias: false)).ToArray());
            narrow = new ModuleList<Conv2d>(Enumerable.Range(0, config.Backbone.Depth - 1).Select(_ => Conv2d(wide, thin, 1, bias: false)).ToArray());
        }
        RegisterComponents();
    }

    public Backbone Backbone => student;
    public nn.Module Module => this;

    /// <summary>Class logits [B, Classes] of the student for normalised images.</summary>
    public override Tensor forward(Tensor images) => Mixed.Head(head, student.Features(images));

    /// <summary>The frozen teacher, read from its folder on first use (evaluating a trained student does not need it).</summary>
    Supervised Teacher => context.Dependencies.Run(Config.Teacher, "gwtn: --teacher", context.ImageSize, context.Channels) as Supervised
        ?? throw new ResearchKitException($"gwtn: --teacher {Config.Teacher}: expected a supervised run");

    ConvNet TeacherBlocks => (ConvNet)Teacher.Backbone;

    /// <summary>
    /// Logits imitation: one phase, distillation at every step. Layerwise: one imitation phase per block, in sequence over
    /// <see cref="GwtnConfig.ImitationFraction"/> of the run (its loss is that block's imitation error), then fine-tuning of
    /// the folded student on the labels for the rest.
    /// </summary>
    public IReadOnlyList<UpdatePhase> Phases()
    {
        var studentParameters = Named("student.", student).Concat(Named("head.", head)).ToList();
        if (Config.Imitation == StudentImitation.Logits) return [new UpdatePhase("loss", (batch, _) => DistillationLoss(batch), studentParameters)];
        int depth = Config.Backbone.Depth;
        double share = Config.ImitationFraction / depth;
        var phases = Enumerable.Range(0, depth).Select(block => new UpdatePhase($"imitate_{block + 1}", (batch, _) => ImitationLoss(block, batch.Images),
            [.. ImitationParameters(block)], Config.ImitationOptimizer, Window: StepWindow.Fraction(block * share, (block + 1) * share))).ToList();
        phases.Add(new UpdatePhase("fine_tune", (batch, _) => functional.cross_entropy(call(batch.Images), batch.Labels), studentParameters,
            Window: StepWindow.Fraction(Config.ImitationFraction, 1), Begin: Fold));
        return phases;
    }

    static IEnumerable<(string Name, Parameter Parameter)> Named(string prefix, nn.Module module) =>
        UpdatePhase.TrainableOf(module).Select(p => (prefix + p.Name, p.Parameter));

    /// <summary>Block <paramref name="block"/> of S̄, the map widening its output and the map narrowing its input.</summary>
    IEnumerable<(string Name, Parameter Parameter)> ImitationParameters(int block)
    {
        var own = Named("imitator.", imitator!).Where(p => p.Name.StartsWith($"imitator.blocks.{block}.", StringComparison.Ordinal));
        var maps = Named($"widen.{block}.", widen![block]);
        return block == 0 ? own.Concat(maps) : own.Concat(maps).Concat(Named($"narrow.{block - 1}.", narrow![block - 1]));
    }

    /// <summary>Stage 2, block <paramref name="block"/>: ‖M_b,1(S̄_b(M_b−1,2(u))) − B_≤b(x)‖² averaged, where u is the fixed prefix's
    /// widened output (§3.2: the prefix of S̄ imitates the prefix of B).</summary>
    public Tensor ImitationLoss(int block, Tensor images)
    {
        Tensor target, input = images;
        using (no_grad())
        {
            target = images;
            var teacher = TeacherBlocks;
            for (int i = 0; i <= block; i++) target = teacher.Stage(i, target);
            for (int i = 0; i < block; i++)
            {
                input = widen![i].call(imitator!.Stage(i, input));
                if (i < block - 1) input = narrow![i].call(input);
            }
        }
        if (block > 0) input = narrow![block - 1].call(input);
        return functional.mse_loss(widen![block].call(imitator!.Stage(block, input)), target);
    }

    /// <summary>(1 − w)·CE(y) + w·T²·KL(softmax(B/T) ‖ softmax(S/T)), the T² keeping the soft term's gradients at the hard
    /// term's scale (Hinton et al., 2015, §2).</summary>
    Tensor DistillationLoss(Batch batch)
    {
        Tensor teacher;
        using (no_grad()) teacher = Teacher.call(batch.Images);
        return DistillationLoss(call(batch.Images), teacher, batch.Labels, Config.Temperature, Config.DistillWeight);
    }

    /// <summary>The distillation loss of student logits [B, K] against the teacher's, averaged over the batch.</summary>
    public static Tensor DistillationLoss(Tensor student, Tensor teacher, Tensor labels, double temperature, double weight)
    {
        var soft = functional.log_softmax(teacher / temperature, 1);
        var kl = (soft.exp() * (soft - functional.log_softmax(student / temperature, 1))).sum(1).mean();
        return functional.cross_entropy(student, labels) * (1 - weight) + kl * (weight * temperature * temperature);
    }

    /// <summary>
    /// Stage 3's start: S takes S̄'s weights, each adjacent pair of maps merged into the next block's first convolution
    /// (W'[o, i] = Σ_j W[o, j]·(M_2·M_1)[j, i]), and the last widening map merged with the teacher's head into S's head. S then
    /// computes exactly what S̄ with its maps and the teacher's head computed.
    /// </summary>
    public void Fold()
    {
        if (imitator is null) throw new InvalidOperationException("gwtn: only a layerwise student has maps to fold");
        using var _ = no_grad();
        var source = imitator.state_dict();
        foreach (var (name, value) in student.state_dict()) value.copy_(source[name]);
        static Tensor Matrix(Conv2d map) => map.weight.flatten(1);   // [out, in] of a 1×1 convolution
        for (int block = 1; block < Config.Backbone.Depth; block++)
        {
            var merged = Matrix(narrow![block - 1]).matmul(Matrix(widen![block - 1]));   // [thin, thin]
            var conv = student.FirstConvolution(block).weight;
            conv.copy_(einsum("ojhw,ji->oihw", conv, merged));
        }
        var teacherHead = Teacher.Head;
        head.weight.copy_(teacherHead.weight.matmul(Matrix(widen![^1])));
        head.bias!.copy_(teacherHead.bias!);
    }

    /// <summary>S̄ with its maps and the teacher's head: the function <see cref="Fold"/> gives the student (for tests).</summary>
    public Tensor ImitatorLogits(Tensor images)
    {
        var x = images;
        for (int i = 0; i < Config.Backbone.Depth; i++)
        {
            x = widen![i].call(imitator!.Stage(i, x));
            if (i < Config.Backbone.Depth - 1) x = narrow![i].call(x);
        }
        return Teacher.Head.call(x.mean(new long[] { 2, 3 }));
    }

    static EvaluationReport MeasureClassifier(EvaluationRequest request) =>
        ClassifierMetrics.Report(ClassifierMetrics.Probabilities(((Gwtn)request.Model).call, request.Images), request.Labels);

    public static MethodInfo Method { get; } = new("gwtn", "Zhou et al., 2020. Go Wide, Then Narrow: Efficient Training of Deep Thin Networks",
        typeof(GwtnConfig),
        new Dictionary<string, Func<MethodConfig>> { ["tiny"] = () => GwtnConfig.Tiny() },
        [
            MethodOption.Text<GwtnConfig>("--teacher", "the wide teacher's run folder (pretrain --method supervised --preset wide)", (c, v) => c with { Teacher = v }),
            MethodOption.Choice<GwtnConfig, StudentImitation>("--imitation", "layerwise: Go-Wide-Then-Narrow's stages; logits: knowledge distillation",
                (c, v) => c with { Imitation = v }),
            MethodOption.Number<GwtnConfig>("--imitation-fraction", "share of the steps spent imitating block by block (default 0.5)",
                (c, v) => c with { ImitationFraction = v }).Only<GwtnConfig>(c => c.Imitation == StudentImitation.Layerwise, "--imitation layerwise"),
            MethodOption.Number<GwtnConfig>("--imitation-lr", "stage 2's Adam learning rate (default 1e-3)",
                (c, v) => c with { ImitationOptimizer = c.ImitationOptimizer with { BaseLearningRate = v } })
                .Only<GwtnConfig>(c => c.Imitation == StudentImitation.Layerwise, "--imitation layerwise"),
            MethodOption.Number<GwtnConfig>("--temperature", "distillation temperature T (default 4)", (c, v) => c with { Temperature = v })
                .Only<GwtnConfig>(c => c.Imitation == StudentImitation.Logits, "--imitation logits"),
            MethodOption.Number<GwtnConfig>("--distill-weight", "weight w of the distillation term against cross-entropy (default 0.9)",
                (c, v) => c with { DistillWeight = v }).Only<GwtnConfig>(c => c.Imitation == StudentImitation.Logits, "--imitation logits"),
            .. ConvNetMethodConfig.SizeOptions<GwtnConfig>("conv blocks (the teacher's depth)", "the student's channels per block"),
        ])
    {
        Evaluations = [new MethodEvaluation("classifier", "the student's own head on labelled test images: accuracy, NLL and ECE (15 bins)", MeasureClassifier)],
    };
}
