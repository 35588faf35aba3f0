using ResearchKit.Data;
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
/// BatchNorm (the paper's Wide-ResNet has none either). Not yet here: the paper's divergence handling and evaluations.
/// </summary>
/// <param name="GenerativeWeight">w, the weight of the log p(x) term (0: plain cross-entropy, the baseline).</param>
/// <param name="DataNoise">Std of the Gaussian noise added to the data, in [−1, 1] pixel units as the paper's code.</param>
public sealed record JemConfig(
    ConvNetConfig Backbone,
    int Classes = 10,
    double GenerativeWeight = 1,
    double StepSize = 1,
    double Noise = 0.01,
    int Steps = 20,
    int BufferSize = 10_000,
    double Reinitialise = 0.05,
    double DataNoise = 0.03) : ConvNetMethodConfig(Backbone)
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
    }
}

/// <summary>The JEM classifier (<see cref="JemConfig"/>), its SGLD sampler and its replay buffer (checkpointed).</summary>
public sealed class Jem : Module<Tensor, Tensor>, IPretrainModel, ICheckpointState
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

    /// <summary>Class logits [B, Classes] of normalised images.</summary>
    public override Tensor forward(Tensor images) => Mixed.Head(head, backbone.Features(images));

    /// <summary>log p(x) up to the normaliser: logsumexp of the logits, [B] (−E(x), §2).</summary>
    public Tensor LogDensity(Tensor images) => call(images).to_type(ScalarType.Float32).logsumexp(1);

    /// <summary>The replay buffer [BufferSize, C, H, W] (normalised images), made on first use from uniform noise in pixel space.</summary>
    public Tensor Buffer(Generator draws, Device device) => buffer ??= UniformImages(Config.BufferSize, draws, device).DetachFromDisposeScope();

    Tensor UniformImages(long count, Generator draws, Device device) =>
        context.FromPixels(Draws.Uniform(draws, [count, context.Channels, context.ImageSize, context.ImageSize], device));

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
    public IReadOnlyList<UpdatePhase> Phases() => [new UpdatePhase("loss", (batch, draws) => Loss(batch, draws), UpdatePhase.TrainableOf(this))];

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
            .. ConvNetMethodConfig.SizeOptions<JemConfig>("conv blocks", "channels per block"),
        ]);
}
