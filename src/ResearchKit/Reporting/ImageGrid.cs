using SkiaSharp;
using static TorchSharp.torch;

namespace ResearchKit.Reporting;

/// <summary>
/// Rows of images (e.g. original / masked / reconstruction) drawn into one PNG, each row's label in a left margin
/// (none when every label is empty). Notebooks show it as image/png; the text form lists the labels too.
/// </summary>
public sealed class ImageGrid
{
    public IReadOnlyList<string> RowLabels { get; }
    public byte[] Png { get; }
    public int Width { get; }
    public int Height { get; }
    /// <summary>Width in pixels of the label margin left of the images (0 when every label is empty).</summary>
    public int LabelMargin { get; }

    ImageGrid(IReadOnlyList<string> labels, byte[] png, int width, int height, int labelMargin)
    {
        RowLabels = labels; Png = png; Width = width; Height = height; LabelMargin = labelMargin;
    }

    /// <summary>Each row: images [N, C, H, W] with values in [0, 1] (C = 1 or 3); every pixel drawn scale×scale.</summary>
    public static ImageGrid FromRows(IEnumerable<(string Label, Tensor Images)> rows, int scale = 3, int gap = 2)
    {
        var list = rows.ToList();
        if (list.Count == 0) throw new ArgumentException("an image grid needs at least one row", nameof(rows));
        var shape = list[0].Images.shape;
        if (list.Any(r => r.Images.dim() != 4 || !r.Images.shape.Skip(1).SequenceEqual(shape.Skip(1))))
            throw new ArgumentException("every row must be [N, C, H, W] with the same C, H, W", nameof(rows));
        int columns = list.Max(r => (int)r.Images.shape[0]);
        int c = (int)shape[1], h = (int)shape[2], w = (int)shape[3];
        int cellW = w * scale + gap, cellH = h * scale + gap;
        var labels = list.Select(r => r.Label ?? "").ToArray();
        float textSize = Math.Clamp(h * scale, 8f, 12f);   // no taller than a row unless rows are unreadably small
        const int pad = 4;
        int margin = labels.All(l => l.Length == 0) ? 0 : (int)Math.Ceiling(labels.Max(l => ChartText.Width(l, textSize))) + 2 * pad;
        int width = margin + columns * cellW + gap, height = list.Count * cellH + gap;
        using var bitmap = new SKBitmap(width, height, SKColorType.Rgba8888, SKAlphaType.Premul);
        bitmap.Erase(SKColors.White);
        for (int row = 0; row < list.Count; row++)
        {
            var bytes = list[row].Images.detach().cpu().clamp(0, 1).mul(255).round().to_type(ScalarType.Byte).contiguous().data<byte>().ToArray();
            int n = (int)list[row].Images.shape[0];
            for (int k = 0; k < n; k++)
                for (int y = 0; y < h; y++)
                    for (int x = 0; x < w; x++)
                    {
                        int at(int channel) => ((k * c + channel) * h + y) * w + x;
                        var color = c == 1 ? new SKColor(bytes[at(0)], bytes[at(0)], bytes[at(0)]) : new SKColor(bytes[at(0)], bytes[at(1)], bytes[at(2)]);
                        for (int dy = 0; dy < scale; dy++)
                            for (int dx = 0; dx < scale; dx++)
                                bitmap.SetPixel(margin + gap + k * cellW + x * scale + dx, gap + row * cellH + y * scale + dy, color);
                    }
        }
        using (var canvas = new SKCanvas(bitmap))
            for (int row = 0; row < labels.Length; row++)
                ChartText.Draw(canvas, labels[row], margin - pad, gap + row * cellH + h * scale / 2f, textSize, new SKColor(0x22, 0x22, 0x22),
                    SKTextAlign.Right, middle: true);
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        return new ImageGrid(labels, data.ToArray(), width, height, margin);
    }

    public override string ToString() => $"image grid {Width}×{Height}: rows {string.Join(" / ", RowLabels)}";
}
