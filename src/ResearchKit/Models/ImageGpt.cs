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

/// <summary>What iGPT learns to predict (Chen et al., 2020, §2.2): the next pixel, or 15% masked pixels.</summary>
public enum ImageGptObjective { Ar, Bert }

/// <summary>
/// Image GPT configuration (Chen et al., 2020, "Generative Pretraining from Pixels"). Defaults are iGPT-S at 32² pixels
/// (24 blocks of width 512, 8 heads, a 512-colour palette). The optimizer is Adam with GPT-2's β2 = 0.95, warmup and cosine
/// decay, no weight decay; the paper tunes the learning rate per model, so the base rate here (2e-3 per 256 images, 1e-3 at
/// batch 128) is this kit's: on the tiny preset, 78 steps at 3× that rate ended at the same loss (1.336 against 1.350 nats).
/// </summary>
/// <param name="Resolution">Side of the down-sampled image the transformer reads (paper: 32, 48, 64); a sequence of Resolution² tokens.</param>
/// <param name="Colors">Palette size k (paper: 512).</param>
/// <param name="Palette">A palette file from `researchkit palette fit`; without one a palette is fitted on the training images (<see cref="ForData"/>).</param>
/// <param name="PaletteColors">The palette's colours in [0, 1], [k][C]: stored in config.json, so a run folder rebuilds the same tokenizer.</param>
public sealed record ImageGptConfig(
    int Resolution = 32, int Colors = 512, int Dim = 512, int Depth = 24, int Heads = 8, double MlpRatio = 4,
    ImageGptObjective Objective = ImageGptObjective.Ar, double MaskRatio = 0.15, int ImageSize = 32, int Channels = 3,
    string? Palette = null, float[][]? PaletteColors = null) : MethodConfig
{
    /// <summary>Images a palette is fitted on when no --palette file is given (PLATFORM.md's reference: 2000).</summary>
    public const int PaletteImages = ColorPalette.DefaultFitImages;

    public override OptimizerConfig Optimizer { get; init; } = new(BaseLearningRate: 2e-3, WeightDecay: 0, Beta2: 0.95, WarmupFraction: 0.05);

    public static ImageGptConfig Small => new();

    /// <summary>CPU scale (PLATFORM.md's reference): 14×14 grey pixels, a 16-colour palette, width 128, 6 blocks, 4 heads.</summary>
    public static ImageGptConfig Tiny(int imageSize = 28, int channels = 1) =>
        new(Resolution: 14, Colors: 16, Dim: 128, Depth: 6, Heads: 4, ImageSize: imageSize, Channels: channels);

    /// <summary>Sequence length: one token per pixel of the down-sampled image.</summary>
    public int Length => Resolution * Resolution;

    public override MethodConfig ForInput(int imageSize, int channels) => this with { ImageSize = imageSize, Channels = channels };

    public override (int ImageSize, int Channels) InputShape() => (ImageSize, Channels);

    /// <summary>Records the palette: read from <see cref="Palette"/>, or fitted on the first training images.</summary>
    public override MethodConfig ForData(ImageDataset train, Normalization normalization)
    {
        ColorPalette palette;
        if (Palette is { } path)
        {
            palette = ColorPalette.Load(path);
            palette.CheckChannels(train.Channels, $"{train.Name} images");
        }
        else
        {
            Validate();
            int n = (int)Math.Min(PaletteImages, train.Count);
            palette = ColorPalette.FitTo(train.Images[..n], Colors, Resolution, seed: 0, train.Name, kOption: "--colors", imagesOption: null);
        }
        return this with { Colors = palette.K, PaletteColors = palette.ColorRows() };
    }

    public override IPretrainModel Build(BuildContext context) => new ImageGpt(this, context);

    /// <summary>Colour embeddings, positions, the blocks over the sequence (a start token and every pixel), the norm and the colour head.</summary>
    public override ModelSize? Size() => ModelSize.Table((Colors + 2.0) * Dim + (1.0 + Length) * Dim + 2 * Dim)
        + ModelSize.TransformerBlocks(Depth, Dim, Heads, MlpRatio, 1.0 + Length) + new ModelSize(Dim * (double)Colors, Length * (double)Colors);

    public override void Validate()
    {
        if (Resolution < 2 || Resolution > ImageSize)
            throw new ResearchKitException($"igpt: the resolution (--resolution) must be in 2 … {ImageSize} (the image size); got {Resolution}");
        if (Colors < 2) throw new ResearchKitException($"igpt: the palette (--colors) needs at least 2 colours; got {Colors}");
        if (Dim < 1 || Depth < 1 || Heads < 1 || Dim % Heads != 0)
            throw new ResearchKitException($"igpt: width {Dim} must be a positive multiple of the {Heads} heads, and depth ≥ 1 (got {Depth})");
        if (!(MaskRatio > 0 && MaskRatio < 1)) throw new ResearchKitException($"igpt: mask ratio (--mask-ratio) must be in (0, 1); got {MaskRatio}");
        if (PaletteColors is { } rows && (rows.Length != Colors || rows.Any(r => r.Length != Channels)))
            throw new ResearchKitException($"igpt: the palette has {rows.Length} colours of {rows.FirstOrDefault()?.Length} channels; expected {Colors} of {Channels}");
    }
}

/// <summary>What an iGPT forward pass returns.</summary>
/// <param name="Loss">Mean negative log-likelihood in nats per predicted pixel (all pixels for AR, the masked ones for BERT).</param>
/// <param name="Logits">[B, L, k]: the prediction for every pixel.</param>
/// <param name="Tokens">[B, L]: the image's palette indices, raster order.</param>
/// <param name="Mask">[B, L] 1 = masked (BERT); null for AR.</param>
public sealed record ImageGptOutput(Tensor Loss, Tensor Logits, Tensor Tokens, Tensor? Mask)
{
    /// <summary>The loss in bits per pixel, iGPT's unit (nats / ln 2).</summary>
    public double BitsPerPixel => Loss.item<float>() / Math.Log(2);
}

/// <summary>Sampling settings: softmax temperature and, optionally, only the k most likely colours.</summary>
public sealed record SamplingOptions(double Temperature = 1.0, int? TopK = null);

/// <summary>
/// Image GPT (Chen et al., 2020): a GPT-2 transformer over pixels. Images are down-sampled, quantised to a colour
/// palette and read as one token per pixel in raster order, after a start-of-sequence token; blocks are pre-norm
/// (GPT-2), positions are learned, and there is no 2-D inductive bias. The AR objective predicts each pixel from the
/// pixels before it (causal attention); the BERT objective replaces 15% of the pixels by a [MASK] token and predicts
/// them with bidirectional attention (§2.2). The model is its own backbone: it tokenises normalised images inside,
/// its per-layer features are the layer-normed block outputs averaged over the sequence (§3.4), and fine-tuning can
/// keep its generative loss as an auxiliary term (§3.5).
/// </summary>
public sealed class ImageGpt : Backbone, IPretrainModel
{
    // Before Method: static fields initialise in order.
    static readonly CapabilityOption[] SamplingFigureOptions =
    [
        new("--temperature", "softmax temperature (1 = the model's distribution)", "1"),
        new("--top-k", "sample among the k most likely colours only"),
    ];

    public static MethodInfo Method { get; } = new("igpt", "Chen et al., 2020. Generative Pretraining from Pixels", typeof(ImageGptConfig),
        new Dictionary<string, Func<MethodConfig>>
        {
            ["tiny"] = () => ImageGptConfig.Tiny(),
            ["small"] = () => ImageGptConfig.Small,
        },
        [
            MethodOption.Choice<ImageGptConfig, ImageGptObjective>("--objective", "next-pixel (ar) or masked-pixel (bert) prediction (§2.2)", (c, v) => c with { Objective = v }),
            MethodOption.Text<ImageGptConfig>("--palette", "palette file from `researchkit palette fit` (default: fit one on the first 2000 training images)", (c, v) => c with { Palette = v }),
            MethodOption.Integer<ImageGptConfig>("--colors", "palette size k when the palette is fitted here (paper: 512; with --palette the file sets k)", (c, v) => c with { Colors = v })
                .Only<ImageGptConfig>(c => c.Palette is null, "a palette fitted here (with --palette the file sets k)"),
            MethodOption.Integer<ImageGptConfig>("--resolution", "side of the down-sampled images (paper: 32–64)", (c, v) => c with { Resolution = v }),
            MethodOption.Number<ImageGptConfig>("--mask-ratio", "share of pixels masked by the BERT objective (paper: 0.15)", (c, v) => c with { MaskRatio = v })
                .Only<ImageGptConfig>(c => c.Objective == ImageGptObjective.Bert, "--objective bert"),
            MethodOption.Integer<ImageGptConfig>("--depth", "transformer blocks", (c, v) => c with { Depth = v }),
            MethodOption.Integer<ImageGptConfig>("--dim", "transformer width", (c, v) => c with { Dim = v }),
            MethodOption.Integer<ImageGptConfig>("--heads", "attention heads", (c, v) => c with { Heads = v }),
        ])
    {
        FineTuneObjectives = [new MethodObjective("generative", "L_CLF + λ·L_GEN: keeps the pre-training loss while fine-tuning (§3.5)",
            [new CapabilityOption("--lambda", "λ, the generative loss's weight (paper: 1)", "1")], GenerativeObjective)],
        DefaultObjective = "generative",
        Evaluations = [new MethodEvaluation("likelihood", "bits per pixel of test images (AR: every pixel; BERT: the masked ones)", MeasureLikelihood)],
        Figures =
        [
            new MethodFigure("samples", "images sampled pixel by pixel from an AR run, with a key/value cache", SamplingFigureOptions,
                r => DrawSamples(r, complete: false)),
            new MethodFigure("completions", "the bottom half of test images completed from their top half (the paper's Fig. 1)",
                [.. SamplingFigureOptions, new CapabilityOption("--completions", "samples per image", "3")], r => DrawSamples(r, complete: true)),
        ],
    };

    /// <summary>`show RUN --what samples|completions`: the CLI's former `sample` command, as a figure of the method.</summary>
    static Figure DrawSamples(FigureRequest request, bool complete)
    {
        var gpt = (ImageGpt)request.Model;
        var options = new SamplingOptions(request.Options.Number("--temperature"), request.Options.OptionalInteger("--top-k"));
        int n = request.Count, side = gpt.Config.Resolution;
        string sampling = $"temperature {options.Temperature}{(options.TopK is { } t ? $", top-{t}" : "")}";
        if (!complete)
            return new Figure([("samples", gpt.ToPixels(gpt.Sample(n, request.Generator, options)))], $"sampled {n} images at {side}×{side} ({sampling})");
        int m = request.Options.Integer("--completions");
        if (m < 1) throw new ResearchKitException($"--completions: expected a positive whole number; got {m}");
        return new Figure(gpt.CompletionRows(request.TestImages(n), m, request.Generator, options),
            $"completed {n} test images ×{m} at {side}×{side} ({sampling})");
    }

    public ImageGptConfig Config { get; }
    public ColorPalette Palette { get; }
    public int SosToken => Config.Colors;
    public int MaskToken => Config.Colors + 1;

    readonly Embedding tokens;      // k colours, then [SOS] and [MASK]
    readonly Parameter positions;   // [1, 1 + L, D]
    readonly ModuleList<TransformerBlock> blocks;
    readonly LayerNorm norm;
    readonly Linear head;           // D → k
    readonly BuildContext context;  // the run's normalisation: normalised images → pixel values before quantising

    /// <param name="context">The run's; null: images arrive as pixel values in [0, 1].</param>
    public ImageGpt(ImageGptConfig config, BuildContext? context = null) : base(nameof(ImageGpt))
    {
        config.Validate();
        Config = config;
        // Without a fitted palette (a benchmark, a unit test) the colours are evenly spaced grey levels.
        Palette = config.PaletteColors is { } rows ? ColorPalette.FromRows(rows, "igpt palette")
            : new ColorPalette(linspace(0, 1, config.Colors).unsqueeze(1).expand(-1, config.Channels).contiguous());
        this.context = context ?? BuildContext.Pixels(config);
        tokens = Embedding(config.Colors + 2, config.Dim);
        positions = Parameter(zeros(1, 1 + config.Length, config.Dim));
        blocks = new ModuleList<TransformerBlock>(Enumerable.Range(0, config.Depth)
            .Select(_ => new TransformerBlock(config.Dim, config.Heads, config.MlpRatio, causal: config.Objective == ImageGptObjective.Ar)).ToArray());
        norm = LayerNorm(config.Dim, eps: 1e-6);
        head = Linear(config.Dim, config.Colors, hasBias: false);
        RegisterComponents();
        TransformerInit.Apply(this);
        using var _ = no_grad();
        init.normal_(tokens.weight, std: 0.02);
        init.normal_(positions, std: 0.02);
    }

    public Backbone Backbone => this;
    public nn.Module Module => this;
    public override int Depth => Config.Depth;
    public override int FeatureDim => Config.Dim;

    /// <summary>Embeddings are not decayed (minGPT's rule); 1-D parameters never are.</summary>
    public override IReadOnlyCollection<string> NoWeightDecay => ["positions", "tokens.weight"];

    public IReadOnlyList<UpdatePhase> Phases() =>
        [new UpdatePhase("loss", (batch, generator) => Forward(batch.Images, generator).Loss, UpdatePhase.TrainableOf(this),
            NoWeightDecay: NoWeightDecay.Contains)];

    /// <summary>Normalised images [B, C, H, W] → palette indices [B, L] of the down-sampled image, raster order.</summary>
    public Tensor Tokenize(Tensor images)
    {
        using var _ = no_grad();
        var pixels = context.ToPixels(images);
        return Palette.Encode(ColorPalette.Downsample(pixels, Config.Resolution));
    }

    /// <summary>Palette indices [B, L] → images [B, C, R, R] in [0, 1].</summary>
    public Tensor ToPixels(Tensor tokenIds) => Palette.Decode(tokenIds.cpu(), Config.Resolution);

    /// <summary>[SOS] followed by the tokens, masked positions replaced by [MASK]: [B, 1 + L].</summary>
    Tensor Input(Tensor tokenIds, Tensor? mask)
    {
        var body = mask is null ? tokenIds : tokenIds.masked_fill(mask.to_type(ScalarType.Bool), MaskToken);
        return cat([full(tokenIds.shape[0], 1, SosToken, dtype: ScalarType.Int64, device: tokenIds.device), body], 1);
    }

    /// <summary>Tokens [B, T] → their embeddings plus positions [B, T, D].</summary>
    Tensor Embed(Tensor input) => tokens.call(input) + positions.narrow(1, 0, input.shape[1]);

    /// <summary>Token ids [B, T] at positions 0 … T−1 → the final normed hidden states [B, T, D] (per-layer features:
    /// <see cref="LayerFeatures"/>, which pools each block as it ends).</summary>
    Tensor Encode(Tensor input)
    {
        var x = Embed(input);
        foreach (var block in blocks) x = block.call(x);
        return norm.call(x);
    }

    /// <summary>[B, L] masks (1 = masked) drawn from <paramref name="generator"/>, the same number per image: MAE's random masking (<see cref="Masking.Random"/>).</summary>
    public Tensor SampleMask(long batch, Generator? generator, Device device) => Masking.Random(batch, Config.Length, Config.MaskRatio, generator, device).Mask;

    /// <summary>The objective's mask for tokens [B, L]: a fresh BERT mask (<see cref="SampleMask"/>), or null for AR.</summary>
    Tensor? ObjectiveMask(Tensor target, Generator? generator) =>
        Config.Objective == ImageGptObjective.Bert ? SampleMask(target.shape[0], generator, target.device) : null;

    /// <summary>The objective on normalised images: NLL of every pixel given the ones before it (AR), or of the masked pixels (BERT).</summary>
    public ImageGptOutput Forward(Tensor images, Generator? generator)
    {
        var target = Tokenize(images);
        return ForwardTokens(target, ObjectiveMask(target, generator));
    }

    /// <summary>The objective on palette indices [B, L]; <paramref name="mask"/> [B, L] (1 = masked) for BERT, null for AR.</summary>
    public ImageGptOutput ForwardTokens(Tensor tokenIds, Tensor? mask)
    {
        if ((mask is null) != (Config.Objective == ImageGptObjective.Ar))
            throw new ArgumentException("a mask goes with the BERT objective, and only with it", nameof(mask));
        var (logits, loss) = LogitsAndLoss(Encode(Input(tokenIds, mask)), tokenIds, mask);
        return new ImageGptOutput(loss, logits, tokenIds, mask);
    }

    /// <summary>
    /// Logits of every pixel from the hidden states of [SOS] + tokens, and the loss. AR: the state at position i (it has
    /// seen [SOS] and pixels &lt; i) predicts pixel i. BERT: the state at pixel i's own position predicts it, and only masked
    /// pixels count.
    /// </summary>
    (Tensor Logits, Tensor Loss) LogitsAndLoss(Tensor states, Tensor target, Tensor? mask)
    {
        long length = Config.Length;
        var logits = Mixed.Head(head, mask is null ? states.narrow(1, 0, length) : states.narrow(1, 1, length));
        var perPixel = functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction: Reduction.None).reshape(target.shape);
        var loss = mask is null ? perPixel.mean() : (perPixel * mask).sum() / mask.sum().clamp_min(1);
        return (logits, loss);
    }

    /// <summary>AR logits of every pixel, [B, L, k], from one full forward pass of the (unmasked) tokens.</summary>
    public Tensor Logits(Tensor tokenIds) => LogitsAndLoss(Encode(Input(tokenIds, null)), tokenIds, null).Logits;

    public override Tensor Features(Tensor images) => Encode(Input(Tokenize(images), null)).mean([1L]);

    /// <summary>Per block: the layer-normed output averaged over the sequence (§3.4, f^l = ⟨LN(h^l_i)⟩_i), [B, D] each.</summary>
    public override Tensor[] LayerFeatures(Tensor images)
    {
        return TransformerBlock.PooledOutputs(blocks, Embed(Input(Tokenize(images), null)), h => functional.layer_norm(h, [Config.Dim]).mean([1L]));
    }

    /// <summary>Fine-tuning's features and the generative loss from the same pass (§3.5: L = L_CLF + λ·L_GEN); BERT masks as in pre-training.</summary>
    public (Tensor Features, Tensor GenerativeLoss) FeaturesAndGenerativeLoss(Tensor images)
    {
        var target = Tokenize(images);
        var mask = ObjectiveMask(target, null);
        var states = Encode(Input(target, mask));
        return (states.mean([1L]), LogitsAndLoss(states, target, mask).Loss);
    }

    /// <summary>
    /// iGPT's fine-tuning objective (§3.5): L_CLF + λ·L_GEN, the classifier's cross-entropy plus λ times the generative loss
    /// of the same forward pass (λ = 1 in the paper; 0 is plain cross-entropy on the same features).
    /// </summary>
    static FineTuneLoss GenerativeObjective(OptionValues options)
    {
        double lambda = options.Number("--lambda");
        if (lambda < 0) throw new ResearchKitException($"--lambda: the generative loss's weight must be ≥ 0; got {lambda}");
        return (classifier, images, labels) =>
        {
            var gpt = classifier.Backbone as ImageGpt
                ?? throw new ResearchKitException("--objective generative: the backbone being fine-tuned is not an igpt network");
            var (features, generative) = gpt.FeaturesAndGenerativeLoss(images);
            return functional.cross_entropy(classifier.Logits(features), labels) + lambda * generative;
        };
    }

    /// <summary>The last blocks train with the final norm and the pixel head (the auxiliary loss needs it); embeddings only with every block.</summary>
    public override void FreezeAllBut(int trainableBlocks) => FreezeAllBut(trainableBlocks, blocks, norm.parameters().Concat(head.parameters()));

    /// <summary>Validation bits per pixel (AR: every pixel; BERT: the masked ones) of held-out normalised images.</summary>
    static EvaluationReport MeasureLikelihood(EvaluationRequest request)
    {
        var (model, images) = ((ImageGpt)request.Model, request.Images);
        double bits = 0;
        long count = images.shape[0];
        for (long start = 0; start < count; start += 256)
        {
            long n = Math.Min(256, count - start);
            bits += model.Forward(images.narrow(0, start, n), request.Generator).BitsPerPixel * n;
        }
        return EvaluationReport.Of("bits_per_pixel", bits / count);
    }

    /// <summary>One key/value cache per block, for sampling: see <see cref="Step"/>.</summary>
    public KeyValueCache[] NewCaches() => blocks.Select(_ => new KeyValueCache(1 + Config.Length)).ToArray();

    /// <summary>
    /// The next positions of the input sequence ([SOS] then pixels) through the blocks with cached keys and values; returns
    /// the logits of the pixels they predict, [B, t, k]. Feeding a sequence in any split gives the logits of
    /// <see cref="Logits"/> (a test checks it).
    /// </summary>
    public Tensor Step(KeyValueCache[] caches, Tensor input)
    {
        if (Config.Objective != ImageGptObjective.Ar)
            throw new ResearchKitException("igpt: sampling needs an autoregressive model (--objective ar); this one was trained with the bert objective");
        var x = tokens.call(input) + positions.narrow(1, caches[0].Length, input.shape[1]);
        for (int i = 0; i < blocks.Count; i++) x = blocks[i].ForwardCached(x, caches[i]);
        return Mixed.Head(head, norm.call(x));
    }

    /// <summary>
    /// Samples images token by token (AR only): <paramref name="prefix"/> [N, P] fixes the first P pixels (the top rows, for
    /// completions), the rest are drawn from the model with <paramref name="options"/>. Returns palette indices [N, L].
    /// </summary>
    public Tensor Sample(long count, Generator generator, SamplingOptions? options = null, Tensor? prefix = null)
    {
        options ??= new SamplingOptions();
        if (!(options.Temperature > 0) || !double.IsFinite(options.Temperature))
            throw new ResearchKitException($"igpt: the temperature (--temperature) must be positive; got {options.Temperature}");
        if (options.TopK is { } k && (k < 1 || k > Config.Colors))
            throw new ResearchKitException($"igpt: top-k (--top-k) must be in 1 … {Config.Colors}; got {k}");
        long length = Config.Length, given = prefix?.shape[1] ?? 0;
        if (given >= length) throw new ResearchKitException($"igpt: a prefix of {given} pixels leaves none of the {length} to sample");
        var device = positions.device;
        bool wasTraining = training;
        eval();
        var result = zeros(count, length, dtype: ScalarType.Int64, device: device);
        var caches = NewCaches();
        try
        {
            using var _ = no_grad();
            if (prefix is not null) result.narrow(1, 0, given).copy_(prefix);
            var input = Input(result.narrow(1, 0, given), null);   // [SOS] + prefix
            for (long position = given; position < length; position++)
            {
                using var scope = NewDisposeScope();
                var logits = Step(caches, input).select(1, -1) / options.Temperature;
                if (options.TopK is { } top && top < Config.Colors)
                {
                    var threshold = logits.topk(top, 1).values.narrow(1, top - 1, 1);
                    logits = logits.masked_fill(logits.lt(threshold), double.NegativeInfinity);
                }
                var next = Draws.Multinomial(generator, logits.softmax(1), 1);                        // [N, 1], drawn on the device
                result.narrow(1, position, 1).copy_(next);
                input = next.MoveToOuterDisposeScope();
            }
        }
        finally
        {
            foreach (var cache in caches) cache.Dispose();
            train(wasTraining);
        }
        return result;
    }

    /// <summary>Completes normalised images from their top <paramref name="keepRows"/> rows: the paper's completion figure. Returns [N, L] indices.</summary>
    public Tensor Complete(Tensor images, int keepRows, Generator generator, SamplingOptions? options = null)
    {
        if (keepRows < 1 || keepRows >= Config.Resolution)
            throw new ResearchKitException($"igpt: rows to keep must be in 1 … {Config.Resolution - 1}; got {keepRows}");
        var known = Tokenize(images);
        return Sample(images.shape[0], generator, options, known.narrow(1, 0, (long)keepRows * Config.Resolution));
    }

    /// <summary>
    /// The paper's completion figure (Fig. 1, transposed) as image-grid rows: the quantised originals, their top halves (the
    /// rest grey), then <paramref name="samples"/> completions of the bottom half.
    /// </summary>
    public List<(string Label, Tensor Images)> CompletionRows(Tensor images, int samples, Generator generator, SamplingOptions? options = null)
    {
        int keep = Config.Resolution / 2;
        var original = ToPixels(Tokenize(images));
        var top = original.clone();
        top.narrow(2, keep, top.shape[2] - keep).fill_(0.5f);   // grey where the model draws
        var rows = new List<(string Label, Tensor Images)> { ("original (quantised)", original), ("top half given", top) };
        for (int s = 1; s <= samples; s++) rows.Add(($"completion {s}", ToPixels(Complete(images, keep, generator, options))));
        return rows;
    }

    public override Tensor forward(Tensor images) => Features(images);
}
