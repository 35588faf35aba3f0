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

/// <summary>Which part of the image the context encoder removes (Pathak et al., 2016, §3.3).</summary>
public enum ContextRegion
{
    /// <summary>One central square of the given share of the area (the paper's 64 × 64 of 128 × 128: a quarter).</summary>
    Central,
    /// <summary>Squares of a quarter of the side at random places,
    /// possibly overlapping (the paper's "random block").</summary>
    RandomBlocks,
    /// <summary>
    /// A random smooth blob of the given share of the area. The paper's "random region" takes the shapes of PASCAL VOC
    /// segmentation masks, which this machine does not have; a thresholded low-frequency random field gives shapes of
    /// arbitrary outline in its place. Said plainly: a stand-in, not the paper's masks.
    /// </summary>
    RandomRegion,
}

/// <summary>
/// Context encoder (Pathak et al., 2016, "Context Encoders: Feature Learning by Inpainting"): remove a region, fill it
/// with the data mean (0 after normalisation, as the paper fills with the mean pixel), and reconstruct it from its
/// context. L2 loss on the removed pixels (§3.2), plus an optional adversarial term (§3.2: λ_rec = 0.999, λ_adv = 0.001)
/// from a small DCGAN-style discriminator trained in a second phase with its own optimizer. The encoder is the shared NIN
/// CNN and the decoder <see cref="ConvDecoder"/>; the paper's channel-wise fully connected layer and its 4-pixel
/// overlap with 10× loss weight are left out.
/// </summary>
/// <param name="Region">Central square, random blocks, or random region (<see cref="ContextRegion"/>).</param>
/// <param name="HoleFraction">Share of the image removed (paper: ¼).</param>
/// <param name="AdversarialWeight">λ_adv, with λ_rec = 1 − λ_adv;
/// 0 (default): reconstruction only, no discriminator.</param>
public sealed record ContextEncoderConfig(
    ConvNetConfig Backbone,
    ContextRegion Region = ContextRegion.Central,
    double HoleFraction = 0.25,
    double AdversarialWeight = 0) : ConvNetMethodConfig(Backbone)
{
    /// <summary>Adam at 4e-3 per 256 (1e-3 at batch 64, the common rate for small CNNs; measured: colorization and
    /// split-brain barely move at 1e-3 per 256 in 64 steps), warmup then cosine, no weight decay: the same recipe as
    /// the other pretext tasks here (the paper trains with Adam as DCGAN does).</summary>
    public override OptimizerConfig Optimizer { get; init; } =
        new(BaseLearningRate: 4e-3, WeightDecay: 0, Beta2: 0.999, WarmupFraction: 0.02);

    /// <summary>The discriminator's recipe: DCGAN's Adam, a fixed 2e-4 with β₁ = 0.5, constant.</summary>
    public OptimizerConfig DiscriminatorOptimizer { get; init; } =
        new(BaseLearningRate: 2e-4, WeightDecay: 0, Beta1: 0.5, Beta2: 0.999, WarmupFraction: 0)
            { Schedule = ScheduleConfig.Constant, AbsoluteLearningRate = true };

    /// <summary>CPU scale: RotNet's tiny NIN (the same encoder every pretext task here uses).</summary>
    public static ContextEncoderConfig Tiny(int imageSize = 28, int channels = 1) =>
        new(ConvNetConfig.Tiny(imageSize, channels));

    public override IPretrainModel Build(BuildContext context) => new ContextEncoder(this);

    public override void Validate()
    {
        Backbone.Validate();
        if (Backbone.Depth < 3)
            throw new ResearchKitException($"context-encoder: blocks (--blocks) must be at least 3 "
                + $"(the decoder starts at a quarter of the image side); got {Backbone.Depth}");
        if (Backbone.ImageSize % 4 != 0)
            throw new ResearchKitException($"context-encoder: image size must be a multiple of 4 "
                + $"(two 2× poolings and back); got {Backbone.ImageSize}");
        if (!Enum.IsDefined(Region))
            throw new ResearchKitException(
                $"context-encoder: --region must be central, random-blocks or random-region; got {Region}");
        if (HoleFraction is <= 0 or > 0.75 || double.IsNaN(HoleFraction))
            throw new ResearchKitException($"context-encoder: --hole must be in (0, 0.75]; got {HoleFraction}");
        if (AdversarialWeight is < 0 or >= 1 || double.IsNaN(AdversarialWeight))
            throw new ResearchKitException(
                $"context-encoder: --adversarial-weight must be in [0, 1); got {AdversarialWeight}");
        DiscriminatorOptimizer.Validate("context-encoder discriminator");
    }
}

/// <summary>What a context-encoder forward pass returns: the reconstruction loss, the
/// removed region [B, 1, H, W] (1 = removed), the input with the region filled, the
/// network's output and the completion (output pasted into the context).</summary>
public sealed record ContextEncoderOutput(
    Tensor ReconstructionLoss,
    Tensor Removed,
    Tensor Input,
    Tensor Output,
    Tensor Completion);

/// <summary>The context encoder (<see cref="ContextEncoderConfig"/>).</summary>
public sealed class ContextEncoder : Module<Tensor, Generator, ContextEncoderOutput>, IPretrainModel
{
    public ContextEncoderConfig Config { get; }
    readonly ConvNet encoder;
    readonly ConvDecoder decoder;
    readonly Sequential? discriminator;

    public ContextEncoder(ContextEncoderConfig config) : base(nameof(ContextEncoder))
    {
        config.Validate();
        Config = config;
        encoder = new ConvNet(config.Backbone);
        decoder = new ConvDecoder(config.Backbone.Width, config.Backbone.Width, config.Backbone.Channels);
        // DCGAN's discriminator, two strided blocks (Radford et al., 2016): LeakyReLU 0.2, BatchNorm after the first.
        int c = config.Backbone.Channels, w = Math.Max(Mixed.SafeFilters, config.Backbone.Width / 2);
        if (config.AdversarialWeight > 0)
            discriminator = Sequential(
                Conv2d(c, w, 4, stride: 2, padding: 1), LeakyReLU(0.2),
                Conv2d(w, 2 * w, 4, stride: 2, padding: 1, bias: false), BatchNorm2d(2 * w), LeakyReLU(0.2),
                AdaptiveAvgPool2d(1), Flatten(), Linear(2 * w, 1));
        RegisterComponents();
    }

    public Backbone Backbone => encoder;
    public nn.Module Module => this;

    /// <summary>The region to remove for each of <paramref name="count"/> images of side <paramref name="size"/>:
    /// [B, 1, H, W] float, 1 = removed.</summary>
    public Tensor Region(long count, int size, Generator generator, Device device)
    {
        var rows = arange(size, device: device).reshape(1, 1, size, 1);
        var cols = arange(size, device: device).reshape(1, 1, 1, size);
        switch (Config.Region)
        {
            case ContextRegion.Central:
            {
                int side = Math.Clamp((int)Math.Round(size * Math.Sqrt(Config.HoleFraction)), 1, size),
                    start = (size - side) / 2;
                var inside = rows.ge(start).logical_and(rows.lt(start + side))
                    .logical_and(cols.ge(start)).logical_and(cols.lt(start + side));
                return inside.to_type(ScalarType.Float32).expand(count, 1, size, size);
            }
            case ContextRegion.RandomBlocks:
            {
                // Blocks of a quarter of the side: as many as would cover the share if none overlapped.
                int side = Math.Max(1, size / 4),
                    blocks = Math.Max(1, (int)Math.Round(Config.HoleFraction * size * size / (side * side)));
                var corners = Draws.Integers(generator, 0, size - side + 1, [count, blocks, 2], device);     // B, K, 2
                var y = corners[.., .., 0].reshape(count, blocks, 1, 1);
                var x = corners[.., .., 1].reshape(count, blocks, 1, 1);
                var inside = rows.ge(y).logical_and(rows.lt(y + side))
                    .logical_and(cols.ge(x)).logical_and(cols.lt(x + side));   // B, K, H, W
                return inside.any(1, keepdim: true).to_type(ScalarType.Float32);
            }
            default:
            {
                // A 4 × 4 Gaussian field upsampled to the image: blobs of a quarter of the
                // side. Each image loses the pixels of its highest values, exactly the
                // share asked for (ranked, so ties in the flat borders do not matter).
                var field = functional.interpolate(Draws.Normal(generator, [count, 1, 4, 4], device),
                    new long[] { size, size },
                    mode: InterpolationMode.Bilinear, align_corners: false).flatten(1);                      // B, H·W
                long hole = Math.Max(1, (long)Math.Round(Config.HoleFraction * size * size));
                var highest = field.argsort(1, descending: true)[.., ..(int)hole];                               // B, hole
                return zeros_like(field).scatter_(1, highest, ones_like(highest, ScalarType.Float32))
                    .reshape(count, 1, size, size);
            }
        }
    }

    /// <summary>images [B, C, H, W] (normalised) → reconstruction loss on the removed region, and the pieces.</summary>
    public override ContextEncoderOutput forward(Tensor images, Generator generator)
    {
        var removed = Region(images.shape[0], (int)images.shape[2], generator, images.device);  // B, 1, H, W
        var input = images * (1 - removed);                                                       // the mean (0) in the hole
        var output = decoder.call(encoder.FeatureMaps(input)[^1]);                                // B, C, H, W
        var squared = (output - images).square() * removed;
        var loss = squared.sum() / (removed.sum() * images.shape[1]).clamp_min(1);
        return new ContextEncoderOutput(loss, removed, input, output, input + output * removed);
    }

    /// <summary>
    /// One phase without the adversarial term. With it, two (Pathak et al., §3.2, DCGAN's alternation): the discriminator
    /// learns real images from completions, then the encoder and decoder minimise (1 − λ_adv)·L_rec + λ_adv·L_adv.
    /// Each phase draws its own regions.
    /// </summary>
    public IReadOnlyList<UpdatePhase> Phases()
    {
        var network = UpdatePhase.TrainableOf(this).Where(p => !p.Name.StartsWith("discriminator.")).ToList();
        if (discriminator is null)
            return [new UpdatePhase("loss", (batch, g) => call(batch.Images, g).ReconstructionLoss, network)];
        double w = Config.AdversarialWeight;
        return
        [
            new UpdatePhase("discriminator", (batch, g) =>
            {
                Tensor fake;
                using (no_grad()) fake = call(batch.Images, g).Completion;
                var real = discriminator.call(batch.Images);
                return functional.binary_cross_entropy_with_logits(real, ones_like(real))
                     + functional.binary_cross_entropy_with_logits(discriminator.call(fake), zeros_like(real));
            }, UpdatePhase.TrainableOf(this).Where(p => p.Name.StartsWith("discriminator.")).ToList(),
                Config.DiscriminatorOptimizer),
            new UpdatePhase("loss", (batch, g) =>
            {
                var output = call(batch.Images, g);
                var judged = discriminator.call(output.Completion);
                return (1 - w) * output.ReconstructionLoss
                    + w * functional.binary_cross_entropy_with_logits(judged, ones_like(judged));
            }, network),
        ];
    }

    /// <summary>PSNR (dB) of the completion on the removed pixels of held-out images, in pixels [0, 1].</summary>
    static EvaluationReport MeasureCompletion(EvaluationRequest request)
    {
        var (model, images, normalization) = ((ContextEncoder)request.Model, request.Images, request.Normalization);
        var output = model.call(images, request.Generator);
        double mse = Reconstruction.Mse(
            normalization.Invert(output.Output).clamp(0, 1),
            normalization.Invert(images),
            output.Removed);
        return EvaluationReport.Of("region_psnr", Reconstruction.Psnr(mse));
    }

    /// <summary>`show RUN --what completions`: test images, the input with the region removed, and the completion.</summary>
    static Figure DrawCompletions(FigureRequest request)
    {
        var model = (ContextEncoder)request.Model;
        var images = request.TestImages(request.Count);
        var output = model.call(images, request.Generator);
        return new Figure([("original", request.Pixels(images)), ("context", request.Pixels(output.Input)),
            ("completion", request.Pixels(output.Completion))],
            $"{EnumNames.Of(model.Config.Region)} regions of {model.Config.HoleFraction:P0} "
                + $"inpainted on {request.Count} test images");
    }

    public static MethodInfo Method { get; } = new("context-encoder",
        "Pathak et al., 2016. Context Encoders: Feature Learning by Inpainting",
        typeof(ContextEncoderConfig),
        new Dictionary<string, Func<MethodConfig>> { ["tiny"] = () => ContextEncoderConfig.Tiny() },
        [
            MethodOption.Choice<ContextEncoderConfig, ContextRegion>("--region", "what is removed",
                (c, v) => c with { Region = v }),
            MethodOption.Number<ContextEncoderConfig>("--hole", "share of the image removed (paper: 0.25)",
                (c, v) => c with { HoleFraction = v }),
            MethodOption.Number<ContextEncoderConfig>("--adversarial-weight",
                "λ_adv of the adversarial term (paper's inpainting: 0.001; 0: none)",
                (c, v) => c with { AdversarialWeight = v }),
            .. ConvNetMethodConfig.SizeOptions<ContextEncoderConfig>("conv blocks in the encoder", "channels per block"),
        ])
    {
        Evaluations = [new MethodEvaluation("completion", "PSNR of the completed region of test images", MeasureCompletion)],
        Figures = [new MethodFigure("completions",
            "test images, the context the encoder sees, and the completed images", [], DrawCompletions)],
    };
}
