using ResearchKit.Evaluation;
using ResearchKit.Methods;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>
/// SSGAN (Chen et al., 2019, "Self-Supervised GANs via Auxiliary Rotation Loss", §3): a GAN whose discriminator also
/// predicts the rotation (0°, 90°, 180°, 270°) of rotated images. The discriminator minimises the GAN loss plus
/// β·L_rot on rotated real images; the generator minimises its GAN loss plus α·L_rot on its rotated fakes, so the
/// discriminator's rotation head must recognise them. α = β = 0 is the plain GAN (preset "gan").
/// Defaults: β = 1 (<see cref="RealRotationWeight"/>) and α = 0.2 (<see cref="FakeRotationWeight"/>), the paper's §3 values
/// and compare_gan's (weight_rotation_loss_d = 1.0, weight_rotation_loss_g = 0.2); the non-saturating loss, spectral
/// normalisation in the discriminator, one discriminator step per generator step and Adam with lr 2·10⁻⁴, β₁ = 0,
/// β₂ = 0.999, constant, for both networks (issue 24's statement of §4; the paper's text is not available here to check
/// it, and its hyper-parameter sweeps also try β₁ = 0.5 and n_dis = 5). As compare_gan does, a quarter of each batch (rotated_batch_size = batch) is rotated by
/// each of the four angles for the rotation terms, and the GAN loss sees the batch upright.
/// </summary>
/// <param name="Networks">The generator's and discriminator's sizes (<see cref="GanNetworksConfig"/>).</param>
/// <param name="DiscriminatorSteps">n_dis: discriminator updates per generator update.</param>
public sealed record SsganConfig(
    GanNetworksConfig Networks,
    double RealRotationWeight = 1.0,
    double FakeRotationWeight = 0.2,
    GanLoss Loss = GanLoss.NonSaturating,
    int DiscriminatorSteps = 1) : MethodConfig
{
    static OptimizerConfig GanAdam => new(BaseLearningRate: 2e-4, WeightDecay: 0, Beta1: 0, Beta2: 0.999, WarmupFraction: 0)
        { Schedule = ScheduleConfig.Constant, AbsoluteLearningRate = true };

    /// <summary>The discriminator's optimizer (the run's --lr sets its rate).</summary>
    public override OptimizerConfig Optimizer { get; init; } = GanAdam;

    /// <summary>The generator's optimizer: its own rate, as TTUR-style recipes need.</summary>
    public OptimizerConfig GeneratorOptimizer { get; init; } = GanAdam;

    public static SsganConfig Paper => new(new GanNetworksConfig());

    /// <summary>CPU scale (<see cref="GanNetworksConfig.Tiny"/>).</summary>
    public static SsganConfig Tiny(int imageSize = 28, int channels = 1) => new(GanNetworksConfig.Tiny(imageSize, channels));

    /// <summary>The plain GAN of the same networks and recipe: both rotation weights 0, no rotation head.</summary>
    public static SsganConfig TinyGan(int imageSize = 28, int channels = 1) => Tiny(imageSize, channels) with { RealRotationWeight = 0, FakeRotationWeight = 0 };

    /// <summary>Whether the discriminator has a rotation head (either weight is positive).</summary>
    public bool SelfSupervised => RealRotationWeight > 0 || FakeRotationWeight > 0;

    public override MethodConfig ForInput(int imageSize, int channels) => this with { Networks = Networks with { ImageSize = imageSize, Channels = channels } };
    public override (int ImageSize, int Channels) InputShape() => (Networks.ImageSize, Networks.Channels);
    /// <summary>The networks and the heads on the discriminator's pooled features: real/fake, and rotation when self-supervised.</summary>
    public override ModelSize? Size() => Networks.Size() + ModelSize.Linear(Networks.BlockWidth(Networks.Depth - 1), 1)
        + (SelfSupervised ? ModelSize.Linear(Networks.BlockWidth(Networks.Depth - 1), SelfSupervisedGan.Rotations) : ModelSize.None);
    public override IPretrainModel Build(BuildContext context) => new SelfSupervisedGan(this, context);

    public override void Validate()
    {
        Networks.Validate("ssgan");
        if (RealRotationWeight is < 0 or > 100 || double.IsNaN(RealRotationWeight))
            throw new ResearchKitException($"ssgan: --rotation-weight-real (β) must be in [0, 100]; got {RealRotationWeight}");
        if (FakeRotationWeight is < 0 or > 100 || double.IsNaN(FakeRotationWeight))
            throw new ResearchKitException($"ssgan: --rotation-weight-fake (α) must be in [0, 100]; got {FakeRotationWeight}");
        if (!Enum.IsDefined(Loss)) throw new ResearchKitException($"ssgan: --loss must be non-saturating or hinge; got {Loss}");
        if (DiscriminatorSteps is < 1 or > 20) throw new ResearchKitException($"ssgan: --n-dis must be 1–20; got {DiscriminatorSteps}");
        GeneratorOptimizer.Validate("ssgan generator");
    }
}

/// <summary>The SSGAN model (<see cref="SsganConfig"/>): generator, discriminator (the backbone) and its heads.</summary>
public sealed class SelfSupervisedGan : nn.Module, IPretrainModel, IImageSampler
{
    public const int Rotations = 4;

    public SsganConfig Config { get; }
    readonly GanGenerator generator;
    readonly GanDiscriminator discriminator;
    readonly SpectralLayer realOrFake;
    readonly SpectralLayer? rotation;

    public SelfSupervisedGan(SsganConfig config, BuildContext context) : base(nameof(SelfSupervisedGan))
    {
        config.Validate();
        Config = config;
        var n = config.Networks;
        generator = new GanGenerator(n, context.FromPixels);
        discriminator = new GanDiscriminator(n);
        realOrFake = SpectralLayer.Linear(discriminator.FeatureDim, 1, n.SpectralNorm);
        // compare_gan's score_classify: a linear layer on the same features, spectrally normalised when the discriminator is.
        if (config.SelfSupervised) rotation = SpectralLayer.Linear(discriminator.FeatureDim, Rotations, n.SpectralNorm);
        RegisterComponents();
    }

    public Backbone Backbone => discriminator;
    public nn.Module Module => this;
    public GanGenerator Generator => generator;

    /// <summary>Latents z ~ N(0, I) [count, Latent] on the device.</summary>
    public Tensor Latents(long count, Generator draws) => Draws.Normal(draws, [count, Config.Networks.Latent], Compute.Device);

    public Tensor Sample(long count, Generator draws) => generator.call(Latents(count, draws));

    /// <summary>The discriminator's real/fake logits [N] and pooled features [N, D] of normalised images.</summary>
    public (Tensor Logits, Tensor Features) Judge(Tensor images)
    {
        var features = discriminator.Features(images);
        return (realOrFake.call(features).squeeze(1), features);
    }

    /// <summary>The rotation logits [N, 4] of pooled discriminator features; only with a rotation head.</summary>
    public Tensor RotationLogits(Tensor features) =>
        (rotation ?? throw new ResearchKitException("ssgan: this model has no rotation head (both rotation weights are 0)")).call(features);

    /// <summary>A quarter of <paramref name="images"/> (at least one) at each of the four angles, with labels: compare_gan's
    /// rotated batch, the same size as the batch.</summary>
    public static (Tensor Images, Tensor Labels) RotatedQuarter(Tensor images) =>
        RotNet.RotateAll(images.narrow(0, 0, Math.Max(1, images.shape[0] / Rotations)));

    /// <summary>
    /// Two phases (DCGAN's alternation, §3): the discriminator every step, the generator every n_dis-th. Each draws its own
    /// latents from its step generator. The discriminator sees real, fake and rotated real images in one pass (it has no
    /// batch statistics, so one pass equals three).
    /// </summary>
    public IReadOnlyList<UpdatePhase> Phases()
    {
        var discriminatorParameters = UpdatePhase.TrainableOf(this).Where(p => !p.Name.StartsWith("generator.")).ToList();
        var generatorParameters = UpdatePhase.TrainableOf(generator).Select(p => ("generator." + p.Name, p.Parameter)).ToList();
        return
        [
            new UpdatePhase("discriminator", (batch, draws) => DiscriminatorLoss(batch.Images, draws), discriminatorParameters),
            new UpdatePhase("generator", (batch, draws) => GeneratorLoss(batch.Images.shape[0], draws), generatorParameters,
                Config.GeneratorOptimizer, Every: Config.DiscriminatorSteps),
        ];
    }

    /// <summary>L_D = GAN loss on real vs fake + β·CE(rotation of rotated real images).</summary>
    public Tensor DiscriminatorLoss(Tensor real, Generator draws)
    {
        long b = real.shape[0];
        Tensor fake;
        using (no_grad()) fake = Sample(b, draws);
        bool rotate = rotation is not null && Config.RealRotationWeight > 0;
        var (rotated, labels) = rotate ? RotatedQuarter(real) : (null, null);
        var all = rotate ? cat([real, fake, rotated!], 0) : cat([real, fake], 0);
        var (logits, features) = Judge(all);
        var loss = GanLosses.Discriminator(Config.Loss, logits.narrow(0, 0, b), logits.narrow(0, b, b));
        if (rotate)
            loss += Config.RealRotationWeight * functional.cross_entropy(RotationLogits(features.narrow(0, 2 * b, rotated!.shape[0])), labels!);
        return loss;
    }

    /// <summary>L_G = GAN loss of the fakes + α·CE(rotation of rotated fakes).</summary>
    public Tensor GeneratorLoss(long count, Generator draws)
    {
        var fake = Sample(count, draws);
        bool rotate = rotation is not null && Config.FakeRotationWeight > 0;
        var (rotated, labels) = rotate ? RotatedQuarter(fake) : (null, null);
        var (logits, features) = Judge(rotate ? cat([fake, rotated!], 0) : fake);
        var loss = GanLosses.Generator(Config.Loss, logits.narrow(0, 0, count));
        if (rotate)
            loss += Config.FakeRotationWeight * functional.cross_entropy(RotationLogits(features.narrow(0, count, rotated!.shape[0])), labels!);
        return loss;
    }

    /// <summary>Rotation accuracy of the discriminator's head on held-out real images at the four angles (chance 0.25).</summary>
    static EvaluationReport MeasureRotation(EvaluationRequest request)
    {
        var model = (SelfSupervisedGan)request.Model;
        if (model.rotation is null) return new EvaluationReport(new Dictionary<string, double>());
        var (rotated, labels) = RotNet.RotateAll(request.Images);
        var logits = EvaluationRequest.Batched(rotated, x => model.RotationLogits(model.discriminator.Features(x)));
        return EvaluationReport.Of("rotation_accuracy", logits.argmax(1).eq(labels).to_type(ScalarType.Float64).mean().item<double>());
    }

    /// <summary>
    /// Stability (issue 24, item 5), on held-out real images and as many fresh fakes: how often the discriminator is right
    /// on each, and the samples' diversity against the real images'. Flags: the discriminator wins outright (right on ≥ 99 %
    /// of both) and collapse (diversity under half the data's).
    /// </summary>
    static EvaluationReport MeasureStability(EvaluationRequest request)
    {
        var model = (SelfSupervisedGan)request.Model;
        long n = request.Images.shape[0];
        var fake = model.Sample(n, request.Generator);
        var real = EvaluationRequest.Batched(request.Images, x => model.Judge(x).Logits);
        var judged = EvaluationRequest.Batched(fake, x => model.Judge(x).Logits);
        double realRight = real.gt(0).to_type(ScalarType.Float64).mean().item<double>();
        double fakeRight = judged.lt(0).to_type(ScalarType.Float64).mean().item<double>();
        double diversity = SampleQuality.DiversityRatio(request.Normalization.Invert(fake), request.Normalization.Invert(request.Images));
        return new EvaluationReport(new Dictionary<string, double>
        {
            ["d_right_on_real"] = realRight,
            ["d_right_on_fake"] = fakeRight,
            ["sample_diversity"] = diversity,
            ["flag_discriminator_wins"] = realRight >= GanStability.WinsAbove && fakeRight >= GanStability.WinsAbove ? 1 : 0,
            ["flag_collapse"] = diversity < GanStability.CollapseBelow ? 1 : 0,
        });
    }

    /// <summary>FD (kit classifier) and k-NN precision and recall of fresh samples against the held-out real images, in the
    /// feature space of the classifier run given as --extra classifier=RUN (<see cref="SampleQuality"/>).</summary>
    static EvaluationReport MeasureSampleQuality(EvaluationRequest request)
    {
        var model = (SelfSupervisedGan)request.Model;
        return new EvaluationReport(SampleQuality.Measure(model, request.Images, request.Reference("classifier").Backbone, request.Generator));
    }

    /// <summary>`show RUN --what samples`: images from a fixed latent batch (seed 0), so grids of snapshots compare.</summary>
    static Figure DrawSamples(FigureRequest request)
    {
        var model = (SelfSupervisedGan)request.Model;
        using var fixedLatents = new Generator(0);
        var rows = new List<(string, Tensor)>();
        var samples = request.Pixels(model.Sample(request.Count * 4, fixedLatents));
        for (int r = 0; r < 4; r++) rows.Add((r == 0 ? "samples" : "", samples.narrow(0, r * request.Count, request.Count)));
        rows.Add(("real", request.Pixels(request.TestImages(request.Count))));
        return new Figure(rows, $"{4 * request.Count} samples from fixed latents (seed 0) above {request.Count} real test images");
    }

    public static MethodInfo Method { get; } = new("ssgan", "Chen et al., 2019. Self-Supervised GANs via Auxiliary Rotation Loss",
        typeof(SsganConfig),
        new Dictionary<string, Func<MethodConfig>>
        {
            ["tiny"] = () => SsganConfig.Tiny(),
            ["gan"] = () => SsganConfig.TinyGan(),
            ["sndcgan"] = () => SsganConfig.Paper,
        },
        [
            MethodOption.Number<SsganConfig>("--rotation-weight-real", "β: weight of the discriminator's rotation loss on real images (paper: 1; 0 with α = 0: plain GAN)",
                (c, v) => c with { RealRotationWeight = v }),
            MethodOption.Number<SsganConfig>("--rotation-weight-fake", "α: weight of the generator's rotation loss on its fakes (paper: 0.2)",
                (c, v) => c with { FakeRotationWeight = v }),
            MethodOption.Choice<SsganConfig, GanLoss>("--loss", "adversarial loss", (c, v) => c with { Loss = v }),
            MethodOption.Integer<SsganConfig>("--n-dis", "discriminator steps per generator step (paper: 1)", (c, v) => c with { DiscriminatorSteps = v }),
            MethodOption.Number<SsganConfig>("--generator-lr", "the generator's Adam rate (paper: 2e-4; --lr sets the discriminator's)",
                (c, v) => c with { GeneratorOptimizer = c.GeneratorOptimizer with { BaseLearningRate = v } }),
            MethodOption.Flag<SsganConfig>("--no-spectral-norm", "train the discriminator without spectral normalisation",
                c => c with { Networks = c.Networks with { SpectralNorm = false } }),
            MethodOption.Integer<SsganConfig>("--blocks", "discriminator blocks (1–4)", (c, v) => c with { Networks = c.Networks with { Depth = v } }),
            MethodOption.Integer<SsganConfig>("--width", "channels of the first discriminator block", (c, v) => c with { Networks = c.Networks with { Width = v } }),
            MethodOption.Integer<SsganConfig>("--generator-width", "channels of the generator's last block (its first has 4×)",
                (c, v) => c with { Networks = c.Networks with { GeneratorWidth = v } }),
            MethodOption.Integer<SsganConfig>("--latent", "size of the generator's latent z", (c, v) => c with { Networks = c.Networks with { Latent = v } }),
        ])
    {
        Evaluations =
        [
            new MethodEvaluation("rotation", "rotation accuracy of the discriminator's head on real test images (chance 0.25; none for a plain GAN)", MeasureRotation),
            new MethodEvaluation("stability", "how often the discriminator is right on real and fake images, sample diversity, and the flags they raise", MeasureStability),
            new MethodEvaluation("sample-quality", "FD (kit classifier) and k-NN precision/recall of samples, in the features of --extra classifier=RUN",
                MeasureSampleQuality) { Needs = ["classifier"] },
        ],
        Figures = [new MethodFigure("samples", "samples from a fixed latent batch beside real test images", [], DrawSamples)],
    };
}

/// <summary>The thresholds of the stability flags (issue 24, item 5), and what they say over a run's snapshots.</summary>
public static class GanStability
{
    /// <summary>The discriminator "wins outright" when it is right on at least this share of both real and fake images.</summary>
    public const double WinsAbove = 0.99;

    /// <summary>Collapse: samples' mean pairwise distance under this share of the real images'.</summary>
    public const double CollapseBelow = 0.5;

    /// <summary>Consecutive snapshots the discriminator must win for the run to be flagged (K).</summary>
    public const int WinsFor = 2;

    /// <summary>Warnings for a run's snapshots in step order, each a dictionary of the stability scalars; empty: none.</summary>
    public static List<string> Warnings(IReadOnlyList<(long Step, IReadOnlyDictionary<string, double> Scalars)> snapshots)
    {
        var warnings = new List<string>();
        int run = 0;
        foreach (var (step, scalars) in snapshots)
        {
            if (scalars.Values.Any(v => !double.IsFinite(v))) warnings.Add($"step {step}: non-finite measurements (the networks diverged)");
            run = scalars.GetValueOrDefault("flag_discriminator_wins") > 0 ? run + 1 : 0;
            if (run == WinsFor) warnings.Add($"step {step}: the discriminator has won outright for {WinsFor} snapshots (right on ≥ {WinsAbove:P0} of real and fake)");
            if (scalars.GetValueOrDefault("flag_collapse") > 0)
                warnings.Add($"step {step}: sample diversity {scalars["sample_diversity"]:F2} of the data's (collapse below {CollapseBelow})");
        }
        return warnings;
    }
}
