using ResearchKit.Methods;
using static TorchSharp.torch;

namespace ResearchKit.Tokenizers;

/// <summary>
/// A frozen visual tokenizer that a method predicts (BEiT's MIM target; MAE's "dVAE token" target, Table 1d). It is
/// read from its folder on first use and is not part of the method's weights, so evaluating a trained backbone does not
/// need the folder. One token per ViT patch: the tokenizer's image size, patch size and channels must be the model's.
/// It is one of the model's frozen dependencies (<see cref="BuildContext.Dependencies"/>), where tests hand over a loaded one.
/// </summary>
public sealed class TokenTarget(string? directory, BuildContext context, int patchSize, string owner)
{
    /// <summary>The tokenizer, loaded and checked against the model's shape on first use.</summary>
    public LoadedTokenizer Loaded => context.Dependencies.Tokenizer(
        directory ?? throw new ResearchKitException($"{owner}: this configuration has no tokenizer (--tokenizer DIR)"),
        context.ImageSize, patchSize, context.Channels);

    /// <summary>images [B, C, H, W] → tokens [B, L] (raster order), without gradients.</summary>
    public Tensor Encode(Tensor images) => Loaded.Tokenizer.Encode(images).reshape(images.shape[0], -1);

    /// <summary>tokens [B, L] → images [B, C, H, W] in the space the tokenizer was trained in.</summary>
    public Tensor Decode(Tensor tokens)
    {
        int grid = context.ImageSize / patchSize;
        return Loaded.Tokenizer.Decode(tokens.reshape(tokens.shape[0], grid, grid));
    }

    /// <summary>Top-1 accuracy of token logits [B, L, K] against tokens [B, L] at the positions where <paramref name="mask"/> [B, L] is 1.</summary>
    public static double MaskedAccuracy(Tensor logits, Tensor tokens, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var correct = logits.argmax(-1).eq(tokens).to_type(ScalarType.Float32);
        return ((correct * mask).sum() / mask.sum()).item<float>();
    }

    /// <summary>
    /// The codebook size of the tokenizer in <paramref name="directory"/>, after checking (before anything is written) that
    /// it exists and was built for this shape; <paramref name="needed"/> is the one-line error when no folder was given.
    /// </summary>
    public static int Codes(string? directory, int imageSize, int patchSize, int channels, string owner, string needed)
    {
        if (string.IsNullOrEmpty(directory)) throw new ResearchKitException(needed);
        var manifest = TokenizerRun.ReadManifest(directory);
        manifest.RequireShape(directory, imageSize, patchSize, channels, $"this {owner}", " (one token per ViT patch)");
        return manifest.Tokenizer.Codes;
    }
}
