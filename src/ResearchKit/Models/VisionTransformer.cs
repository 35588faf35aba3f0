using ResearchKit.Methods;
using ResearchKit.Layers;
using ResearchKit.Tokenizers;
using System.Text.Json.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>How a sequence of tokens becomes one feature vector.</summary>
public enum Pooling { Mean, Cls }

/// <summary>ViT configuration; defaults are ViT-B/16 (Dosovitskiy et al., 2021, Table 1).</summary>
/// <param name="Pooling">How tokens become one vector for probes and heads (MAE's fine-tuning and probes average the patch tokens).</param>
public sealed record ViTConfig(
    int ImageSize = 224, int PatchSize = 16, int Channels = 3,
    int Dim = 768, int Depth = 12, int Heads = 12, double MlpRatio = 4.0, Pooling Pooling = Pooling.Mean)
{
    [JsonIgnore] public int GridSize => ImageSize / PatchSize;
    /// <summary>Number of patch tokens L.</summary>
    [JsonIgnore] public int Length => GridSize * GridSize;
    /// <summary>Values per flattened patch: p·p·C.</summary>
    [JsonIgnore] public int PatchDim => PatchSize * PatchSize * Channels;

    public static ViTConfig Base => new();
    public static ViTConfig Large => new(Dim: 1024, Depth: 24, Heads: 16);
    public static ViTConfig Huge => new(PatchSize: 14, Dim: 1280, Depth: 32, Heads: 16);

    /// <summary>CPU-scale ViT for 28×28 or 32×32 images: patch 4, dim 128, depth 6, 4 heads (~1.2 M parameters).</summary>
    public static ViTConfig Tiny(int imageSize = 28, int channels = 1) => new(imageSize, 4, channels, 128, 6, 4);

    /// <summary>Patch embedding, [CLS], the blocks over <paramref name="tokens"/> positions (default: every patch and [CLS]), the final norm.</summary>
    public ModelSize Size(double? tokens = null) =>
        ModelSize.Linear(PatchDim, Dim, Length) + ModelSize.Table(3 * Dim) + ModelSize.TransformerBlocks(Depth, Dim, Heads, MlpRatio, tokens ?? Length + 1);

    public void Validate()
    {
        if (ImageSize <= 0 || PatchSize <= 0 || ImageSize % PatchSize != 0)
            throw new ResearchKitException($"ViT: image size {ImageSize} must be a positive multiple of patch size {PatchSize}");
        if (Dim % Heads != 0) throw new ResearchKitException($"ViT: dim {Dim} must be divisible by heads {Heads}");
        if (Dim % 4 != 0) throw new ResearchKitException($"ViT: dim {Dim} must be divisible by 4 for 2-D sin-cos positions");
        if (Depth < 1) throw new ResearchKitException($"ViT: depth must be at least 1; got {Depth}");
    }
}

/// <summary>
/// Vision Transformer backbone: linear patch embedding (equivalent to a stride-p convolution), fixed
/// 2-D sin-cos positions, a learnable [CLS] token, pre-norm blocks. Per-layer features are each block's
/// tokens pooled (mean of the patch tokens, or [CLS]); the pooled final features use the final norm.
/// </summary>
public sealed class VisionTransformer : Backbone
{
    public ViTConfig Config { get; }

    Pooling Pooling => Config.Pooling;

    readonly Linear patchEmbed;
    readonly Parameter clsToken;
    readonly Tensor posEmbed;                 // [1, 1 + L, D], fixed (a buffer: RegisterComponents registers Tensor fields)
    readonly ModuleList<TransformerBlock> blocks;
    readonly LayerNorm norm;

    public VisionTransformer(ViTConfig config) : base(nameof(VisionTransformer))
    {
        config.Validate();
        Config = config;
        patchEmbed = Linear(config.PatchDim, config.Dim);
        clsToken = Parameter(zeros(1, 1, config.Dim));
        posEmbed = PositionalEmbedding.SinCos2D(config.Dim, config.GridSize, clsToken: true);
        blocks = new ModuleList<TransformerBlock>(
            Enumerable.Range(0, config.Depth).Select(_ => new TransformerBlock(config.Dim, config.Heads, config.MlpRatio)).ToArray());
        norm = LayerNorm(config.Dim, eps: 1e-6);
        RegisterComponents();

        TransformerInit.Apply(this);
        using var _ = no_grad();
        init.normal_(clsToken, std: 0.02);
    }

    public override int Depth => Config.Depth;
    public override int FeatureDim => Config.Dim;

    /// <summary>MAE's fine-tuning exempts the [CLS] token from weight decay (its no_weight_decay list; positions are fixed here).</summary>
    public override IReadOnlyCollection<string> NoWeightDecay => [nameof(clsToken)];

    /// <summary>images [B, C, H, W] → patch tokens with positions [B, L, D] (no [CLS]).</summary>
    public Tensor EmbedPatches(Tensor images) =>
        Mixed.Linear(patchEmbed, Patches.Patchify(images, Config.PatchSize)) + PatchPositions;

    /// <summary>
    /// A corrupted input (BEiT §2.3; MAE's mask-token-in-encoder ablation): patch embeddings where <paramref name="mask"/>
    /// [B, L] is 1 replaced by <paramref name="maskToken"/> [1, 1, D], then positions added → [B, L, D] (no [CLS]).
    /// </summary>
    public Tensor EmbedPatches(Tensor images, Tensor mask, Tensor maskToken)
    {
        var embedded = Mixed.Head(patchEmbed, Patches.Patchify(images, Config.PatchSize));         // B, L, D (float32: blended below)
        if (mask.dim() != 2 || mask.shape[0] != embedded.shape[0] || mask.shape[1] != embedded.shape[1])
            throw new ArgumentException($"mask must be [B, L] = [{embedded.shape[0]}, {embedded.shape[1]}]; got [{string.Join(", ", mask.shape)}]", nameof(mask));
        var m = mask.unsqueeze(-1).to_type(embedded.dtype);
        return embedded * (1 - m) + maskToken * m + PatchPositions;
    }

    /// <summary>Positions of the patch tokens: [1, L, D].</summary>
    public Tensor PatchPositions => posEmbed[.., 1..];

    /// <summary>tokens [B, T, D] → [B, 1 + T, D] with the [CLS] token (plus its position) in front.</summary>
    public Tensor PrependCls(Tensor tokens)
    {
        var cls = (clsToken + posEmbed[.., ..1]).expand(tokens.shape[0], -1, -1);
        return cat(new[] { cls, tokens }, dim: 1);
    }

    /// <summary>
    /// Runs the blocks on [B, T, D]; returns the final-normed output [B, T, D]. When
    /// <paramref name="hidden"/> is given, each block's raw output is appended to it (layer 0 … depth−1).
    /// </summary>
    public Tensor Encode(Tensor x, List<Tensor>? hidden = null)
    {
        foreach (var block in blocks)
        {
            x = block.call(x);
            hidden?.Add(x);
        }
        return norm.call(x);
    }

    /// <summary>images [B, C, H, W] → normed tokens [B, 1 + L, D], [CLS] first.</summary>
    public Tensor Tokens(Tensor images) => Encode(PrependCls(EmbedPatches(images)));

    /// <summary>images → pooled, normed final tokens [B, D].</summary>
    public override Tensor Features(Tensor images) => Pool(Tokens(images), Pooling);

    /// <summary>Pooled features [B, D] of every block (layer 0 … depth−1), for per-layer probes.</summary>
    public override Tensor[] LayerFeatures(Tensor images)
    {
        return TransformerBlock.PooledOutputs(blocks, PrependCls(EmbedPatches(images)), h => Pool(h, Pooling));
    }

    /// <summary>[B, 1 + L, D] → [B, D]: mean of the patch tokens, or the [CLS] token.</summary>
    public static Tensor Pool(Tensor tokens, Pooling pooling) =>
        pooling == Pooling.Cls ? tokens[.., 0] : tokens[.., 1..].mean(new long[] { 1 });

    /// <summary>Attention probabilities of block <paramref name="layer"/>: [B, H, 1 + L, 1 + L].</summary>
    public Tensor AttentionMaps(Tensor images, int layer)
    {
        var x = PrependCls(EmbedPatches(images));
        for (int i = 0; i < layer; i++) x = blocks[i].call(x);
        return blocks[layer].AttentionWeights(x);
    }

    /// <summary>Only the last <paramref name="trainableBlocks"/> blocks and the final norm stay trainable (MAE §4.3).</summary>
    public override void FreezeAllBut(int trainableBlocks) => FreezeAllBut(trainableBlocks, blocks, norm.parameters());
}
