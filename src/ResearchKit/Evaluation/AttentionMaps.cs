using ResearchKit.Models;
using ResearchKit.Reporting;
using static TorchSharp.torch;

namespace ResearchKit.Evaluation;

/// <summary>
/// The [CLS] token's self-attention over the image patches (BEiT §3.4, Fig. 2: without labels, the pre-trained
/// model's attention separates objects from background).
/// </summary>
public static class AttentionMaps
{
    /// <summary>
    /// Attention of the [CLS] query in block <paramref name="layer"/>: [B, H, 1 + L] probabilities over all keys ([CLS]
    /// first), one row per head; each row sums to one. <paramref name="head"/> keeps one head ([B, 1, 1 + L]).
    /// </summary>
    public static Tensor ClsAttention(VisionTransformer vit, Tensor images, int layer, int? head = null)
    {
        if (layer < 0 || layer >= vit.Depth) throw new ArgumentOutOfRangeException(nameof(layer), layer, $"the ViT has layers 0 … {vit.Depth - 1}");
        if (head is { } h && (h < 0 || h >= vit.Config.Heads)) throw new ArgumentOutOfRangeException(nameof(head), h, $"the ViT has heads 0 … {vit.Config.Heads - 1}");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var cls = vit.AttentionMaps(images, layer)[.., .., 0];                          // B, H, 1 + L
        if (head is { } one) cls = cls[.., one..(one + 1)];
        return cls.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Maps to draw over images [B, C, H, W]: the [CLS] attention to the patches (averaged over heads unless one is
    /// chosen), up-sampled bilinearly to the image size and scaled to [0, 1] per image → [B, 1, H, W].
    /// </summary>
    public static Tensor Upsampled(VisionTransformer vit, Tensor images, int layer, int? head = null)
    {
        using var scope = NewDisposeScope();
        var g = vit.Config.GridSize;
        var patches = ClsAttention(vit, images, layer, head)[.., .., 1..].mean(new long[] { 1 }).reshape(-1, 1, g, g);   // B, 1, g, g
        var size = new long[] { images.shape[2], images.shape[3] };
        var map = nn.functional.interpolate(patches, size, mode: InterpolationMode.Bilinear, align_corners: false);
        var low = map.amin(new long[] { 1, 2, 3 }, keepdim: true);
        var high = map.amax(new long[] { 1, 2, 3 }, keepdim: true);
        return ((map - low) / (high - low).clamp_min(1e-12)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Images in [0, 1] [B, C, H, W] with a heat map [B, 1, H, W] in [0, 1] drawn over them → RGB [B, 3, H, W]: the
    /// image dimmed to grey, attention added in red and yellow.
    /// </summary>
    public static Tensor Overlay(Tensor images01, Tensor heat)
    {
        var grey = images01.mean(new long[] { 1 }, keepdim: true) * 0.6;
        var red = (grey + heat).clamp(0, 1);
        var green = (grey + (heat - 0.5).clamp_min(0) * 2).clamp(0, 1);
        return cat(new[] { red, green, grey }, 1);
    }

    /// <summary>
    /// An image grid: the images, then one row per layer with the [CLS] attention (mean over heads, or one head) drawn
    /// over them. <paramref name="images"/> are normalised as the model's training data; <paramref name="pixels"/> the same images in [0, 1].
    /// </summary>
    public static ImageGrid Grid(VisionTransformer vit, Tensor images, Tensor pixels, IEnumerable<int> layers, int? head = null, int scale = 3)
    {
        using var scope = NewDisposeScope();
        var rgb = pixels.shape[1] == 3 ? pixels : pixels.expand(-1, 3, -1, -1);
        var rows = new List<(string, Tensor)> { ("image", rgb) };
        foreach (var layer in layers)
            rows.Add(($"layer {layer}{(head is { } h ? $", head {h}" : "")}", Overlay(pixels, Upsampled(vit, images, layer, head))));
        return ImageGrid.FromRows(rows, scale);
    }
}
