using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Layers;
using ResearchKit.Methods;
using ResearchKit.Tokenizers;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>How MAE picks the patches to remove (MAE §4.1, Table 1f / Fig. 6).</summary>
public enum MaskSampling { Random, Grid }

/// <summary>
/// MAE configuration; defaults are the paper's ViT-L/16 with its default decoder (MAE §4.1, Table 1:
/// decoder depth 8, width 512, mask ratio 0.75, pixel targets) and its pre-training recipe (Appendix A.1).
/// </summary>
public sealed record MaeConfig(
    ViTConfig Encoder,
    int DecoderDim = 512, int DecoderDepth = 8, int DecoderHeads = 16,
    double MaskRatio = 0.75, bool NormPixLoss = false, bool MaskTokenInEncoder = false,
    MaskSampling Sampling = MaskSampling.Random) : MethodConfig
{
    public override OptimizerConfig Optimizer { get; init; } = new();

    public static MaeConfig ViTBase => new(ViTConfig.Base);
    public static MaeConfig ViTLarge => new(ViTConfig.Large);

    /// <summary>
    /// CPU-scale MAE (PLATFORM.md reference): tiny ViT encoder, decoder dim 64, depth 2, 4 heads. Base learning rate
    /// 1.5e-3: the paper's 1.5e-4 is tuned for 800+ ImageNet epochs; a tiny model trained for a few epochs needs more
    /// (measured on Fashion-MNIST; see environment.md).
    /// </summary>
    public static MaeConfig Tiny(int imageSize = 28, int channels = 1) =>
        new(ViTConfig.Tiny(imageSize, channels), DecoderDim: 64, DecoderDepth: 2, DecoderHeads: 4) { Optimizer = new(BaseLearningRate: 1.5e-3) };

    public override MethodConfig ForInput(int imageSize, int channels) => this with { Encoder = Encoder with { ImageSize = imageSize, Channels = channels } };

    public override IPretrainModel Build() => new MaskedAutoencoder(this);

    public override void Validate()
    {
        Encoder.Validate();
        if (!(MaskRatio > 0 && MaskRatio < 1)) throw new ResearchKitException($"mae: mask ratio (--mask-ratio) must be in (0, 1); got {MaskRatio}");
        if (DecoderDepth < 1) throw new ResearchKitException($"mae: decoder depth (--decoder-depth) must be at least 1; got {DecoderDepth}");
        if (DecoderDim < 4 || DecoderDim % DecoderHeads != 0 || DecoderDim % 4 != 0)
            throw new ResearchKitException($"mae: decoder dim (--decoder-dim) {DecoderDim} must be a positive multiple of 4 and of the decoder heads ({DecoderHeads})");
        if (Sampling == MaskSampling.Grid && Math.Abs(MaskRatio - 0.75) > 1e-9)
            throw new ResearchKitException($"mae: grid sampling removes 3 of every 2×2 patches, so the mask ratio must be 0.75; got {MaskRatio}");
    }
}

/// <summary>What an MAE forward pass returns.</summary>
/// <param name="Loss">Scalar: MSE on removed patches only.</param>
/// <param name="Prediction">[B, L, p·p·C] predicted patches (in target space: normalised per patch when NormPixLoss).</param>
/// <param name="Mask">[B, L] 1 = removed, 0 = kept.</param>
public sealed record MaeOutput(Tensor Loss, Tensor Prediction, Tensor Mask);

/// <summary>
/// Masked autoencoder (He et al., 2021). The encoder sees only the kept patches (no mask tokens);
/// a light decoder gets the encoded tokens plus a shared mask token at every removed position,
/// adds its own positions, and predicts pixels. Methods follow the data flow.
/// </summary>
public sealed class MaskedAutoencoder : Module<Tensor, Generator?, MaeOutput>, IPretrainModel
{
    /// <summary>The registration: name, paper, presets and command-line options.</summary>
    public static MethodInfo Method { get; } = new("mae", "He et al., 2021. Masked Autoencoders Are Scalable Vision Learners", typeof(MaeConfig),
        new Dictionary<string, Func<MethodConfig>>
        {
            ["tiny"] = () => MaeConfig.Tiny(),
            ["vit-base"] = () => MaeConfig.ViTBase,
            ["vit-large"] = () => MaeConfig.ViTLarge,
        },
        [
            MethodOption.Number<MaeConfig>("--mask-ratio", "fraction of patches removed (paper: 0.75)", (c, v) => c with { MaskRatio = v }),
            MethodOption.Flag<MaeConfig>("--norm-pix-loss", "normalise each target patch by its mean and variance (Table 1c)", c => c with { NormPixLoss = true }),
            MethodOption.Integer<MaeConfig>("--decoder-depth", "decoder blocks (paper: 8; Table 1a)", (c, v) => c with { DecoderDepth = v }),
            MethodOption.Integer<MaeConfig>("--decoder-dim", "decoder width (paper: 512; Table 1b)",
                (c, v) => c with { DecoderDim = v, DecoderHeads = Math.Max(1, Math.Min(c.DecoderHeads, v / 16)) }),
            MethodOption.Choice<MaeConfig>("--sampling", "how removed patches are chosen (Table 1f)", ["random", "grid"],
                (c, v) => c with { Sampling = v == "grid" ? MaskSampling.Grid : MaskSampling.Random }),
            MethodOption.Flag<MaeConfig>("--mask-token-in-encoder", "the encoder also sees mask tokens (Table 1c ablation, ~3.3× FLOPs)", c => c with { MaskTokenInEncoder = true }),
        ]);

    public MaeConfig Config { get; }
    public VisionTransformer Encoder => encoder;
    public Backbone Backbone => encoder;
    public nn.Module Module => this;

    /// <summary>
    /// One phase: the reconstruction loss over all parameters. Weight decay as MAE's main_pretrain.py applies it
    /// (timm's add_weight_decay): every parameter but 1-D ones (biases, norm scales), so the [CLS] and mask tokens
    /// are decayed; the fixed positions are buffers, not parameters.
    /// </summary>
    public IReadOnlyList<UpdatePhase> Phases() =>
        [new UpdatePhase("loss", (batch, generator) => call(batch.Images, generator).Loss, UpdatePhase.TrainableOf(this))];

    /// <summary>Reconstruction PSNR (dB) on the removed pixels, in pixel space [0, 1].</summary>
    public IReadOnlyDictionary<string, double> PretextMetrics(Tensor images, Normalization normalization, Generator generator)
    {
        using var scope = NewDisposeScope();
        var (_, reconstruction, _, removed) = Reconstruct(images, generator);
        double mse = Reconstruction.Mse(normalization.Invert(reconstruction), normalization.Invert(images), removed);
        return new Dictionary<string, double> { ["reconstruction_psnr"] = Reconstruction.Psnr(mse) };
    }

    readonly VisionTransformer encoder;
    readonly Parameter? encoderMaskToken;     // only for the "mask token in the encoder" ablation
    readonly Linear decoderEmbed;
    readonly Parameter maskToken;
    readonly Tensor decoderPos;               // [1, 1 + L, Dd], fixed
    readonly ModuleList<TransformerBlock> decoderBlocks;
    readonly LayerNorm decoderNorm;
    readonly Linear decoderPred;

    public MaskedAutoencoder(MaeConfig config) : base(nameof(MaskedAutoencoder))
    {
        config.Validate();
        Config = config;
        var e = config.Encoder;
        encoder = new VisionTransformer(e);
        if (config.MaskTokenInEncoder) encoderMaskToken = Parameter(zeros(1, 1, e.Dim));
        decoderEmbed = Linear(e.Dim, config.DecoderDim);
        maskToken = Parameter(zeros(1, 1, config.DecoderDim));
        decoderPos = PositionalEmbedding.SinCos2D(config.DecoderDim, e.GridSize, clsToken: true);
        decoderBlocks = new ModuleList<TransformerBlock>(
            Enumerable.Range(0, config.DecoderDepth).Select(_ => new TransformerBlock(config.DecoderDim, config.DecoderHeads)).ToArray());
        decoderNorm = LayerNorm(config.DecoderDim, eps: 1e-6);
        decoderPred = Linear(config.DecoderDim, e.PatchDim);
        RegisterComponents();

        TransformerInit.Apply(decoderBlocks);
        TransformerInit.Apply(decoderEmbed);
        TransformerInit.Apply(decoderPred);
        using var _ = no_grad();
        init.normal_(maskToken, std: 0.02);
        if (encoderMaskToken is not null) init.normal_(encoderMaskToken, std: 0.02);
    }

    /// <summary>Draws the mask for a batch of B images: keep/restore indices and [B, L] mask (1 = removed).</summary>
    public PatchMask SampleMask(long batch, Generator? generator, Device device)
    {
        var e = Config.Encoder;
        if (Config.Sampling == MaskSampling.Grid)
            return Masking.FromMask(Masking.Grid(e.GridSize, e.GridSize).reshape(1, -1).expand(batch, -1).to(device));
        return Masking.Random(batch, e.Length, Config.MaskRatio, generator, device);
    }

    /// <summary>
    /// images [B, C, H, W] → latent [B, 1 + K, D] (or [B, 1 + L, D] with mask tokens in the encoder). With
    /// <paramref name="hidden"/>, each encoder block's raw output is appended to it.
    /// </summary>
    public Tensor ForwardEncoder(Tensor images, PatchMask mask, List<Tensor>? hidden = null)
    {
        Tensor tokens;
        if (encoderMaskToken is null)
        {
            tokens = encoder.EmbedPatches(images);                                     // B, L, D
            var index = mask.Keep.unsqueeze(-1).expand(-1, -1, tokens.shape[2]);
            tokens = tokens.gather(1, index);                                          // B, K, D
        }
        else tokens = encoder.EmbedPatches(images, mask.Mask, encoderMaskToken);      // B, L, D: mask token at removed positions
        return encoder.Encode(encoder.PrependCls(tokens), hidden);
    }

    /// <summary>latent → predicted patches [B, L, p·p·C]; mask tokens fill removed positions, order restored.</summary>
    public Tensor ForwardDecoder(Tensor latent, PatchMask mask)
    {
        var x = decoderEmbed.call(latent);                                             // B, 1 + K, Dd
        if (encoderMaskToken is null)
        {
            var (B, L) = (x.shape[0], mask.Restore.shape[1]);
            var fill = maskToken.expand(B, L + 1 - x.shape[1], -1);                    // B, L − K, Dd
            var shuffled = cat(new[] { x[.., 1..], fill }, dim: 1);                    // B, L, Dd (kept first)
            var index = mask.Restore.unsqueeze(-1).expand(-1, -1, x.shape[2]);
            x = cat(new[] { x[.., ..1], shuffled.gather(1, index) }, dim: 1);          // B, 1 + L, Dd
        }
        x = x + decoderPos;
        foreach (var block in decoderBlocks) x = block.call(x);
        return decoderPred.call(decoderNorm.call(x))[.., 1..];                         // drop [CLS]
    }

    /// <summary>Per-patch targets [B, L, p·p·C]: pixels, or pixels normalised by each patch's mean and variance.</summary>
    public Tensor Targets(Tensor images)
    {
        var target = Patches.Patchify(images, Config.Encoder.PatchSize);
        if (!Config.NormPixLoss) return target;
        var mean = target.mean(new long[] { -1 }, keepdim: true);
        var variance = target.var(-1, unbiased: true, keepdim: true);
        return (target - mean) / (variance + 1e-6).sqrt();
    }

    /// <summary>MSE per patch, averaged over removed patches only.</summary>
    public Tensor ForwardLoss(Tensor images, Tensor prediction, Tensor mask)
    {
        var perPatch = (prediction - Targets(images)).square().mean(new long[] { -1 });   // B, L
        return (perPatch * mask).sum() / mask.sum();
    }

    public override MaeOutput forward(Tensor images, Generator? generator)
    {
        var mask = SampleMask(images.shape[0], generator, images.device);
        var prediction = ForwardDecoder(ForwardEncoder(images, mask), mask);
        return new MaeOutput(ForwardLoss(images, prediction, mask.Mask), prediction, mask.Mask);
    }

    /// <summary>
    /// For figures: (masked input, reconstruction, reconstruction with kept patches pasted back), each
    /// [B, C, H, W] in the images' space, and the removed pixels [B, 1, H, W] (1 = removed). With NormPixLoss the prediction is un-normalised with each
    /// true patch's statistics, as the MAE paper's visualisations do.
    /// </summary>
    public (Tensor Masked, Tensor Reconstruction, Tensor Pasted, Tensor Removed) Reconstruct(Tensor images, Generator? generator = null)
    {
        using var _ = no_grad();
        var e = Config.Encoder;
        var output = call(images, generator);
        var patches = Patches.Patchify(images, e.PatchSize);
        var prediction = output.Prediction;
        if (Config.NormPixLoss)
        {
            var mean = patches.mean(new long[] { -1 }, keepdim: true);
            var std = (patches.var(-1, unbiased: true, keepdim: true) + 1e-6).sqrt();
            prediction = prediction * std + mean;
        }
        var removed = output.Mask.unsqueeze(-1);
        Tensor Image(Tensor p) => Patches.Unpatchify(p, e.PatchSize, e.Channels, e.GridSize, e.GridSize);
        var removedPixels = Patches.Unpatchify(removed.expand(-1, -1, e.PatchSize * e.PatchSize).contiguous(), e.PatchSize, 1, e.GridSize, e.GridSize);
        return (Image(patches * (1 - removed)), Image(prediction), Image(patches * (1 - removed) + prediction * removed), removedPixels);
    }
}
