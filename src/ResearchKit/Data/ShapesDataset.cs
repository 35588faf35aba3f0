using SkiaSharp;
using static TorchSharp.torch;

namespace ResearchKit.Data;

/// <summary>
/// A synthetic RGB data set generated in code, so every feature works without a download:
/// ten classes of coloured geometric shapes at random position, size, rotation and colour over a
/// random background texture (solid, gradient, stripes, checks or noise). Image i of a seed is the same
/// whatever the count, so any size is a prefix of a larger one.
/// </summary>
public static class ShapesDataset
{
    public static readonly string[] ClassNames =
        ["circle", "square", "triangle", "diamond", "plus", "ring", "star", "hexagon", "bar", "cross"];

    /// <summary>Images [count, 3, size, size] uint8 and labels [count] (class = index mod 10, shuffled by the generator).</summary>
    public static (Tensor Images, Tensor Labels) Generate(int count, int seed, int imageSize = 32)
    {
        if (count <= 0) throw new ResearchKitException($"shapes: count must be positive; got {count}");
        if (imageSize < 8) throw new ResearchKitException($"shapes: image size must be at least 8; got {imageSize}");
        var pixels = new byte[(long)count * 3 * imageSize * imageSize];
        var labels = new byte[count];
        Parallel.For(0, count, i =>
        {
            var random = new Random(Seeds.Mix(seed, i, 0x5eed));
            int label = random.Next(ClassNames.Length);
            labels[i] = (byte)label;
            Render(label, random, imageSize, pixels.AsSpan(i * 3 * imageSize * imageSize, 3 * imageSize * imageSize));
        });
        return (tensor(pixels, new long[] { count, 3, imageSize, imageSize }, device: CPU), tensor(labels, new long[] { count }, device: CPU));
    }

    static void Render(int label, Random random, int size, Span<byte> chw)
    {
        var info = new SKImageInfo(size, size, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        using (var canvas = new SKCanvas(bitmap))
        {
            bool darkShape = random.NextDouble() < 0.5;
            var shapeColor = RandomColor(random, darkShape ? 0.15 : 0.65, darkShape ? 0.45 : 0.95);
            DrawBackground(canvas, random, size, darkShape);
            using var paint = new SKPaint { Color = shapeColor, IsAntialias = true, Style = SKPaintStyle.Fill };
            float radius = size * (float)(0.18 + 0.17 * random.NextDouble());
            float cx = radius + (float)random.NextDouble() * (size - 2 * radius);
            float cy = radius + (float)random.NextDouble() * (size - 2 * radius);
            float tilt = (float)(random.NextDouble() * 30 - 15);
            canvas.Translate(cx, cy);
            DrawShape(canvas, paint, label, radius, tilt);
        }
        int plane = size * size;
        var bytes = bitmap.GetPixelSpan();
        for (int p = 0; p < plane; p++)
        {
            chw[p] = bytes[4 * p];
            chw[plane + p] = bytes[4 * p + 1];
            chw[2 * plane + p] = bytes[4 * p + 2];
        }
    }

    static SKColor RandomColor(Random random, double minLight, double maxLight)
    {
        float hue = (float)(random.NextDouble() * 360);
        float saturation = (float)(50 + random.NextDouble() * 50);
        float light = (float)(100 * (minLight + random.NextDouble() * (maxLight - minLight)));
        return SKColor.FromHsl(hue, saturation, light);
    }

    static void DrawBackground(SKCanvas canvas, Random random, int size, bool darkShape)
    {
        // Backgrounds contrast with the shape: light behind dark shapes and the reverse.
        SKColor Pick() => RandomColor(random, darkShape ? 0.6 : 0.05, darkShape ? 0.95 : 0.4);
        var a = Pick();
        var b = Pick();
        canvas.Clear(a);
        using var paint = new SKPaint { Color = b, IsAntialias = false };
        switch (random.Next(5))
        {
            case 0: break;                                                       // solid
            case 1:                                                              // linear gradient
                paint.Shader = SKShader.CreateLinearGradient(new SKPoint(0, 0), new SKPoint(size, (float)random.NextDouble() * size),
                    new[] { a, b }, SKShaderTileMode.Clamp);
                canvas.DrawRect(0, 0, size, size, paint);
                break;
            case 2:                                                              // stripes
                int period = 3 + random.Next(5);
                canvas.Save();
                canvas.RotateDegrees((float)(random.NextDouble() * 180), size / 2f, size / 2f);
                for (int x = -size; x < 2 * size; x += period) canvas.DrawRect(x, -size, period / 2f, 3 * size, paint);
                canvas.Restore();
                break;
            case 3:                                                              // checks
                int cell = 3 + random.Next(5);
                for (int y = 0; y < size; y += cell)
                    for (int x = 0; x < size; x += cell)
                        if ((x / cell + y / cell) % 2 == 0) canvas.DrawRect(x, y, cell, cell, paint);
                break;
            default:                                                             // noise
                for (int y = 0; y < size; y++)
                    for (int x = 0; x < size; x++)
                        if (random.NextDouble() < 0.35) canvas.DrawRect(x, y, 1, 1, paint);
                break;
        }
    }

    static void DrawShape(SKCanvas canvas, SKPaint paint, int label, float r, float tilt)
    {
        switch (ClassNames[label])
        {
            case "circle": canvas.DrawCircle(0, 0, r, paint); break;
            case "square": canvas.DrawRect(-0.8f * r, -0.8f * r, 1.6f * r, 1.6f * r, paint); break;
            case "diamond": canvas.RotateDegrees(45); canvas.DrawRect(-0.75f * r, -0.75f * r, 1.5f * r, 1.5f * r, paint); break;
            case "triangle": canvas.RotateDegrees(tilt); canvas.DrawPath(Polygon(3, r, 0), paint); break;
            case "hexagon": canvas.RotateDegrees(tilt); canvas.DrawPath(Polygon(6, r, 0), paint); break;
            case "star": canvas.RotateDegrees(tilt); canvas.DrawPath(Polygon(5, r, 0.42f * r), paint); break;
            case "ring":
                paint.Style = SKPaintStyle.Stroke;
                paint.StrokeWidth = 0.35f * r;
                canvas.DrawCircle(0, 0, 0.8f * r, paint);
                break;
            case "plus":
                canvas.RotateDegrees(tilt / 3);
                canvas.DrawRect(-r, -0.28f * r, 2 * r, 0.56f * r, paint);
                canvas.DrawRect(-0.28f * r, -r, 0.56f * r, 2 * r, paint);
                break;
            case "cross":
                canvas.RotateDegrees(45 + tilt / 3);
                canvas.DrawRect(-r, -0.22f * r, 2 * r, 0.44f * r, paint);
                canvas.DrawRect(-0.22f * r, -r, 0.44f * r, 2 * r, paint);
                break;
            case "bar":
                canvas.RotateDegrees(tilt * 6);
                canvas.DrawRect(-r, -0.3f * r, 2 * r, 0.6f * r, paint);
                break;
        }
    }

    /// <summary>A regular polygon (inner = 0) or star (inner = inner radius) pointing up.</summary>
    static SKPath Polygon(int points, float outer, float inner)
    {
        using var path = new SKPathBuilder();
        int vertices = inner > 0 ? 2 * points : points;
        for (int k = 0; k < vertices; k++)
        {
            double angle = -Math.PI / 2 + k * 2 * Math.PI / vertices;
            float radius = inner > 0 && k % 2 == 1 ? inner : outer;
            var point = new SKPoint((float)(radius * Math.Cos(angle)), (float)(radius * Math.Sin(angle)));
            if (k == 0) path.MoveTo(point); else path.LineTo(point);
        }
        path.Close();
        return path.Detach();
    }
}
