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

/// <summary>How MAE picks the patches to remove (MAE §4.1, Table 1f / Fig. 6): uniformly at random, in blocks (BEiT's), or on a regular grid.</summary>
public enum MaskSampling { Random, Block, Grid }

/// <summary>What MAE's decoder reconstructs at a removed patch (MAE Table 1d; §A.1 for the normalised pixels).</summary>
public enum MaeTarget
{
    /// <summary>The patch's pixels.</summary>
    Pixel,
    /// <summary>The patch's pixels normalised by its own mean and standard deviation (the official code's norm_pix_loss).</summary>
    NormPixel,
    /// <summary>The patch's largest PCA coefficients (<see cref="MaeConfig.PcaComponents"/>; PCA of training patches).</summary>
    Pca,
    /// <summary>The patch's visual token from a trained tokenizer (<see cref="MaeConfig.Tokenizer"/>); cross-entropy over the codebook.</summary>
    Token,
}

/// <summary>
/// MAE configuration; defaults are the paper's ViT-L/16 with its default decoder (MAE §4.1, Table 1:
/// decoder depth 8, width 512, mask ratio 0.75, pixel targets) and its pre-training recipe (Appendix A.1).
/// </summary>
/// <param name="PcaComponents">PCA coefficients predicted with the PCA target (paper: the 96 largest of a 16×16×3 patch's 768).</param>
/// <param name="Tokenizer">Tokenizer folder for the token target (`researchkit tokenizer train --out DIR`).</param>
/// <param name="Codes">The tokenizer's codebook size; filled from the folder by <see cref="ForInput"/>.</param>
/// <param name="MinBlock">Smallest block of block sampling, in patches (BEiT's 16 of 196; the tiny 7×7 grid uses 4).</param>
public sealed record MaeConfig(
    ViTConfig Encoder,
    int DecoderDim = 512, int DecoderDepth = 8, int DecoderHeads = 16,
    double MaskRatio = 0.75, MaeTarget Target = MaeTarget.Pixel, bool MaskTokenInEncoder = false,
    MaskSampling Sampling = MaskSampling.Random, int MinBlock = 16, int PcaComponents = 96, string? Tokenizer = null, int Codes = 0) : MethodConfig
{
    public override OptimizerConfig Optimizer { get; init; } = new();

    public static MaeConfig ViTBase => new(ViTConfig.Base);
    public static MaeConfig ViTLarge => new(ViTConfig.Large);

    /// <summary>
    /// CPU-scale MAE (PLATFORM.md reference): tiny ViT encoder, decoder dim 64, depth 2, 4 heads. Base learning rate
    /// 1.5e-3: the paper's 1.5e-4 is tuned for 800+ ImageNet epochs; a tiny model trained for a few epochs needs more
    /// (measured on Fashion-MNIST; see environment.md). Block sampling uses blocks of at least 4 of the 49 patches; the
    /// PCA target keeps 4 of a 4×4 patch's 16 coefficients (see environment.md for the variance they explain).
    /// </summary>
    public static MaeConfig Tiny(int imageSize = 28, int channels = 1) =>
        new(ViTConfig.Tiny(imageSize, channels), DecoderDim: 64, DecoderDepth: 2, DecoderHeads: 4, MinBlock: 4, PcaComponents: 4)
        { Optimizer = new(BaseLearningRate: 1.5e-3) };

    /// <summary>Sizes the encoder for the data and, for the token target, reads the tokenizer folder: its shape must match, its codebook sizes the head.</summary>
    public override (int ImageSize, int Channels) InputShape() => (Encoder.ImageSize, Encoder.Channels);

    public override MethodConfig ForInput(int imageSize, int channels)
    {
        var sized = this with { Encoder = Encoder with { ImageSize = imageSize, Channels = channels } };
        if (Target != MaeTarget.Token) return sized;
        return sized with { Codes = TokenTarget.Codes(Tokenizer, imageSize, Encoder.PatchSize, channels, "MAE",
            "mae: --target token needs a tokenizer: --tokenizer DIR (train one with `researchkit tokenizer train --out DIR`)") };
    }

    public override IPretrainModel Build(BuildContext context) => new MaskedAutoencoder(this, context);

    /// <summary>The encoder on the kept patches (all of them, with mask tokens, in the Table 1c ablation), then the decoder on every patch.</summary>
    public override ModelSize? Size()
    {
        double patches = Encoder.Length, kept = MaskTokenInEncoder ? patches : Math.Ceiling(patches * (1 - MaskRatio));
        return Encoder.Size(kept + 1) + ModelSize.Linear(Encoder.Dim, DecoderDim, patches + 1) + ModelSize.Table(Encoder.Dim + 3 * DecoderDim)
            + ModelSize.TransformerBlocks(DecoderDepth, DecoderDim, DecoderHeads, 4.0, patches + 1) + ModelSize.Linear(DecoderDim, PredictionDim, patches);
    }

    public override IEnumerable<FrozenDependency> FrozenDependencies() =>
        Target == MaeTarget.Token && Tokenizer is { } folder ? [TokenizerRun.Dependency(folder)] : [];

    /// <summary>This configuration with a decoder of width <paramref name="width"/>: heads of at least 16 dimensions, at most as many as now (Table 1b).</summary>
    public MaeConfig WithDecoderWidth(int width) => this with { DecoderDim = width, DecoderHeads = Math.Max(1, Math.Min(DecoderHeads, width / 16)) };

    /// <summary>Width of the decoder's prediction per patch: p·p·C pixels, the PCA coefficients, or the codebook's logits.</summary>
    public int PredictionDim => Target switch
    {
        MaeTarget.Pca => PcaComponents,
        MaeTarget.Token => Codes,
        _ => Encoder.PatchDim,
    };

    public override void Validate()
    {
        Encoder.Validate();
        if (!(MaskRatio > 0 && MaskRatio < 1)) throw new ResearchKitException($"mae: mask ratio (--mask-ratio) must be in (0, 1); got {MaskRatio}");
        if (DecoderDepth < 1) throw new ResearchKitException($"mae: decoder depth (--decoder-depth) must be at least 1; got {DecoderDepth}");
        if (DecoderDim < 4 || DecoderDim % 4 != 0)
            throw new ResearchKitException($"mae: decoder dim (--decoder-dim) must be a positive multiple of 4; got {DecoderDim}");
        if (DecoderHeads < 1 || DecoderDim % DecoderHeads != 0)
            throw new ResearchKitException($"mae: decoder dim {DecoderDim} must be a multiple of the decoder heads ({DecoderHeads})");
        if (Sampling == MaskSampling.Grid && Math.Abs(MaskRatio - 0.75) > 1e-9 && Math.Abs(MaskRatio - 0.5) > 1e-9)
            throw new ResearchKitException($"mae: grid sampling is a checkerboard at mask ratio 0.5 or keeps one of every 2×2 patches at 0.75; got --mask-ratio {MaskRatio}");
        if (Sampling == MaskSampling.Block && (MinBlock < 1 || MinBlock > Encoder.Length))
            throw new ResearchKitException($"mae: the smallest mask block (--min-block {MinBlock}) must fit the {Encoder.GridSize}×{Encoder.GridSize} patch grid");
        if (Target == MaeTarget.Pca && (PcaComponents < 1 || PcaComponents > Encoder.PatchDim))
            throw new ResearchKitException($"mae: --pca-components must be in 1 … {Encoder.PatchDim} (the patch dimension {Encoder.PatchSize}×{Encoder.PatchSize}×{Encoder.Channels}); got {PcaComponents}");
        if (Target == MaeTarget.Token && string.IsNullOrEmpty(Tokenizer))
            throw new ResearchKitException("mae: --target token needs a tokenizer (--tokenizer DIR)");
        if (Target == MaeTarget.Token && Codes < 2)
            throw new ResearchKitException($"mae: the tokenizer's codebook must have at least 2 codes; got {Codes}");
    }

    /// <summary>
    /// Forward FLOPs per image (<see cref="TransformerBlock.Flops"/>'s convention): the encoder on the kept patches plus
    /// [CLS] (every patch with mask tokens in the encoder) and the decoder on all patches plus [CLS]. The patch embedding
    /// projects all L patches, as this implementation (and the official one) does before dropping the removed ones.
    /// </summary>
    public MaeFlops Flops()
    {
        var e = Encoder;
        long length = e.Length, encoded = 1 + (MaskTokenInEncoder ? length : Masking.KeptCount(e.Length, MaskRatio)), decoded = 1 + length;
        double encoder = 2.0 * length * e.PatchDim * e.Dim + e.Depth * TransformerBlock.Flops(encoded, e.Dim, e.MlpRatio);
        double decoder = 2.0 * encoded * e.Dim * DecoderDim + DecoderDepth * TransformerBlock.Flops(decoded, DecoderDim) + 2.0 * decoded * DecoderDim * PredictionDim;
        return new MaeFlops(encoded, encoder, decoder);
    }
}

/// <summary>Forward FLOPs per image of an MAE configuration (see <see cref="MaeConfig.Flops"/>).</summary>
/// <param name="EncoderTokens">Tokens the encoder processes, [CLS] included.</param>
public sealed record MaeFlops(long EncoderTokens, double Encoder, double Decoder)
{
    public double Total => Encoder + Decoder;
}

/// <summary>What an MAE forward pass returns.</summary>
/// <param name="Loss">Scalar: MSE (cross-entropy for tokens) on removed patches only.</param>
/// <param name="Prediction">[B, L, PredictionDim] in target space: pixels, normalised pixels, PCA coefficients or token logits (<see cref="MaskedAutoencoder.ToPixels"/> maps it back to pixels).</param>
/// <param name="Mask">[B, L] 1 = removed, 0 = kept.</param>
public sealed record MaeOutput(Tensor Loss, Tensor Prediction, Tensor Mask);

/// <summary>
/// Masked autoencoder (He et al., 2021). The encoder sees only the kept patches (no mask tokens);
/// a light decoder gets the encoded tokens plus a shared mask token at every removed position,
/// adds its own positions, and predicts each removed patch's target: its pixels by default, or normalised pixels, PCA
/// coefficients or a visual token (Table 1d). Methods follow the data flow.
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
            MethodOption.Choice<MaeConfig, MaeTarget>("--target", "what the decoder reconstructs (Table 1d)", (c, v) => c with { Target = v }),
            MethodOption.Flag<MaeConfig>("--norm-pix-loss", "the official code's name for --target norm-pixel", c => c with { Target = MaeTarget.NormPixel }),
            MethodOption.Integer<MaeConfig>("--pca-components", "PCA coefficients predicted with --target pca (paper: 96 of 768)", (c, v) => c with { PcaComponents = v })
                .Only<MaeConfig>(c => c.Target == MaeTarget.Pca, "--target pca"),
            MethodOption.Text<MaeConfig>("--tokenizer", "tokenizer folder for --target token (`researchkit tokenizer train`)", (c, v) => c with { Tokenizer = v })
                .Only<MaeConfig>(c => c.Target == MaeTarget.Token, "--target token"),
            MethodOption.Integer<MaeConfig>("--decoder-depth", "decoder blocks (paper: 8; Table 1a)", (c, v) => c with { DecoderDepth = v }),
            MethodOption.Integer<MaeConfig>("--decoder-dim", "decoder width (paper: 512; Table 1b)",
                (c, v) => c.WithDecoderWidth(v)),
            MethodOption.Choice<MaeConfig, MaskSampling>("--sampling", "how removed patches are chosen (Table 1f)", (c, v) => c with { Sampling = v }),
            MethodOption.Integer<MaeConfig>("--min-block", "smallest block of --sampling block, in patches (BEiT: 16)", (c, v) => c with { MinBlock = v })
                .Only<MaeConfig>(c => c.Sampling == MaskSampling.Block, "--sampling block"),
            MethodOption.Flag<MaeConfig>("--mask-token-in-encoder", "the encoder also sees mask tokens (Table 1c ablation, ~3.3× FLOPs)", c => c with { MaskTokenInEncoder = true }),
        ])
    {
        Evaluations = [new MethodEvaluation("reconstruction", "PSNR of the removed patches in pixels (and the masked-token accuracy with the token target)", MeasureReconstruction)],
        Figures = [new MethodFigure("reconstructions", "test images, their visible patches, the reconstruction, and it pasted into the visible patches (MAE Fig. 2)",
            [], DrawReconstructions)],
        Studies = [MaeEfficiency.Study],
    };

    /// <summary>`show RUN --what reconstructions`: rows of originals, visible patches, reconstructions and reconstructions
    /// pasted into the visible patches, in pixels, for a fresh mask per image.</summary>
    static Figure DrawReconstructions(FigureRequest request)
    {
        var mae = (MaskedAutoencoder)request.Model;
        var images = request.TestImages(request.Count);
        var (masked, reconstruction, pasted, _) = mae.Reconstruct(images, request.Generator);
        return new Figure([("original", request.Pixels(images)), ("visible", request.Pixels(masked)), ("reconstruction", request.Pixels(reconstruction)),
            ("with visible", request.Pixels(pasted))], $"reconstructed {request.Count} test images at mask ratio {mae.Config.MaskRatio}");
    }

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

    /// <summary>
    /// Reconstruction PSNR (dB) on the removed pixels, in pixel space [0, 1], whatever the target (PCA coefficients and
    /// tokens are decoded to pixels first); with the token target also the accuracy of the predicted token at removed patches.
    /// </summary>
    static EvaluationReport MeasureReconstruction(EvaluationRequest request)
    {
        var (model, images, normalization) = ((MaskedAutoencoder)request.Model, request.Images, request.Normalization);
        var output = model.call(images, request.Generator);
        var (_, reconstruction, _, removed) = model.Reconstruct(images, output);
        double mse = Reconstruction.Mse(normalization.Invert(reconstruction), normalization.Invert(images), removed);
        var metrics = new Dictionary<string, double> { ["reconstruction_psnr"] = Reconstruction.Psnr(mse) };
        if (model.Config.Target == MaeTarget.Token)
        {
            metrics["masked_token_accuracy"] = TokenTarget.MaskedAccuracy(output.Prediction, model.tokenTarget!.Encode(images), output.Mask);
        }
        return new EvaluationReport(metrics);
    }

    readonly VisionTransformer encoder;
    readonly Parameter? encoderMaskToken;     // only for the "mask token in the encoder" ablation
    readonly Linear decoderEmbed;
    readonly Parameter maskToken;
    readonly Tensor decoderPos;               // [1, 1 + L, Dd], fixed
    readonly ModuleList<TransformerBlock> decoderBlocks;
    readonly LayerNorm decoderNorm;
    readonly Linear decoderPred;
    readonly PatchPca? pca;                   // PCA target: fitted on the first batch it sees (in pre-training, the first training batch)
    readonly TokenTarget? tokenTarget;        // token target: frozen, not part of the weights

    public MaskedAutoencoder(MaeConfig config, BuildContext? context = null) : base(nameof(MaskedAutoencoder))
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
        decoderPred = Linear(config.DecoderDim, config.PredictionDim);
        if (config.Target == MaeTarget.Pca) pca = new PatchPca(e.PatchDim, config.PcaComponents);
        if (config.Target == MaeTarget.Token) tokenTarget = new TokenTarget(config.Tokenizer, context ?? BuildContext.Pixels(config), e.PatchSize, "mae");
        RegisterComponents();

        TransformerInit.Apply(decoderBlocks);
        TransformerInit.Apply(decoderEmbed);
        TransformerInit.Apply(decoderPred);
        using var _ = no_grad();
        init.normal_(maskToken, std: 0.02);
        if (encoderMaskToken is not null) init.normal_(encoderMaskToken, std: 0.02);
    }

    /// <summary>
    /// Draws the mask for a batch of B images: keep/restore indices and [B, L] mask (1 = removed), on <paramref name="device"/>
    /// with no wait for it: random masks are drawn there; block masks are drawn on the host (BEiT's algorithm is sequential)
    /// and uploaded asynchronously; the grid is uploaded once.
    /// </summary>
    public PatchMask SampleMask(long batch, Generator? generator, Device device)
    {
        var e = Config.Encoder;
        int keep = Masking.KeptCount(e.Length, Config.MaskRatio);
        switch (Config.Sampling)
        {
            case MaskSampling.Grid:
                return Masking.FromMask(GridMask(device).expand(batch, -1), keep);
            case MaskSampling.Block:
                var blocks = Masking.BlockwiseExact(batch, e.GridSize, e.GridSize, Config.MaskRatio, Draws.Host(generator), Config.MinBlock);
                return Masking.FromMask(Compute.Upload(blocks, device), keep);
            default:
                return Masking.Random(batch, e.Length, Config.MaskRatio, generator, device);
        }
    }

    Tensor? gridMask;   // [1, L] on the device the model last ran on: the same for every image and step

    Tensor GridMask(Device device)
    {
        if (gridMask is null || gridMask.device.type != device.type || gridMask.device.index != device.index)
        {
            var e = Config.Encoder;
            gridMask?.Dispose();
            gridMask = Compute.Upload(Masking.GridExact(e.GridSize, e.GridSize, Config.MaskRatio).reshape(1, -1), device).DetachFromDisposeScope();
        }
        return gridMask;
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

    /// <summary>latent → predictions [B, L, PredictionDim] in target space; mask tokens fill removed positions, order restored.</summary>
    public Tensor ForwardDecoder(Tensor latent, PatchMask mask)
    {
        var x = Mixed.Head(decoderEmbed, latent);                                      // B, 1 + K, Dd (float32: joins the mask tokens)
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
        return Mixed.Head(decoderPred, decoderNorm.call(x))[.., 1..];                  // drop [CLS]
    }

    /// <summary>Pixels normalised by each patch's own mean and (unbiased) variance, and those statistics: the norm-pixel target.</summary>
    static (Tensor Normalised, Tensor Mean, Tensor Std) NormalisePatches(Tensor patches)
    {
        var mean = patches.mean(new long[] { -1 }, keepdim: true);
        var std = (patches.var(-1, unbiased: true, keepdim: true) + 1e-6).sqrt();
        return ((patches - mean) / std, mean, std);
    }

    /// <summary>The PCA of the target (null unless the target is PCA coefficients).</summary>
    public PatchPca? Pca => pca;

    /// <summary>
    /// Per-patch targets: pixels [B, L, p·p·C], normalised pixels, PCA coefficients [B, L, k] (the PCA is fitted on these
    /// images' patches if it has not been yet), or tokens [B, L] (int64).
    /// </summary>
    public Tensor Targets(Tensor images)
    {
        if (Config.Target == MaeTarget.Token) return tokenTarget!.Encode(images);
        var patches = Patches.Patchify(images, Config.Encoder.PatchSize);
        switch (Config.Target)
        {
            case MaeTarget.NormPixel: return NormalisePatches(patches).Normalised;
            case MaeTarget.Pca:
                if (!pca!.IsFitted) pca.Fit(patches);
                return pca.Encode(patches);
            default: return patches;
        }
    }

    /// <summary>Loss per patch — squared error averaged over the patch's target values, or cross-entropy over the codebook — averaged over removed patches only.</summary>
    public Tensor ForwardLoss(Tensor images, Tensor prediction, Tensor mask)
    {
        var targets = Targets(images);
        var perPatch = Config.Target == MaeTarget.Token
            ? functional.cross_entropy(prediction.flatten(0, 1), targets.flatten(), reduction: Reduction.None).reshape(mask.shape)
            : (prediction - targets).square().mean(new long[] { -1 });                                         // B, L
        return (perPatch * mask).sum() / mask.sum();
    }

    /// <summary>
    /// A prediction in target space → patches [B, L, p·p·C] in the images' (normalised) space, so every target is shown and
    /// scored in pixels: normalised pixels are un-normalised with each true patch's mean and standard deviation (as the
    /// MAE paper's figures do), PCA coefficients go back through the basis, tokens (argmax) through the tokenizer's decoder.
    /// </summary>
    public Tensor ToPixels(Tensor prediction, Tensor images)
    {
        var p = Config.Encoder.PatchSize;
        if (Config.Target == MaeTarget.NormPixel)
        {
            var (_, mean, std) = NormalisePatches(Patches.Patchify(images, p));
            return prediction * std + mean;
        }
        return Config.Target switch
        {
            MaeTarget.Pca => pca!.Decode(prediction),
            MaeTarget.Token => Patches.Patchify(tokenTarget!.Decode(prediction.argmax(-1)), p),
            _ => prediction,
        };
    }

    public override MaeOutput forward(Tensor images, Generator? generator)
    {
        var mask = SampleMask(images.shape[0], generator, images.device);
        var prediction = ForwardDecoder(ForwardEncoder(images, mask), mask);
        return new MaeOutput(ForwardLoss(images, prediction, mask.Mask), prediction, mask.Mask);
    }

    /// <summary>
    /// For figures: (masked input, reconstruction, reconstruction with kept patches pasted back), each [B, C, H, W] in the
    /// images' space whatever the target (see <see cref="ToPixels"/>), and the removed pixels [B, 1, H, W] (1 = removed).
    /// </summary>
    public (Tensor Masked, Tensor Reconstruction, Tensor Pasted, Tensor Removed) Reconstruct(Tensor images, Generator? generator = null)
    {
        using var _ = no_grad();
        return Reconstruct(images, call(images, generator));
    }

    (Tensor Masked, Tensor Reconstruction, Tensor Pasted, Tensor Removed) Reconstruct(Tensor images, MaeOutput output)
    {
        var e = Config.Encoder;
        var patches = Patches.Patchify(images, e.PatchSize);
        var prediction = ToPixels(output.Prediction, images);
        var removed = output.Mask.unsqueeze(-1);
        Tensor Image(Tensor p) => Patches.Unpatchify(p, e.PatchSize, e.Channels, e.GridSize, e.GridSize);
        var removedPixels = Patches.Unpatchify(removed.expand(-1, -1, e.PatchSize * e.PatchSize).contiguous(), e.PatchSize, 1, e.GridSize, e.GridSize);
        return (Image(patches * (1 - removed)), Image(prediction), Image(patches * (1 - removed) + prediction * removed), removedPixels);
    }
}
