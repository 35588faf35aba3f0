using System.Text.Json.Serialization;
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

/// <summary>How BEiT chooses the patches to corrupt (BEiT §2.5; Table 4 "w/o blockwise masking").</summary>
public enum BeitMasking { Blockwise, Random }

/// <summary>What BEiT predicts at a corrupted patch (BEiT §2.3; Table 4 "recover raw pixels").</summary>
public enum BeitTarget { Tokens, Pixels }

/// <summary>
/// BEiT configuration; defaults are the paper's BEiT-B/16 pre-training (§2.5, Appendix B): blockwise masking of ~40%
/// of the patches with blocks of at least 16, visual-token targets, loss on masked positions only, AdamW β = (0.9, 0.999),
/// weight decay 0.05 (learning rate 1.5e-3 at batch 2048, i.e. 1.875e-4 per 256).
/// </summary>
/// <param name="Tokenizer">The tokenizer folder (`researchkit tokenizer train --out DIR`); needed for token targets.</param>
/// <param name="Codes">Codebook size of the tokenizer (the MIM head's classes); filled from the tokenizer folder by <see cref="ForInput"/>.</param>
/// <param name="MinBlock">Smallest block of blockwise masking, in patches (paper: 16 of 196; the tiny 7×7 grid uses 4).</param>
/// <param name="PredictAll">Ablation: the loss counts every position, not only the masked ones (Table 4 "predict all tokens").</param>
public sealed record BeitConfig(
    ViTConfig Encoder, string? Tokenizer = null, int Codes = 8192, double MaskRatio = 0.4, BeitMasking Masking = BeitMasking.Blockwise,
    BeitTarget Target = BeitTarget.Tokens, bool PredictAll = false, int MinBlock = 16) : MethodConfig
{
    public override OptimizerConfig Optimizer { get; init; } = new(BaseLearningRate: 1.875e-4, Beta2: 0.999, WarmupFraction: 0.0125);

    public static BeitConfig ViTBase => new(ViTConfig.Base);

    /// <summary>
    /// CPU scale (PLATFORM.md's reference): the tiny ViT (dim 128, depth 6, 4 heads, patch 4), blocks of at least 4 of the
    /// 49 patches; base learning rate 1.5e-3 per 256 as the tiny MAE (a few epochs need more than the paper's 800).
    /// </summary>
    public static BeitConfig Tiny(int imageSize = 28, int channels = 1) =>
        new(ViTConfig.Tiny(imageSize, channels), MinBlock: 4) { Optimizer = new(BaseLearningRate: 1.5e-3, Beta2: 0.999, WarmupFraction: 0.05) };

    /// <summary>Sizes the encoder for the data and, for token targets, reads the tokenizer folder: its shape must match, its codebook sizes the head.</summary>
    public override (int ImageSize, int Channels) InputShape() => (Encoder.ImageSize, Encoder.Channels);

    public override MethodConfig ForInput(int imageSize, int channels)
    {
        var sized = this with { Encoder = Encoder with { ImageSize = imageSize, Channels = channels } };
        if (Target != BeitTarget.Tokens) return sized;
        return sized with { Codes = TokenTarget.Codes(Tokenizer, imageSize, Encoder.PatchSize, channels, "BEiT",
            "beit: token targets need a tokenizer: --tokenizer DIR (train one with `researchkit tokenizer train --out DIR`), or use --target pixels") };
    }

    public override IPretrainModel Build(BuildContext context) => new Beit(this, context);

    public override ModelSize? Size() =>
        Encoder.Size() + ModelSize.Table(Encoder.Dim) + ModelSize.Linear(Encoder.Dim, Target == BeitTarget.Tokens ? Codes : Encoder.PatchDim, Encoder.Length);

    public override IEnumerable<FrozenDependency> FrozenDependencies() => Tokenizer is { } folder ? [TokenizerRun.Dependency(folder)] : [];

    public override void Validate()
    {
        Encoder.Validate();
        if (!(MaskRatio > 0 && MaskRatio < 1)) throw new ResearchKitException($"beit: mask ratio (--mask-ratio) must be in (0, 1); got {MaskRatio}");
        if (MinBlock < 1 || MinBlock > Encoder.Length)
            throw new ResearchKitException($"beit: the smallest mask block ({MinBlock} patches) must fit the {Encoder.GridSize}×{Encoder.GridSize} patch grid");
        if (Target == BeitTarget.Tokens && string.IsNullOrEmpty(Tokenizer))
            throw new ResearchKitException("beit: token targets need a tokenizer (--tokenizer DIR), or use --target pixels");
        if (Codes < 2) throw new ResearchKitException($"beit: the tokenizer's codebook must have at least 2 codes; got {Codes}");
    }
}

/// <summary>What a BEiT forward pass returns.</summary>
/// <param name="Loss">Scalar: cross-entropy to the visual tokens (or MSE to the pixels) at the counted positions.</param>
/// <param name="Prediction">[B, L, Codes] logits, or [B, L, p·p·C] pixels.</param>
/// <param name="Mask">[B, L] 1 = corrupted (replaced by [MASK]), 0 = kept.</param>
/// <param name="Targets">[B, L] token ids, or [B, L, p·p·C] pixels.</param>
public sealed record BeitOutput(Tensor Loss, Tensor Prediction, Tensor Mask, Tensor Targets);

/// <summary>
/// BEiT (Bao et al., 2021): masked image modelling with visual tokens. About 40% of the patches, chosen in blocks, have
/// their embeddings replaced by a learnable [MASK] embedding; unlike MAE the whole sequence goes through the ViT; a
/// linear MIM head on the final tokens predicts each corrupted patch's visual token (softmax over the tokenizer's
/// codebook). The tokenizer is frozen and loaded from its folder on first use (evaluating a trained backbone does not
/// need it). It sees the images as normalised for this run, so train it on the same data set (its own normalisation is
/// then the same up to the training subset's statistics). Left out at this scale: BEiT's relative position bias and
/// layer scale.
/// </summary>
public sealed class Beit : Module<Tensor, Generator?, BeitOutput>, IPretrainModel
{
    public static MethodInfo Method { get; } = new("beit", "Bao et al., 2021. BEiT: BERT Pre-Training of Image Transformers", typeof(BeitConfig),
        new Dictionary<string, Func<MethodConfig>>
        {
            ["tiny"] = () => BeitConfig.Tiny(),
            ["vit-base"] = () => BeitConfig.ViTBase,
        },
        [
            MethodOption.Text<BeitConfig>("--tokenizer", "tokenizer folder from `researchkit tokenizer train` (token targets)", (c, v) => c with { Tokenizer = v })
                .Only<BeitConfig>(c => c.Target == BeitTarget.Tokens, "--target tokens"),
            MethodOption.Number<BeitConfig>("--mask-ratio", "share of patches corrupted (paper: 0.4)", (c, v) => c with { MaskRatio = v }),
            MethodOption.Choice<BeitConfig, BeitMasking>("--masking", "how corrupted patches are chosen (Table 4)", (c, v) => c with { Masking = v }),
            MethodOption.Choice<BeitConfig, BeitTarget>("--target", "what the MIM head predicts (Table 4)", (c, v) => c with { Target = v }),
            MethodOption.Flag<BeitConfig>("--predict-all", "count every position in the loss, not only the masked ones (Table 4)", c => c with { PredictAll = true }),
            MethodOption.Integer<BeitConfig>("--min-block", "smallest block of blockwise masking, in patches (paper: 16)", (c, v) => c with { MinBlock = v })
                .Only<BeitConfig>(c => c.Masking == BeitMasking.Blockwise, "--masking blockwise"),
        ])
    {
        Evaluations = [new MethodEvaluation("masked-prediction", "accuracy of the predicted token at masked patches (or the masked pixels' PSNR)", MeasureMaskedPrediction)],
    };

    public BeitConfig Config { get; }
    public VisionTransformer Encoder => encoder;
    public Backbone Backbone => encoder;
    public nn.Module Module => this;

    readonly VisionTransformer encoder;
    readonly Parameter maskToken;   // [1, 1, D]: e[M], replaces the embedding of a corrupted patch
    readonly Linear head;           // D → Codes (tokens) or p·p·C (pixels)
    readonly TokenTarget tokenTarget;   // frozen, not part of this module's weights

    public Beit(BeitConfig config, BuildContext? context = null) : base(nameof(Beit))
    {
        config.Validate();
        Config = config;
        var e = config.Encoder;
        encoder = new VisionTransformer(e);
        tokenTarget = new TokenTarget(config.Tokenizer, context ?? BuildContext.Pixels(config), e.PatchSize, "beit");
        maskToken = Parameter(zeros(1, 1, e.Dim));
        head = Linear(e.Dim, config.Target == BeitTarget.Tokens ? config.Codes : e.PatchDim);
        RegisterComponents();
        TransformerInit.Apply(head);
        using var _ = no_grad();
        init.trunc_normal_(maskToken, std: 0.02);
    }

    /// <summary>
    /// One phase over every parameter. BEiT's weight decay (timm's, as MAE): all but 1-D parameters; its no_weight_decay
    /// list also exempts the [CLS] token and positions (fixed buffers here).
    /// </summary>
    public IReadOnlyList<UpdatePhase> Phases() =>
        [new UpdatePhase("loss", (batch, generator) => call(batch.Images, generator).Loss, UpdatePhase.TrainableOf(this),
            NoWeightDecay: name => name == "encoder.clsToken")];

    /// <summary>The frozen tokenizer, loaded from <see cref="BeitConfig.Tokenizer"/> on first use and checked against the encoder's shape.</summary>
    public LoadedTokenizer Tokenizer => tokenTarget.Loaded;

    /// <summary>
    /// [B, L] corruption masks (1 = replaced by [MASK]), drawn on the host from <paramref name="generator"/> (BEiT's blockwise
    /// algorithm is sequential) and uploaded to <paramref name="device"/> without waiting for it.
    /// </summary>
    public Tensor SampleMask(long batch, Generator? generator, Device device)
    {
        var e = Config.Encoder;
        var random = Draws.Host(generator);
        var mask = Masking.BlockwiseBatch(batch, e.GridSize, e.GridSize, Config.MaskRatio, random, Config.MinBlock);
        if (Config.Masking == BeitMasking.Random) mask = Masking.RandomLike(mask, random);
        return Compute.Upload(mask, device);
    }

    /// <summary>The corrupted sequence the encoder sees: [MASK] at masked positions, patch embeddings elsewhere, positions added; [B, L, D].</summary>
    public Tensor EmbedMasked(Tensor images, Tensor mask) => encoder.EmbedPatches(images, mask, maskToken);

    /// <summary>Targets of images [B, C, H, W]: visual tokens [B, L] from the frozen tokenizer, or patches [B, L, p·p·C].</summary>
    public Tensor Targets(Tensor images)
    {
        if (Config.Target == BeitTarget.Pixels) return Patches.Patchify(images, Config.Encoder.PatchSize);
        return tokenTarget.Encode(images);
    }

    /// <summary>
    /// The MIM loss: per position cross-entropy (tokens) or squared error averaged over the patch (pixels), averaged over
    /// the masked positions — or over all positions with <see cref="BeitConfig.PredictAll"/>.
    /// </summary>
    public Tensor MimLoss(Tensor prediction, Tensor targets, Tensor mask)
    {
        var perPosition = Config.Target == BeitTarget.Tokens
            ? functional.cross_entropy(prediction.flatten(0, 1), targets.flatten(), reduction: Reduction.None).reshape(mask.shape)
            : (prediction - targets).square().mean(new long[] { -1 });
        if (Config.PredictAll) return perPosition.mean();
        return (perPosition * mask).sum() / mask.sum().clamp_min(1);
    }

    /// <summary>The encoder on a corrupted sequence → the MIM head's predictions [B, L, ·] (with <paramref name="hidden"/>: each block's output).</summary>
    public Tensor Predict(Tensor images, Tensor mask, List<Tensor>? hidden = null)
    {
        var tokens = encoder.Encode(encoder.PrependCls(EmbedMasked(images, mask)), hidden);
        return Mixed.Head(head, tokens[.., 1..]);
    }

    public override BeitOutput forward(Tensor images, Generator? generator)
    {
        var mask = SampleMask(images.shape[0], generator, images.device);
        var targets = Targets(images);
        var prediction = Predict(images, mask);
        return new BeitOutput(MimLoss(prediction, targets, mask), prediction, mask, targets);
    }

    /// <summary>
    /// On held-out images: top-1 accuracy of the predicted token at masked positions (tokens), or the PSNR of the
    /// predicted masked pixels in [0, 1] (pixels).
    /// </summary>
    static EvaluationReport MeasureMaskedPrediction(EvaluationRequest request)
    {
        var (model, images, normalization) = ((Beit)request.Model, request.Images, request.Normalization);
        var output = model.call(images, request.Generator);
        if (model.Config.Target == BeitTarget.Tokens)
        {
            return EvaluationReport.Of("masked_token_accuracy", TokenTarget.MaskedAccuracy(output.Prediction, output.Targets, output.Mask));
        }
        var e = model.Config.Encoder;
        Tensor Image(Tensor p) => Patches.Unpatchify(p, e.PatchSize, e.Channels, e.GridSize, e.GridSize);
        var removed = Image(output.Mask.unsqueeze(-1).expand(-1, -1, e.PatchDim).contiguous());
        double mse = Reconstruction.Mse(normalization.Invert(Image(output.Prediction)), normalization.Invert(images), removed);
        return EvaluationReport.Of("reconstruction_psnr", Reconstruction.Psnr(mse));
    }
}
