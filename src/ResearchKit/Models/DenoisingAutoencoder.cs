using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Layers;
using ResearchKit.Methods;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>How the input is corrupted (Vincent et al., 2008, §2.3;
/// the Gaussian kind from Vincent et al., 2010, §4.3).</summary>
public enum DenoisingNoise
{
    /// <summary>Each pixel is set to 0 with probability ν (all
    /// channels together): the 2008 paper's "masking noise".</summary>
    Masking,
    /// <summary>Isotropic Gaussian noise of standard deviation σ added to the pixel values.</summary>
    Gaussian,
}

/// <summary>
/// Denoising autoencoder (Vincent et al., 2008, "Extracting and Composing Robust Features with Denoising Autoencoders"):
/// corrupt the input, reconstruct the clean image. The 2008 paper's networks are one-layer sigmoid autoencoders stacked
/// greedily; here the encoder is the shared NIN CNN, trained end to end, with <see cref="ConvDecoder"/> on its last map,
/// so it compares with the other pretext tasks on the same backbone. Noise is applied in pixel space [0, 1] (the paper's
/// masking sets pixels to 0, black), through the run's normalisation. The loss is the squared error over every pixel
/// (the paper's §2.3 also studies emphasising the corrupted ones; not done here).
/// </summary>
/// <param name="Noise">Masking (the paper's) or Gaussian.</param>
/// <param name="Level">ν, the share of pixels masked (paper: 0–50 %, best around 25 %), or σ of the Gaussian. 0 is
/// a plain autoencoder: the paper's baseline.</param>
public sealed record DenoisingConfig(
    ConvNetConfig Backbone,
    DenoisingNoise Noise = DenoisingNoise.Masking,
    double Level = 0.25) : ConvNetMethodConfig(Backbone)
{
    /// <summary>Adam at 4e-3 per 256 (1e-3 at batch 64, the common rate for small CNNs; measured:
    /// colorization and split-brain barely move at 1e-3 per 256 in 64 steps) images, warmup then cosine,
    /// no weight decay (the 2008 paper trains by plain SGD on a one-layer model; Adam is the usual
    /// choice for a convolutional autoencoder and the same for every pretext task here).</summary>
    public override OptimizerConfig Optimizer { get; init; } =
        new(BaseLearningRate: 4e-3, WeightDecay: 0, Beta2: 0.999, WarmupFraction: 0.02);

    /// <summary>CPU scale: RotNet's tiny NIN (the same encoder every pretext task here uses).</summary>
    public static DenoisingConfig Tiny(int imageSize = 28, int channels = 1) => new(ConvNetConfig.Tiny(imageSize, channels));

    public override IPretrainModel Build(BuildContext context) => new DenoisingAutoencoder(this, context);

    public override void Validate()
    {
        Backbone.Validate();
        if (Backbone.Depth < 3)
            throw new ResearchKitException($"denoising: blocks (--blocks) must be at least 3 "
                + $"(the decoder starts at a quarter of the image side); got {Backbone.Depth}");
        if (Backbone.ImageSize % 4 != 0)
            throw new ResearchKitException(
                $"denoising: image size must be a multiple of 4 (two 2× poolings and back); got {Backbone.ImageSize}");
        if (!Enum.IsDefined(Noise))
            throw new ResearchKitException($"denoising: --noise must be masking or gaussian; got {Noise}");
        bool valid = Noise == DenoisingNoise.Masking ? Level is >= 0 and < 1 : Level >= 0 && double.IsFinite(Level);
        if (!valid)
            throw new ResearchKitException($"denoising: --level must be "
                + $"{(Noise == DenoisingNoise.Masking ? "a share in [0, 1)" : "a finite σ ≥ 0")}; got {Level}");
    }
}

/// <summary>What a denoising forward pass returns: the loss, the
/// corrupted input and the reconstruction (both normalised).</summary>
public sealed record DenoisingOutput(Tensor Loss, Tensor Corrupted, Tensor Reconstruction);

/// <summary>The denoising autoencoder (<see cref="DenoisingConfig"/>):
/// NIN encoder, transposed-convolution decoder.</summary>
public sealed class DenoisingAutoencoder : Module<Tensor, Generator, DenoisingOutput>, IPretrainModel
{
    public DenoisingConfig Config { get; }
    readonly ConvNet encoder;
    readonly ConvDecoder decoder;
    readonly BuildContext context;

    public DenoisingAutoencoder(DenoisingConfig config, BuildContext context) : base(nameof(DenoisingAutoencoder))
    {
        config.Validate();
        Config = config;
        this.context = context;
        encoder = new ConvNet(config.Backbone);
        decoder = new ConvDecoder(config.Backbone.Width, config.Backbone.Width, config.Backbone.Channels);
        RegisterComponents();
    }

    public Backbone Backbone => encoder;
    public nn.Module Module => this;

    /// <summary>Normalised images [B, C, H, W] → the same images
    /// corrupted in pixel space (<see cref="DenoisingNoise"/>).</summary>
    public Tensor Corrupt(Tensor images, Generator generator)
    {
        if (Config.Level == 0) return images;
        var pixels = context.ToPixels(images);
        long B = images.shape[0], H = images.shape[2], W = images.shape[3];
        var noisy = Config.Noise == DenoisingNoise.Masking
            ? pixels * Draws.Uniform(generator, [B, 1, H, W], images.device).ge(Config.Level)   // 0 with probability ν
            : pixels + Config.Level * Draws.Normal(generator, pixels.shape, images.device);
        return context.FromPixels(noisy);
    }

    /// <summary>images [B, C, H, W] (normalised) → loss, corrupted input and reconstruction.</summary>
    public override DenoisingOutput forward(Tensor images, Generator generator)
    {
        var corrupted = Corrupt(images, generator);
        var reconstruction = decoder.call(encoder.FeatureMaps(corrupted)[^1]);                  // B, C, H, W
        return new DenoisingOutput(functional.mse_loss(reconstruction, images), corrupted, reconstruction);
    }

    public IReadOnlyList<UpdatePhase> Phases() =>
        [new UpdatePhase("loss", (batch, generator) => call(batch.Images, generator).Loss, UpdatePhase.TrainableOf(this))];

    /// <summary>PSNR (dB) of the reconstruction of corrupted held-out
    /// images against the clean ones, in pixels [0, 1].</summary>
    static EvaluationReport MeasureReconstruction(EvaluationRequest request)
    {
        var model = (DenoisingAutoencoder)request.Model;
        var output = model.call(request.Images, request.Generator);
        var context = model.context;
        double mse = Reconstruction.Mse(context.ToPixels(output.Reconstruction).clamp(0, 1), context.ToPixels(request.Images));
        return EvaluationReport.Of("reconstruction_psnr", Reconstruction.Psnr(mse));
    }

    /// <summary>`show RUN --what reconstructions`: clean test images,
    /// their corrupted copies and the reconstructions.</summary>
    static Figure DrawReconstructions(FigureRequest request)
    {
        var model = (DenoisingAutoencoder)request.Model;
        var images = request.TestImages(request.Count);
        var output = model.call(images, request.Generator);
        return new Figure([("original", request.Pixels(images)), ("corrupted", request.Pixels(output.Corrupted)),
            ("reconstruction", request.Pixels(output.Reconstruction))],
            $"{model.Config.Noise.ToString().ToLowerInvariant()} noise at {model.Config.Level}: "
                + $"{request.Count} test images denoised");
    }

    public static MethodInfo Method { get; } = new("denoising",
        "Vincent et al., 2008. Extracting and Composing Robust Features with Denoising Autoencoders",
        typeof(DenoisingConfig),
        new Dictionary<string, Func<MethodConfig>> { ["tiny"] = () => DenoisingConfig.Tiny() },
        [
            MethodOption.Choice<DenoisingConfig, DenoisingNoise>("--noise", "corruption", (c, v) => c with { Noise = v }),
            MethodOption.Number<DenoisingConfig>("--level",
                "masked share ν (paper: 0.1–0.5) or Gaussian σ; 0: a plain autoencoder",
                (c, v) => c with { Level = v }),
            .. ConvNetMethodConfig.SizeOptions<DenoisingConfig>("conv blocks in the encoder", "channels per block"),
        ])
    {
        Evaluations = [new MethodEvaluation("reconstruction", "PSNR of corrupted test images' reconstructions against the clean ones", MeasureReconstruction)],
        Figures = [new MethodFigure("reconstructions",
            "clean test images, corrupted, and reconstructed", [], DrawReconstructions)],
    };
}
