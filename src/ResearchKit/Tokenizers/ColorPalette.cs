using System.Text.Json;
using System.Text.Json.Nodes;
using ResearchKit.Data;
using ResearchKit.Evaluation;
using static TorchSharp.torch;

namespace ResearchKit.Tokenizers;

/// <summary>Where a palette came from: the data it was fitted on and how well it fits them.</summary>
/// <param name="Resolution">Side of the down-sampled images whose pixels were clustered.</param>
/// <param name="Pixels">Pixels clustered (images × Resolution²); <paramref name="DistinctColors"/> of them distinct.</param>
/// <param name="Inertia">Sum over the pixels of the squared distance (in [0, 1] units) to the nearest colour.</param>
/// <param name="Psnr">Quantisation PSNR of the fitted pixels, in dB (peak 1).</param>
/// <param name="Inits">k-means++ seedings run to convergence; the lowest inertia was kept.</param>
public sealed record PaletteFit(string Dataset, int Resolution, int Images, long Pixels, long DistinctColors, int Seed,
    double Inertia, int Iterations, double Psnr, double Seconds, int Inits = 1);

/// <summary>
/// iGPT's colour palette (Chen et al., 2020, §3.1): k-means cluster centres of pixel colours (k = 512 for RGB in the
/// paper, a 9-bit palette), so an image becomes a sequence of palette indices in raster order, one token per pixel.
/// Colours are pixel values in [0, 1], [k, C]. Fitting clusters the distinct colours of a sample weighted by their
/// counts — the same optimum as clustering every pixel, far cheaper for grey images (at most a few hundred levels).
/// </summary>
public sealed class ColorPalette
{
    public const string Format = "researchkit-palette";
    public const int FormatVersion = 1;

    /// <summary>
    /// Seedings per fit. One k-means run lands in a local optimum: on Fashion-MNIST's pixels (k = 16) single runs' inertias
    /// differed from scikit-learn's single runs by −2% … +6% depending on the seed; the best of several is stable.
    /// </summary>
    public const int DefaultInits = 4;

    /// <summary>Training images a palette is fitted on by default (iGPT's palette, `palette fit --images`).</summary>
    public const int DefaultFitImages = 2000;

    /// <summary>[k, C] float32 on the CPU, pixel values in [0, 1].</summary>
    public Tensor Colors { get; }
    public int K => (int)Colors.shape[0];
    public int Channels => (int)Colors.shape[1];
    public PaletteFit? Fit { get; }

    public ColorPalette(Tensor colors, PaletteFit? fit = null)
    {
        if (colors.dim() != 2 || colors.shape[0] < 2)
            throw new ResearchKitException($"palette: colours must be [k ≥ 2, channels]; got [{string.Join(", ", colors.shape)}]");
        Colors = colors.detach().to(CPU).to_type(ScalarType.Float32).clone().DetachFromDisposeScope();   // owned by the palette, outliving any caller's scope
        Fit = fit;
    }

    /// <summary>Images [B, C, H, W] reduced to <paramref name="size"/>² by area averaging (iGPT down-samples before quantising).</summary>
    public static Tensor Downsample(Tensor images, int size) =>
        images.shape[^1] == size && images.shape[^2] == size ? images : nn.functional.adaptive_avg_pool2d(images, [size, size]);

    /// <summary>
    /// Fits k colours to the pixels of <paramref name="images"/> (uint8 [N, C, H, W], down-sampled to <paramref name="resolution"/>²
    /// first) by k-means with k-means++ seeding. Refuses a k larger than the number of distinct colours.
    /// </summary>
    /// <param name="kOption">The option that set k, for the errors (iGPT's is --colors).</param>
    /// <param name="imagesOption">The option that sets how many images are sampled, if the caller has one.</param>
    public static ColorPalette FitTo(Tensor images, int k, int resolution, int seed = 0, string dataset = "", int inits = DefaultInits,
        string kOption = "--k", string? imagesOption = "--images")
    {
        if (resolution < 1) throw new ResearchKitException($"palette: the resolution (--size) must be at least 1; got {resolution}");
        using var scope = NewDisposeScope();
        return FitPixels(PixelsAt(images, resolution), k, seed, inits, kOption, imagesOption).FittedOn(dataset, resolution, (int)images.shape[0]);
    }

    /// <summary>The pixels a palette is fitted on: uint8 images [N, C, H, W] down-sampled to <paramref name="resolution"/>², as [N·R², C] in [0, 1].</summary>
    public static Tensor PixelsAt(Tensor images, int resolution) => PixelsOf(Downsample(Normalization.ToUnit(images, CPU), resolution));

    /// <summary>This palette with its fit's provenance filled in: the data set, resolution and number of images.</summary>
    public ColorPalette FittedOn(string dataset, int resolution, int images) =>
        new(Colors, (Fit ?? throw new InvalidOperationException("the palette was not fitted here")) with { Dataset = dataset, Resolution = resolution, Images = images });

    /// <summary>Fits k colours to pixels [N, C] in [0, 1]: k-means over the distinct colours weighted by their counts.</summary>
    public static ColorPalette FitPixels(Tensor pixels, int k, int seed = 0, int inits = DefaultInits, string kOption = "--k", string? imagesOption = "--images")
    {
        if (k < 2) throw new ResearchKitException($"palette: k ({kOption}) must be at least 2; got {k}");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (distinct, counts) = DistinctColors(pixels);
        if (distinct.shape[0] < k)
            throw new ResearchKitException($"palette: k = {k} ({kOption}) is more than the {distinct.shape[0]} distinct colours in the {pixels.shape[0]} " +
                $"sampled pixels; choose a smaller {kOption}{(imagesOption is null ? "" : $" or sample more images ({imagesOption})")}");
        var fit = KMeans.Fit(distinct, k, seed, counts!, inits: inits);
        // Sorted by brightness (mean over channels), so token order means something when printed.
        var colors = fit.Centers.index_select(0, fit.Centers.mean([1L]).argsort()).to_type(ScalarType.Float32);
        double mse = fit.Inertia / (pixels.shape[0] * pixels.shape[1]);
        var info = new PaletteFit("", 0, 0, pixels.shape[0], distinct.shape[0], seed, fit.Inertia, fit.Iterations, Reconstruction.Psnr(mse),
            Math.Round(clock.Elapsed.TotalSeconds, 4), inits);
        return new ColorPalette(colors, info);
    }

    /// <summary>
    /// The distinct rows of pixels [N, C] and how often each occurs. Each channel's values are ranked and the ranks combined
    /// into one integer key, so a 1-D unique does the work: measured 0.03 s on 392k grey pixels, where unique over rows
    /// (dim 0) took 0.76 s.
    /// </summary>
    public static (Tensor Distinct, Tensor Counts) DistinctColors(Tensor pixels)
    {
        var key = zeros(pixels.shape[0], dtype: ScalarType.Int64, device: pixels.device);
        double combinations = 1;
        for (long c = 0; c < pixels.shape[1]; c++)
        {
            var (values, rank, _) = pixels.select(1, c).contiguous().unique(sorted: true, return_inverse: true);
            combinations *= values.shape[0];
            if (combinations >= long.MaxValue)   // too many combinations for one key: unique over rows instead
            {
                var (rows, _, rowCounts) = pixels.unique(sorted: true, return_inverse: false, return_counts: true, dim: 0);
                return (rows, rowCounts!);
            }
            key = key * values.shape[0] + rank!;
        }
        var (_, which, counts) = key.unique(sorted: true, return_inverse: true, return_counts: true);
        // Every pixel with the same key has the same colour, so any of them may be the one copied.
        var distinct = zeros(counts!.shape[0], pixels.shape[1], dtype: pixels.dtype, device: pixels.device).index_copy_(0, which!, pixels);
        return (distinct, counts);
    }

    /// <summary>[B, C, H, W] → [B·H·W, C], pixels in raster order.</summary>
    public static Tensor PixelsOf(Tensor images) => images.permute(0, 2, 3, 1).reshape(-1, images.shape[1]);

    /// <summary>Images [B, C, H, W] with values in [0, 1] → tokens [B, H·W] (int64): each pixel's nearest colour, in raster order.</summary>
    public Tensor Encode(Tensor pixels)
    {
        CheckChannels(pixels.shape[1], "images");
        return KMeans.Assign(PixelsOf(pixels), DeviceCopy.Of(Colors, pixels.device)).Labels.reshape(pixels.shape[0], -1);
    }

    /// <summary>Tokens [B, H·W] → images [B, C, H, W] in [0, 1] (square images; <paramref name="side"/> defaults to √L).</summary>
    public Tensor Decode(Tensor tokens, int? side = null)
    {
        long length = tokens.shape[1];
        int s = side ?? (int)Math.Round(Math.Sqrt(length));
        if ((long)s * s != length) throw new ResearchKitException($"palette: {length} tokens are not a square image of side {s}");
        if (tokens.numel() > 0 && (tokens.min().item<long>() < 0 || tokens.max().item<long>() >= K))
            throw new ResearchKitException($"palette: tokens must be in 0 … {K - 1}");
        return DeviceCopy.Of(Colors, tokens.device).index_select(0, tokens.flatten()).reshape(tokens.shape[0], s, s, Channels).permute(0, 3, 1, 2).contiguous();
    }

    /// <summary>Quantisation PSNR (dB, peak 1) of images [B, C, H, W] in [0, 1]: how much of the image survives the palette.</summary>
    public double QuantisationPsnr(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var decoded = Decode(Encode(pixels), (int)pixels.shape[^1]);
        return Reconstruction.Psnr((decoded - pixels).square().mean().item<float>());
    }

    /// <summary>Refuses data of another channel count, naming both.</summary>
    public void CheckChannels(long channels, string what)
    {
        if (channels != Channels)
            throw new ResearchKitException($"palette: fitted to {Channels}-channel colours, but the {what} have {channels} channels; fit a palette on this data set (`researchkit palette fit`)");
    }

    public void Save(string path)
    {
        var json = new JsonObject
        {
            ["format"] = Format,
            ["version"] = FormatVersion,
            ["k"] = K,
            ["channels"] = Channels,
            ["colors"] = new JsonArray(ColorRows().Select(row => (JsonNode)new JsonArray(row.Select(v => (JsonNode)v).ToArray())).ToArray()),
            ["fit"] = Fit is null ? null : JsonSerializer.SerializeToNode(Fit, Json),
        };
        AtomicFile.WriteAllText(path, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>Colours as rows of floats (palette files, run configurations).</summary>
    public float[][] ColorRows()
    {
        var values = Colors.data<float>().ToArray();
        return Enumerable.Range(0, K).Select(i => values.AsSpan(i * Channels, Channels).ToArray()).ToArray();
    }

    /// <summary>A palette from rows of colours (as <see cref="ColorRows"/> writes them).</summary>
    public static ColorPalette FromRows(float[][] rows, string what)
    {
        if (rows.Length < 2 || rows.Any(r => r.Length != rows[0].Length || r.Length == 0))
            throw new ResearchKitException($"{what}: colours must be at least 2 rows of the same non-zero length");
        if (rows.SelectMany(r => r).Any(v => !float.IsFinite(v) || v < -1e-3f || v > 1 + 1e-3f))
            throw new ResearchKitException($"{what}: colours must be pixel values in [0, 1]");
        return new ColorPalette(tensor(rows.SelectMany(r => r).ToArray(), device: CPU).reshape(rows.Length, rows[0].Length));
    }

    /// <summary>Reads a palette file, with a one-line error naming the file and what is wrong.</summary>
    public static ColorPalette Load(string path)
    {
        if (!File.Exists(path)) throw new ResearchKitException($"{path}: palette file not found (write one with `researchkit palette fit --out {path}`)");
        JsonObject json;
        try { json = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new JsonException("not a JSON object"); }
        catch (JsonException e) { throw new ResearchKitException($"{path}: not a palette file ({e.Message.Split('\n')[0]})"); }
        if (json["format"]?.GetValue<string>() != Format) throw new ResearchKitException($"{path}: not a palette file (expected \"format\": \"{Format}\")");
        if (json["version"]?.GetValue<int>() != FormatVersion) throw new ResearchKitException($"{path}: palette format version {json["version"]} is not {FormatVersion}");
        float[][] rows;
        try { rows = json["colors"].Deserialize<float[][]>() ?? []; }
        catch (JsonException) { throw new ResearchKitException($"{path}: \"colors\" must be rows of numbers"); }
        var palette = FromRows(rows, path);
        if (json["k"]?.GetValue<int>() != palette.K || json["channels"]?.GetValue<int>() != palette.Channels)
            throw new ResearchKitException($"{path}: \"k\" and \"channels\" do not match the {palette.K}×{palette.Channels} colours");
        var fit = json["fit"] is JsonObject f ? f.Deserialize<PaletteFit>(Json) : null;
        return new ColorPalette(palette.Colors, fit);
    }

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };
}
