using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Methods;
using ResearchKit.Runs;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Models;

/// <summary>Which translation a TSIT run learns (§4; the authors' scripts sis_*, ast_*, mmis_*).</summary>
public enum TranslationTask
{
    /// <summary>Supervised synthesis from a structure map (the paper's semantic image synthesis): the image's Sobel edge map →
    /// the image, paired; no style stream (the authors' no_ss); the discriminator sees the map beside the image.</summary>
    Synthesis,
    /// <summary>Unsupervised arbitrary style transfer: the content of one image in the statistics of another (the next image
    /// of the batch, a fixed pairing as the authors' lists); noise starts the generator; the discriminator judges the style
    /// images' realism; the perceptual loss holds the content.</summary>
    Style,
    /// <summary>Multimodal synthesis: the structure map of one image rendered in the style of another, so one map gives as
    /// many outputs as styles; otherwise trained as <see cref="Style"/> (the authors' MMIS runs their AST code).</summary>
    Multimodal,
}

/// <summary>
/// TSIT (Jiang et al., ECCV 2020): content and style streams, a generator modulated by FAdaIN and FADE at every scale
/// (<see cref="TsitGenerator"/>), a multi-scale PatchGAN, and the generator's loss hinge + λ_FM·feature matching +
/// λ_P·perceptual. The recipe is the authors' code's: hinge loss, Adam β = (0, 0.9), TTUR (discriminator 4·10⁻⁴,
/// generator 10⁻⁴), one discriminator step per generator step, λ_FM = λ_P = 1 (their MMIS scripts).
/// The perceptual network is VGG-19 in the paper, which cannot be downloaded here: the kit's own classifier replaces it
/// (<see cref="Perceptual"/>, a supervised CNN run), its block maps weighted 1/2^(depth − 1 − block) as the authors weight
/// VGG's five layers. Without a classifier run there is no perceptual loss, and the config records that.
/// </summary>
/// <param name="Networks">Streams' and generator's sizes; the content input's channels follow the task.</param>
/// <param name="Perceptual">A supervised CNN run folder (trained on this data) for the perceptual loss; null: none.</param>
/// <param name="StyleStream">The style stream and FAdaIN (style and multimodal tasks; false: the "no style stream" ablation).</param>
/// <param name="Pix2Pix">The synthesis baseline instead of TSIT's networks: pix2pix's U-Net generator (<see cref="UNetGenerator"/>)
/// with its L1 term (<see cref="ReconstructionWeight"/>, pix2pix's λ = 100), beside the same discriminator and losses.</param>
public sealed record TsitConfig(TsitNetworks Networks, TranslationTask Task = TranslationTask.Style, string? Perceptual = null,
    bool StyleStream = true, double PerceptualWeight = 1, double FeatureMatchingWeight = 1,
    int DiscriminatorWidth = 16, int DiscriminatorLayers = 3, int DiscriminatorScales = 2,
    bool Pix2Pix = false, double ReconstructionWeight = 100) : MethodConfig
{
    static OptimizerConfig Adam(double rate) => new(BaseLearningRate: rate, WeightDecay: 0, Beta1: 0, Beta2: 0.9, WarmupFraction: 0)
        { Schedule = ScheduleConfig.Constant, AbsoluteLearningRate = true };

    /// <summary>The discriminator's optimizer (the run's --lr sets its rate): TTUR's 4·10⁻⁴.</summary>
    public override OptimizerConfig Optimizer { get; init; } = Adam(4e-4);

    /// <summary>The streams' and generator's optimizer: TTUR's 10⁻⁴.</summary>
    public OptimizerConfig GeneratorOptimizer { get; init; } = Adam(1e-4);

    /// <summary>CPU scale: width 16, 3 scales, discriminators of 3 layers at 2 scales.</summary>
    public static TsitConfig Tiny(TranslationTask task = TranslationTask.Style, int imageSize = 28, int channels = 1) =>
        (TsitConfig)new TsitConfig(new TsitNetworks(), task).ForInput(imageSize, channels);

    /// <summary>Whether the generator has a style stream: not for synthesis, and not in the ablation.</summary>
    public bool UsesStyle => Task != TranslationTask.Synthesis && StyleStream;

    /// <summary>Whether the content stream reads a structure map (one channel) rather than the image.</summary>
    public bool FromStructure => Task != TranslationTask.Style;

    public override MethodConfig ForInput(int imageSize, int channels) => this with
    {
        Networks = Networks with
        {
            ImageSize = imageSize, Channels = channels, ContentChannels = FromStructure ? 1 : channels,
            StartChannels = Task == TranslationTask.Synthesis ? 1 : 3,   // the map itself, or noise (the authors: 3 channels)
        },
    };

    public override (int ImageSize, int Channels) InputShape() => (Networks.ImageSize, Networks.Channels);

    public override IEnumerable<FrozenDependency> FrozenDependencies() => Perceptual is null ? [] : [FrozenDependency.Run("perceptual", Perceptual)];

    public override MethodConfig ForData(ImageDataset train, Normalization normalization)
    {
        if (Perceptual is not null) CheckPerceptual(normalization);
        return this;
    }

    /// <summary>Refuses, in one line, a perceptual run that is not a supervised CNN trained on data normalised as this run's.</summary>
    public void CheckPerceptual(Normalization normalization)
    {
        var run = Pretraining.ReadConfig(Perceptual!);
        if (run.Method is not SupervisedConfig { Backbone: SupervisedBackbone.Cnn })
            throw new ResearchKitException($"tsit: --perceptual {Perceptual}: expected a supervised CNN run (pretrain --method supervised); got {MethodRegistry.Of(run.Method).Name}");
        if (!run.Normalization.Mean.SequenceEqual(normalization.Mean) || !run.Normalization.Std.SequenceEqual(normalization.Std))
            throw new ResearchKitException($"tsit: --perceptual {Perceptual} was trained on {run.Dataset}, normalised otherwise than this run's data: train it on this data set");
    }

    public override void Validate()
    {
        Networks.Validate("tsit", scales: !Pix2Pix);
        if (!Enum.IsDefined(Task)) throw new ResearchKitException($"tsit: --task must be synthesis, style or multimodal; got {Task}");
        if (Perceptual is { } folder && string.IsNullOrWhiteSpace(folder)) throw new ResearchKitException("tsit: --perceptual needs a run folder");
        if (PerceptualWeight is < 0 or > 1000 || double.IsNaN(PerceptualWeight))
            throw new ResearchKitException($"tsit: --perceptual-weight must be in [0, 1000]; got {PerceptualWeight}");
        if (FeatureMatchingWeight is < 0 or > 1000 || double.IsNaN(FeatureMatchingWeight))
            throw new ResearchKitException($"tsit: --feature-matching-weight must be in [0, 1000]; got {FeatureMatchingWeight}");
        if (Pix2Pix && Task != TranslationTask.Synthesis) throw new ResearchKitException("tsit: --pix2pix is a baseline of --task synthesis only");
        if (Pix2Pix && Networks.ImageSize % 4 != 0) throw new ResearchKitException($"tsit: --pix2pix's U-Net needs a side divisible by 4; got {Networks.ImageSize}");
        if (ReconstructionWeight is < 0 or > 10000 || double.IsNaN(ReconstructionWeight))
            throw new ResearchKitException($"tsit: --l1-weight must be in [0, 10000]; got {ReconstructionWeight}");
        if (DiscriminatorWidth is < 4 or > 256) throw new ResearchKitException($"tsit: --discriminator-width must be 4–256; got {DiscriminatorWidth}");
        if (DiscriminatorLayers is < 1 or > 4) throw new ResearchKitException($"tsit: --discriminator-layers must be 1–4; got {DiscriminatorLayers}");
        if (DiscriminatorScales is < 1 or > 3) throw new ResearchKitException($"tsit: --discriminator-scales must be 1–3; got {DiscriminatorScales}");
        if (Networks.ImageSize >> (DiscriminatorScales - 1) < 8)
            throw new ResearchKitException($"tsit: {DiscriminatorScales} discriminator scales shrink a {Networks.ImageSize} px image below 8 px; use fewer");
        GeneratorOptimizer.Validate("tsit generator");
    }

    public override IPretrainModel Build(BuildContext context) => new Tsit(this, context);

    /// <summary>Parameters counted exactly (spectral norm's vectors are buffers); activations per image estimated as a few
    /// saved tensors per feature map of the streams, the generator and the discriminator (fakes and reals).</summary>
    public override ModelSize? Size()
    {
        var n = Networks;
        double Conv(double inputs, double outputs, int kernel, bool bias = true) => kernel * kernel * inputs * outputs + (bias ? outputs : 0);
        double Area(int k) => (double)n.SideAt(k) * n.SideAt(k);
        ModelSize Stream(int inputs)
        {
            var size = ModelSize.None;
            for (int k = 0; k <= n.Scales; k++)
            {
                double fin = k == 0 ? inputs : n.WidthAt(k - 1), fout = n.WidthAt(k);
                size += new ModelSize(Conv(fin, fin, 3) + Conv(fin, fout, 3) + (fin != fout ? Conv(fin, fout, 1, bias: false) : 0), 6 * fout * Area(k));
            }
            return size;
        }
        double Fade(double channels) => n.Fade ? 2 * Conv(channels, channels, 3) : Conv(2 * channels, channels, 3);
        var generator = new ModelSize(Conv(n.StartChannels, n.WidthAt(n.Scales), 3) + Conv(n.WidthAt(0), n.Channels, 3), 3 * n.Channels * Area(0));
        for (int k = 1; k <= n.Scales; k++)
        {
            double fin = n.WidthAt(k), fout = n.WidthAt(k - 1);
            generator += new ModelSize(2 * Fade(fin) + Conv(fin, fin, 3) + Conv(fin, fout, 3) + (fin != fout ? Fade(fin) + Conv(fin, fout, 1, bias: false) : 0),
                12 * fin * Area(k) + 2 * fout * Area(k - 1));
        }
        double inputs = n.Channels + (Task == TranslationTask.Synthesis ? 1 : 0), patch = 0, channels = DiscriminatorWidth;
        patch += Conv(inputs, DiscriminatorWidth, 4);
        for (int layer = 1; layer < DiscriminatorLayers; layer++)
        {
            double next = Math.Min(channels * 2, 8.0 * DiscriminatorWidth);
            patch += Conv(channels, next, 4, bias: false);
            channels = next;
        }
        patch += Conv(channels, 1, 4);
        var discriminator = new ModelSize(DiscriminatorScales * patch, 4 * 3 * DiscriminatorWidth * Area(1));
        if (Pix2Pix)
        {
            double w = n.Width, c = n.ContentChannels;
            var unet = new ModelSize(Conv(c, w, 4) + Conv(w, 2 * w, 4) + Conv(2 * w, 2 * w, 3) + Conv(4 * w, w, 3) + Conv(2 * w, w, 3) + Conv(w + c, n.Channels, 3),
                8 * w * Area(1) + 8 * w * Area(2) + 4 * w * Area(0));
            return unet + discriminator;
        }
        return Stream(n.ContentChannels) + (UsesStyle ? Stream(n.Channels) : ModelSize.None) + generator + discriminator;
    }
}

/// <summary>The TSIT model (<see cref="TsitConfig"/>): streams, generator and discriminator; the content stream is the backbone.</summary>
public sealed class Tsit : nn.Module, IPretrainModel
{
    public TsitConfig Config { get; }
    readonly TsitStream? content;
    readonly TsitStream? style;
    readonly TsitGenerator? generator;
    readonly UNetGenerator? unet;                  // the pix2pix baseline's generator, instead of the three above
    readonly MultiScaleDiscriminator discriminator;
    readonly BuildContext context;
    readonly Lazy<Backbone> backbone;   // not a module field: the content stream is registered once, under its own name

    public Tsit(TsitConfig config, BuildContext context) : base(nameof(Tsit))
    {
        config.Validate();
        Config = config;
        this.context = context;
        var n = config.Networks;
        if (config.Pix2Pix) unet = new UNetGenerator(n.ContentChannels, n.Channels, n.Width);
        else
        {
            content = new TsitStream(n, n.ContentChannels);
            if (config.UsesStyle) style = new TsitStream(n, n.Channels);
            generator = new TsitGenerator(n);
        }
        discriminator = new MultiScaleDiscriminator(n.Channels + (config.Task == TranslationTask.Synthesis ? 1 : 0),
            config.DiscriminatorWidth, config.DiscriminatorLayers, config.DiscriminatorScales, n.SpectralNorm);
        backbone = new(() =>
        {
            Backbone encoder = unet ?? (Backbone)content!;
            return config.FromStructure ? new PreprocessedBackbone(encoder, StructureMap) : encoder;
        });
        RegisterComponents();
    }

    public Backbone Backbone => backbone.Value;
    public nn.Module Module => this;

    /// <summary>
    /// The structure map of normalised images [N, C, H, W]: the magnitude of the Sobel gradient of their grey level in
    /// pixel space, divided by 4 so that a black-to-white step gives 1 [N, 1, H, W].
    /// </summary>
    public Tensor StructureMap(Tensor images)
    {
        var grey = context.ToPixels(images).mean([1], keepdim: true);
        var sobel = tensor(new float[] { -1, 0, 1, -2, 0, 2, -1, 0, 1 }, device: images.device).reshape(1, 1, 3, 3);
        var padded = functional.pad(grey, [1, 1, 1, 1], PaddingModes.Replicate);
        var gx = functional.conv2d(padded, sobel);
        var gy = functional.conv2d(padded, sobel.transpose(2, 3));
        return (gx.square() + gy.square()).sqrt() / 4;
    }

    /// <summary>The style image paired with each image of a batch: the next one (a fixed pairing, as the authors' lists).</summary>
    public static Tensor NextInBatch(Tensor images, int shift = 1) => images.roll(-shift, 0);   // row i holds image i + shift

    /// <summary>
    /// Translations, normalised as the run's images: <paramref name="images"/>' content (their structure map, or themselves
    /// for style transfer) in the style of <paramref name="styles"/> (ignored without a style stream).
    /// </summary>
    public Tensor Translate(Tensor images, Tensor? styles, Generator draws)
    {
        var contentInput = Config.FromStructure ? StructureMap(images) : images;
        if (unet is not null) return context.FromPixels((unet.Generate(contentInput) + 1) / 2);
        var contentFeatures = content!.FeatureMaps(contentInput);
        var styleFeatures = style is null || styles is null ? null : style.FeatureMaps(styles);
        var coarse = contentFeatures[^1];
        var start = Config.Task == TranslationTask.Synthesis ? contentInput
            : Draws.Normal(draws, [images.shape[0], Config.Networks.StartChannels, coarse.shape[2], coarse.shape[3]], images.device);
        // tanh gives [−1, 1]; the run's images are normalised pixels, which the discriminator and perceptual network expect.
        return context.FromPixels((generator!.Translate(start, contentFeatures, styleFeatures) + 1) / 2);
    }

    /// <summary>Translations of a whole test set, in batches: each image in the style of the next one (none for synthesis).</summary>
    public Tensor TranslateAll(Tensor images, Generator draws)
    {
        if (Config.Task == TranslationTask.Synthesis) return EvaluationRequest.Batched(images, x => Translate(x, null, draws));
        long channels = images.shape[1];   // image and style side by side in the channels, so one batching serves both
        return EvaluationRequest.Batched(cat([images, NextInBatch(images)], 1),
            pair => Translate(pair.narrow(1, 0, channels), pair.narrow(1, channels, channels), draws));
    }

    /// <summary>What the discriminator judges: the image, beside its structure map for synthesis (pix2pix's conditional D).</summary>
    Tensor[][] Judge(Tensor images, Tensor? structure) => discriminator.call(structure is null ? images : cat([structure, images], 1));

    /// <summary>One batch's roles: the style images (null for synthesis), what the discriminator takes as real, the structure
    /// map it is conditioned on (synthesis), and the perceptual target.</summary>
    (Tensor? Styles, Tensor Real, Tensor? Condition) Roles(Tensor images) => Config.Task == TranslationTask.Synthesis
        ? (null, images, StructureMap(images))
        : (NextInBatch(images), NextInBatch(images), null);

    /// <summary>Generator first, then discriminator, each every step, as the authors' trainer (D_steps_per_G = 1).</summary>
    public IReadOnlyList<UpdatePhase> Phases()
    {
        var discriminatorParameters = UpdatePhase.TrainableOf(discriminator).Select(p => ("discriminator." + p.Name, p.Parameter)).ToList();
        var generatorParameters = UpdatePhase.TrainableOf(this).Where(p => !p.Name.StartsWith("discriminator.")).ToList();
        return
        [
            new UpdatePhase("generator", (batch, draws) => GeneratorLoss(batch.Images, draws), generatorParameters, Config.GeneratorOptimizer),
            new UpdatePhase("discriminator", (batch, draws) => DiscriminatorLoss(batch.Images, draws), discriminatorParameters),
        ];
    }

    /// <summary>L_D = hinge on real vs translated images, averaged over the discriminator's scales.</summary>
    public Tensor DiscriminatorLoss(Tensor images, Generator draws)
    {
        var (styles, real, condition) = Roles(images);
        Tensor fake;
        using (no_grad()) fake = Translate(images, styles, draws);
        return MultiScaleDiscriminator.DiscriminatorHinge(Judge(real, condition), Judge(fake, condition));
    }

    /// <summary>L_G = hinge + λ_FM·feature matching against the real images + λ_P·perceptual distance to the content's image.</summary>
    public Tensor GeneratorLoss(Tensor images, Generator draws)
    {
        var (styles, real, condition) = Roles(images);
        var fake = Translate(images, styles, draws);
        var judgedFake = Judge(fake, condition);
        var loss = MultiScaleDiscriminator.GeneratorHinge(judgedFake);
        if (Config.FeatureMatchingWeight > 0)
        {
            Tensor[][] judgedReal;
            using (no_grad()) judgedReal = Judge(real, condition);
            loss += Config.FeatureMatchingWeight * MultiScaleDiscriminator.FeatureMatching(judgedReal, judgedFake);
        }
        if (Config.Perceptual is not null && Config.PerceptualWeight > 0) loss += Config.PerceptualWeight * PerceptualDistance(fake, images);
        if (Config.Pix2Pix && Config.ReconstructionWeight > 0)   // pix2pix's L1 to the target on the tanh scale [−1, 1] (2 × pixels)
            loss += Config.ReconstructionWeight * 2 * functional.l1_loss(context.ToPixels(fake), context.ToPixels(images));
        return loss;
    }

    ConvNet PerceptualNetwork => context.Dependencies.Run(Config.Perceptual!, "tsit: --perceptual", context.ImageSize, context.Channels).Backbone as ConvNet
        ?? throw new ResearchKitException($"tsit: --perceptual {Config.Perceptual}: expected a supervised CNN run (its block maps give the perceptual loss)");

    /// <summary>Σ over the classifier's blocks of 1/2^(depth − 1 − block) · mean |φ(fake) − φ(target)|, the target held constant.</summary>
    public Tensor PerceptualDistance(Tensor fake, Tensor target)
    {
        var network = PerceptualNetwork;
        var fakeMaps = network.FeatureMaps(fake);
        Tensor[] targetMaps;
        using (no_grad()) targetMaps = network.FeatureMaps(target);
        Tensor total = zeros(1, device: fake.device);
        for (int i = 0; i < fakeMaps.Length; i++)
            total = total + functional.l1_loss(fakeMaps[i], targetMaps[i]) / Math.Pow(2, fakeMaps.Length - 1 - i);
        return total.squeeze();
    }

    /// <summary>
    /// Translation quality on test images, in pixels [0, 1]. Synthesis: L1 and SSIM to the image its map came from.
    /// Style and multimodal: the style distance (per-channel mean and deviation, <see cref="StyleDistance"/>) of the output
    /// to its style image, beside the content image's to the same style image (what no translation scores), and for
    /// multimodal the outputs' diversity over 4 styles per map (mean pairwise L1).
    /// </summary>
    static EvaluationReport MeasureTranslation(EvaluationRequest request)
    {
        var model = (Tsit)request.Model;
        var images = request.Images;
        var scalars = new Dictionary<string, double>();
        var pixels = request.Normalization.Invert(images).clamp(0, 1);
        if (model.Config.Task == TranslationTask.Synthesis)
        {
            var output = request.Normalization.Invert(model.TranslateAll(images, request.Generator)).clamp(0, 1);
            scalars["l1"] = (output - pixels).abs().mean().item<float>();
            scalars["ssim"] = ImageSimilarity.Ssim(output, pixels);
            return new EvaluationReport(scalars);
        }
        var styles = NextInBatch(images);
        var translated = request.Normalization.Invert(model.TranslateAll(images, request.Generator)).clamp(0, 1);
        var stylePixels = request.Normalization.Invert(styles).clamp(0, 1);
        scalars["style_distance"] = StyleDistance(translated, stylePixels);
        scalars["style_distance_untranslated"] = StyleDistance(pixels, stylePixels);
        if (model.Config.Task == TranslationTask.Multimodal)
        {
            long n = Math.Min(64, images.shape[0]);
            var outputs = Enumerable.Range(1, 4).Select(shift =>
            {
                using var sameNoise = new Generator(7);   // the styles alone differ between the 4 outputs
                return model.Translate(images.narrow(0, 0, n), NextInBatch(images, shift).narrow(0, 0, n), sameNoise);
            }).ToArray();
            double sum = 0;
            int pairs = 0;
            for (int a = 0; a < outputs.Length; a++)
                for (int b = a + 1; b < outputs.Length; b++, pairs++)
                    sum += (request.Normalization.Invert(outputs[a]) - request.Normalization.Invert(outputs[b])).abs().mean().item<float>();
            scalars["diversity"] = sum / pairs;
        }
        return new EvaluationReport(scalars);
    }

    /// <summary>Mean over images and channels of |μ_a − μ_b| + |σ_a − σ_b|, each image's per-channel pixel statistics: the
    /// colour-statistics distance the issue names as the style score (0: the same colour statistics).</summary>
    public static double StyleDistance(Tensor a, Tensor b)
    {
        var (meanA, stdA) = FeatureStatistics.Of(a);
        var (meanB, stdB) = FeatureStatistics.Of(b);
        return ((meanA - meanB).abs() + (stdA - stdB).abs()).mean().item<float>();
    }

    /// <summary>Content score: the kit classifier's accuracy on the translations, against the labels of the content images
    /// (the classifier still recognises the content's class), beside its accuracy on the test images themselves; and the
    /// translations' FD (kit classifier) and k-NN precision/recall against the test images (<see cref="SampleQuality"/>).</summary>
    static EvaluationReport MeasureContent(EvaluationRequest request)
    {
        var model = (Tsit)request.Model;
        var classifier = request.Reference("classifier");
        var translated = model.TranslateAll(request.Images, request.Generator);
        var logits = classifier as Supervised
            ?? throw new ResearchKitException("tsit: --extra classifier=RUN must be a supervised run (its class logits score the content)");
        double Accuracy(Tensor images) => EvaluationRequest.Batched(images, x => logits.call(x))
            .argmax(1).eq(request.Labels).to_type(ScalarType.Float64).mean().item<double>();
        var scalars = SampleQuality.Measure(translated, request.Images, classifier.Backbone);
        scalars["content_accuracy"] = Accuracy(translated);
        scalars["content_accuracy_real"] = Accuracy(request.Images);
        return new EvaluationReport(scalars);
    }

    /// <summary>`show RUN --what translations`: content inputs, style references and outputs (synthesis: maps, outputs and the
    /// images); for multimodal, each map's outputs under four styles.</summary>
    static Figure DrawTranslations(FigureRequest request)
    {
        var model = (Tsit)request.Model;
        int count = request.Count;
        var images = request.TestImages(count + 4);
        var shown = images.narrow(0, 0, count);
        var maps = model.Config.FromStructure ? model.StructureMap(shown).clamp(0, 1).expand(-1, model.Config.Networks.Channels, -1, -1) : null;
        var rows = new List<(string, Tensor)>();
        if (model.Config.Task == TranslationTask.Synthesis)
        {
            rows.Add(("structure", maps!));
            rows.Add(("output", request.Pixels(model.Translate(shown, null, request.Generator))));
            rows.Add(("image", request.Pixels(shown)));
            return new Figure(rows, $"{count} test images' structure maps, TSIT's syntheses and the images");
        }
        rows.Add(("content", maps ?? request.Pixels(shown)));
        int styleRows = model.Config.Task == TranslationTask.Multimodal ? 4 : 1;
        for (int shift = 1; shift <= styleRows; shift++)
        {
            var styles = images.narrow(0, shift, count);
            rows.Add((styleRows == 1 ? "style" : $"style {shift}", request.Pixels(styles)));
            using var sameNoise = new Generator(7);   // the rows differ by their style image alone
            rows.Add(("output", request.Pixels(model.Translate(shown, styles, sameNoise))));
        }
        return new Figure(rows, styleRows == 1
            ? $"{count} contents, their style images and the transfers"
            : $"{count} structure maps, each rendered in 4 styles (the style image above each row of outputs)");
    }

    public static MethodInfo Method { get; } = new("tsit", "Jiang et al., 2020. TSIT: A Simple and Versatile Framework for Image-to-Image Translation",
        typeof(TsitConfig),
        new Dictionary<string, Func<MethodConfig>>
        {
            ["tiny"] = () => TsitConfig.Tiny(),
            ["synthesis"] = () => TsitConfig.Tiny(TranslationTask.Synthesis),
            ["multimodal"] = () => TsitConfig.Tiny(TranslationTask.Multimodal),
            ["pix2pix"] = () => TsitConfig.Tiny(TranslationTask.Synthesis) with { Pix2Pix = true, DiscriminatorScales = 1, FeatureMatchingWeight = 0 },
        },
        [
            MethodOption.Choice<TsitConfig, TranslationTask>("--task", "synthesis (structure map → image, paired), style (arbitrary style transfer) or multimodal",
                (c, v) => (TsitConfig)(c with { Task = v }).ForInput(c.Networks.ImageSize, c.Networks.Channels)),
            MethodOption.Text<TsitConfig>("--perceptual", "a supervised CNN run folder on this data for the perceptual loss (the paper's VGG-19; none: no perceptual loss)",
                (c, v) => c with { Perceptual = v }),
            MethodOption.Number<TsitConfig>("--perceptual-weight", "λ_P, the perceptual loss's weight (authors' MMIS: 1)", (c, v) => c with { PerceptualWeight = v })
                .Only<TsitConfig>(c => c.Perceptual is not null, "--perceptual RUN"),
            MethodOption.Flag<TsitConfig>("--no-style-stream", "ablation: no style stream and no FAdaIN", c => c with { StyleStream = false })
                .Only<TsitConfig>(c => c.Task != TranslationTask.Synthesis, "--task style or multimodal"),
            MethodOption.Flag<TsitConfig>("--pix2pix", "baseline for --task synthesis: pix2pix's U-Net generator and L1 term, one PatchGAN scale, no feature matching",
                c => c with { Pix2Pix = true, DiscriminatorScales = 1, FeatureMatchingWeight = 0 })
                .Only<TsitConfig>(c => c.Task == TranslationTask.Synthesis, "--task synthesis"),
            MethodOption.Number<TsitConfig>("--feature-matching-weight", "λ_FM, the feature-matching loss's weight (authors' MMIS: 1; --pix2pix sets 0, and this, given, overrides it)",
                (c, v) => c with { FeatureMatchingWeight = v }),
            MethodOption.Number<TsitConfig>("--l1-weight", "pix2pix's λ on the L1 term (100)", (c, v) => c with { ReconstructionWeight = v })
                .Only<TsitConfig>(c => c.Pix2Pix, "--pix2pix"),
            MethodOption.Flag<TsitConfig>("--no-fade", "ablation: the content features enter by concatenation instead of FADE",
                c => c with { Networks = c.Networks with { Fade = false } }).Only<TsitConfig>(c => !c.Pix2Pix, "TSIT's generator (not --pix2pix)"),
            MethodOption.Integer<TsitConfig>("--width", "channels at the finest scale (Width·min(2^k, 4) at scale k)", (c, v) => c with { Networks = c.Networks with { Width = v } }),
            MethodOption.Integer<TsitConfig>("--scales", "scales where the generator runs a block (≥ 3 for the paper's design)",
                (c, v) => c with { Networks = c.Networks with { Scales = v } }).Only<TsitConfig>(c => !c.Pix2Pix, "TSIT's generator (not --pix2pix)"),
            MethodOption.Number<TsitConfig>("--generator-lr", "the streams' and generator's Adam rate (TTUR: 1e-4; --lr sets the discriminator's 4e-4)",
                (c, v) => c with { GeneratorOptimizer = c.GeneratorOptimizer with { BaseLearningRate = v } }),
            MethodOption.Integer<TsitConfig>("--discriminator-scales", "PatchGAN scales (authors: 2)", (c, v) => c with { DiscriminatorScales = v }),
            MethodOption.Integer<TsitConfig>("--discriminator-layers", "PatchGAN layers (authors: 3 for style transfer, 4 for synthesis)",
                (c, v) => c with { DiscriminatorLayers = v }),
            MethodOption.Integer<TsitConfig>("--discriminator-width", "channels of the PatchGAN's first layer", (c, v) => c with { DiscriminatorWidth = v }),
        ])
    {
        Evaluations =
        [
            new MethodEvaluation("translation", "synthesis: L1 and SSIM to the image; style/multimodal: colour-statistics distance to the style image (and diversity over 4 styles)",
                MeasureTranslation),
            new MethodEvaluation("content", "with --extra classifier=RUN: its accuracy on the translations against the content images' labels, and their FD (kit classifier)",
                MeasureContent) { Needs = ["classifier"] },
        ],
        Figures = [new MethodFigure("translations", "content inputs, style images and outputs (multimodal: four styles per map)", [], DrawTranslations)],
    };
}
