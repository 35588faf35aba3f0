using static TorchSharp.torch;

namespace ResearchKit.Tokenizers;

/// <summary>
/// Images ↔ sequences of flattened non-overlapping patches (ViT §3.1, MAE §3).
/// Patch order is raster (row-major over the grid); each patch is flattened as (p, p, C),
/// the layout MAE's reference uses, so per-patch pixel targets match its recipe.
/// </summary>
public static class Patches
{
    /// <summary>images [B, C, H, W] → patches [B, L, p·p·C] with L = (H/p)·(W/p).</summary>
    public static Tensor Patchify(Tensor images, int patchSize)
    {
        if (images.dim() != 4) throw new ArgumentException($"images must be [B, C, H, W]; got shape [{string.Join(", ", images.shape)}]", nameof(images));
        var (B, C, H, W) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3]);
        if (H % patchSize != 0 || W % patchSize != 0)
            throw new ArgumentException($"image size {H}×{W} is not divisible by patch size {patchSize}", nameof(patchSize));
        long h = H / patchSize, w = W / patchSize;
        var x = images.reshape(B, C, h, patchSize, w, patchSize);
        x = x.permute(0, 2, 4, 3, 5, 1);                      // B, h, w, p, p, C
        return x.reshape(B, h * w, patchSize * patchSize * C);
    }

    /// <summary>patches [B, L, p·p·C] → images [B, C, h·p, w·p]; the inverse of <see cref="Patchify"/>.</summary>
    public static Tensor Unpatchify(Tensor patches, int patchSize, int channels, int gridHeight, int gridWidth)
    {
        var (B, L, P) = (patches.shape[0], patches.shape[1], patches.shape[2]);
        if (L != (long)gridHeight * gridWidth || P != (long)patchSize * patchSize * channels)
            throw new ArgumentException($"patches [B, {L}, {P}] do not fit a {gridHeight}×{gridWidth} grid of {patchSize}×{patchSize}×{channels} patches", nameof(patches));
        var x = patches.reshape(B, gridHeight, gridWidth, patchSize, patchSize, channels);
        x = x.permute(0, 5, 1, 3, 2, 4);                      // B, C, h, p, w, p
        return x.reshape(B, channels, gridHeight * patchSize, gridWidth * patchSize);
    }
}
