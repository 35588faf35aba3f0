using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Methods;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>TSIT's building blocks (issue 28): FAdaIN, FADE, the streams, the generator and the multi-scale PatchGAN.</summary>
public class TsitTests
{
    static Tensor Random(Generator g, params long[] shape) => randn(shape, generator: g, device: CPU);

    [Fact]
    public void FAdaIN_gives_each_image_and_channel_the_style_features_mean_and_deviation()
    {
        var g = new Generator(1);
        using var scope = NewDisposeScope();
        var x = Random(g, 2, 3, 5, 4) * 3 + 1;
        var style = Random(g, 2, 3, 6, 6) * 0.5 - 2;
        var y = FeatureStatistics.AdaIn(x, style);
        // By hand, per image n and channel c: (x − mean x)/sd x · sd s + mean s, with sd = √(unbiased variance + 1e-5).
        for (int n = 0; n < 2; n++)
            for (int c = 0; c < 3; c++)
            {
                double[] xs = x[n, c].flatten().data<float>().Select(v => (double)v).ToArray(), ss = style[n, c].flatten().data<float>().Select(v => (double)v).ToArray();
                double Mean(double[] a) => a.Average();
                double Sd(double[] a) => Math.Sqrt(a.Sum(v => (v - Mean(a)) * (v - Mean(a))) / (a.Length - 1) + 1e-5);
                var expected = xs.Select(v => (v - Mean(xs)) / Sd(xs) * Sd(ss) + Mean(ss)).ToArray();
                var actual = y[n, c].flatten().data<float>().ToArray();
                for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], actual[i], 4);
            }
    }

    [Fact]
    public void FADE_is_the_instance_normalised_input_scaled_by_one_plus_gamma_and_shifted_by_beta_of_the_content()
    {
        var g = new Generator(2);
        using var scope = NewDisposeScope();
        using var fade = new Fade(4, 6);
        var x = Random(g, 2, 4, 5, 5) * 2 + 3;
        var content = Random(g, 2, 6, 5, 5);
        var y = fade.call(x, content);
        var parameters = fade.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var gamma = nn.functional.conv2d(content, parameters["gamma.weight"], parameters["gamma.bias"], padding: [1, 1]);
        var beta = nn.functional.conv2d(content, parameters["beta.weight"], parameters["beta.bias"], padding: [1, 1]);
        // Instance normalisation by hand: biased variance per image and channel.
        var mean = x.mean([2, 3], keepdim: true);
        var normalised = (x - mean) / ((x - mean).pow(2).mean([2, 3], keepdim: true) + 1e-5).sqrt();
        var expected = normalised * (1 + gamma) + beta;
        Assert.True(y.allclose(expected, rtol: 1e-4, atol: 1e-5));
        // Each image is normalised on its own: the same image alone gives the same output (batch size does not matter).
        Assert.True(fade.call(x[0..1], content[0..1]).allclose(y[0..1], rtol: 1e-4, atol: 1e-5));
    }

    /// <summary>The "no FADE" ablation (--no-fade): the content enters by concatenation. Each Fade is one convolution over the
    /// instance-normalised features beside the content map, with no γ or β anywhere in the generator, and the content
    /// still decides the output.</summary>
    [Fact]
    public void Without_FADE_the_content_is_concatenated_to_the_normalised_features_and_still_sets_the_output()
    {
        var g = new Generator(5);
        using var scope = NewDisposeScope();
        using var fade = new Fade(4, 6, modulate: false);
        var x = Random(g, 2, 4, 5, 5) * 2 + 3;
        var content = Random(g, 2, 6, 5, 5);
        var parameters = fade.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        Assert.Equal(["concatenated.bias", "concatenated.weight"], parameters.Keys.Order());
        var mean = x.mean([2, 3], keepdim: true);
        var normalised = (x - mean) / ((x - mean).pow(2).mean([2, 3], keepdim: true) + 1e-5).sqrt();
        var expected = nn.functional.conv2d(cat([normalised, content], 1), parameters["concatenated.weight"], parameters["concatenated.bias"], padding: [1, 1]);
        Assert.True(fade.call(x, content).allclose(expected, rtol: 1e-4, atol: 1e-5));

        var config = (TsitConfig)Tsit.Method.Option("--no-fade").Apply(Tsit.Method.Preset("tiny"), "");
        Assert.False(config.Networks.Fade);
        Assert.True(((TsitConfig)Tsit.Method.Preset("tiny")).Networks.Fade);
        var networks = config.Networks with { Width = 8 };
        using var contentStream = new TsitStream(networks, networks.ContentChannels);
        using var styleStream = new TsitStream(networks, networks.Channels);
        using var generator = new TsitGenerator(networks);
        var names = generator.named_parameters().Select(p => p.name).ToList();
        Assert.Contains(names, n => n.Contains("concatenated"));
        Assert.DoesNotContain(names, n => n.Contains("gamma") || n.Contains("beta"));
        foreach (var module in new nn.Module[] { contentStream, styleStream, generator }) module.eval();
        var (a, b) = (Random(g, 1, 1, 28, 28), Random(g, 1, 1, 28, 28) * 3);
        var start = Random(g, 1, networks.StartChannels, 4, 4);
        var style = styleStream.FeatureMaps(a);
        Assert.False(generator.Translate(start, contentStream.FeatureMaps(a), style).allclose(generator.Translate(start, contentStream.FeatureMaps(b), style), atol: 1e-3),
            "without FADE, changing the content image changed nothing");
    }

    [Theory]
    [InlineData(28, 1, 3)]
    [InlineData(32, 3, 3)]
    [InlineData(32, 3, 4)]
    public void The_streams_give_features_at_every_scale_and_the_generator_an_image_in_range_trained_through_both_streams(int size, int channels, int scales)
    {
        var networks = new TsitNetworks(size, channels, channels, Width: 8, Scales: scales);
        networks.Validate("tsit");
        var g = new Generator(3);
        using var scope = NewDisposeScope();
        using var content = new TsitStream(networks, channels);
        using var style = new TsitStream(networks, channels);
        using var generator = new TsitGenerator(networks);
        var images = Random(g, 2, channels, size, size);
        var c = content.FeatureMaps(images);
        var s = style.FeatureMaps(images.flip(0));
        Assert.Equal(scales + 1, c.Length);
        for (int k = 0; k <= scales; k++)
            Assert.Equal(new long[] { 2, networks.WidthAt(k), networks.SideAt(k), networks.SideAt(k) }, c[k].shape);
        var output = generator.Translate(Random(g, 2, networks.StartChannels, 1, 1), c, s);
        Assert.Equal(new long[] { 2, channels, size, size }, output.shape);
        output.square().mean().backward();
        foreach (var (module, name) in new (nn.Module, string)[] { (content, "content"), (style, "style"), (generator, "generator") })
            Assert.True(module.parameters().Any(p => p.grad is { } grad && grad.abs().sum().item<float>() > 0), $"no gradient reaches the {name}");
        // Without a style stream (synthesis), the generator runs on the content alone.
        Assert.Equal(new long[] { 2, channels, size, size }, generator.Translate(Random(g, 2, networks.StartChannels, 4, 4), c, null).shape);
    }

    [Fact]
    public void The_style_features_set_the_output_and_the_content_features_set_where_things_are()
    {
        var networks = new TsitNetworks(28, 1, 1, Width: 8, Scales: 3);
        var g = new Generator(4);
        using var scope = NewDisposeScope();
        using var contentStream = new TsitStream(networks, 1);
        using var styleStream = new TsitStream(networks, 1);
        using var generator = new TsitGenerator(networks);
        foreach (var module in new nn.Module[] { contentStream, styleStream, generator }) module.eval();   // no power-iteration updates
        var a = Random(g, 1, 1, 28, 28);
        var b = Random(g, 1, 1, 28, 28) * 3;
        var start = Random(g, 1, networks.StartChannels, 4, 4);
        var c = contentStream.FeatureMaps(a);
        var sameStyle = generator.Translate(start, c, styleStream.FeatureMaps(a));
        var otherStyle = generator.Translate(start, c, styleStream.FeatureMaps(b));
        Assert.False(sameStyle.allclose(otherStyle, atol: 1e-3), "changing the style image changed nothing");
        Assert.False(sameStyle.allclose(generator.Translate(start, contentStream.FeatureMaps(b), styleStream.FeatureMaps(a)), atol: 1e-3),
            "changing the content image changed nothing");
    }

    [Fact]
    public void The_multi_scale_PatchGAN_judges_patches_at_each_scale_and_its_losses_match_their_formulas()
    {
        var g = new Generator(5);
        using var scope = NewDisposeScope();
        using var discriminator = new MultiScaleDiscriminator(1, 8, 3, 2, spectralNorm: true);
        var real = Random(g, 2, 1, 28, 28);
        var fake = Random(g, 2, 1, 28, 28);
        var judgedReal = discriminator.call(real);
        var judgedFake = discriminator.call(fake);
        Assert.Equal(2, judgedReal.Length);
        // 28 → 15 → 8 → 5 → patch logits 6×6; the half-size scale: 14 → 8 → 5 → 3 → 4×4.
        Assert.Equal(new long[] { 2, 1, 6, 6 }, judgedReal[0][^1].shape);
        Assert.Equal(new long[] { 2, 1, 4, 4 }, judgedReal[1][^1].shape);
        Assert.Equal(new long[] { 2, 8, 15, 15 }, judgedReal[0][0].shape);
        Assert.Equal(new long[] { 2, 16, 8, 8 }, judgedReal[0][1].shape);

        // Hinge, by hand over both scales' logits.
        double Hinge(Tensor r, Tensor f) => (nn.functional.relu(1 - r).mean() + nn.functional.relu(1 + f).mean()).item<float>();
        double expected = (Hinge(judgedReal[0][^1], judgedFake[0][^1]) + Hinge(judgedReal[1][^1], judgedFake[1][^1])) / 2;
        Assert.Equal(expected, MultiScaleDiscriminator.DiscriminatorHinge(judgedReal, judgedFake).item<float>(), 4);
        Assert.Equal(-(judgedFake[0][^1].mean() + judgedFake[1][^1].mean()).item<float>() / 2,
            MultiScaleDiscriminator.GeneratorHinge(judgedFake).item<float>(), 4);

        // Feature matching: zero against itself; else Σ over scales and layers of mean |difference|, over the scale count.
        Assert.Equal(0f, MultiScaleDiscriminator.FeatureMatching(judgedReal, judgedReal).item<float>());
        double matching = 0;
        for (int s = 0; s < 2; s++)
            for (int n = 0; n < judgedReal[s].Length - 1; n++) matching += (judgedFake[s][n] - judgedReal[s][n]).abs().mean().item<float>();
        Assert.Equal(matching / 2, MultiScaleDiscriminator.FeatureMatching(judgedReal, judgedFake).item<float>(), 4);

        // The pooling between scales does not count padding: a flat image stays flat, edges included.
        var flat = full(new long[] { 1, 1, 7, 7 }, 0.75f);
        Assert.True(MultiScaleDiscriminator.Downsample(flat).allclose(full(new long[] { 1, 1, 4, 4 }, 0.75f)));
    }

    [Fact]
    public void Networks_that_halve_an_image_below_two_pixels_are_refused_in_one_line()
    {
        var error = Assert.Throws<ResearchKitException>(() => new TsitNetworks(28, 1, 1, Scales: 4).Validate("tsit"));
        Assert.Contains("4 scales halve a 28 px image", error.Message);
        Assert.Throws<ResearchKitException>(() => new TsitNetworks(28, 2, 1).Validate("tsit"));
    }

    [Fact]
    public void The_size_estimate_counts_every_parameter_of_each_variant()
    {
        var variants = new List<TsitConfig>();
        foreach (var preset in Tsit.Method.Presets.Keys) variants.Add((TsitConfig)Tsit.Method.Preset(preset).ForInput(32, 3));
        var style = (TsitConfig)Tsit.Method.Preset("tiny").ForInput(28, 1);
        variants.Add(style with { StyleStream = false });
        variants.Add(style with { Networks = style.Networks with { Fade = false, Scales = 2 } });
        foreach (var config in variants)
        {
            var model = config.Build();
            double actual = model.Module.parameters().Sum(p => (double)p.numel());
            model.Module.Dispose();
            Assert.Equal(actual, config.Size()!.Parameters);
        }
    }

    [Fact]
    public void SSIM_is_one_for_identical_images_and_the_closed_form_for_flat_ones()
    {
        var g = new Generator(6);
        using var scope = NewDisposeScope();
        var images = rand(new long[] { 2, 3, 16, 16 }, generator: g);
        Assert.Equal(1.0, ImageSimilarity.Ssim(images, images), 6);
        // Flat images a and b: no variance, so SSIM = (2ab + C1)/(a² + b² + C1) everywhere (Wang et al. 2004, Eq. 13).
        double a = 0.3, b = 0.7, c1 = 1e-4;
        Assert.Equal((2 * a * b + c1) / (a * a + b * b + c1), ImageSimilarity.Ssim(full(new long[] { 1, 1, 12, 12 }, a), full(new long[] { 1, 1, 12, 12 }, b)), 5);
        var noisy = (images + 0.2 * randn(images.shape, generator: g)).clamp(0, 1);
        var noisier = (images + 0.5 * randn(images.shape, generator: g)).clamp(0, 1);
        Assert.True(ImageSimilarity.Ssim(images, noisy) > ImageSimilarity.Ssim(images, noisier));
    }

    [Fact]
    public void The_structure_map_is_the_Sobel_gradient_magnitude_over_four()
    {
        var config = TsitConfig.Tiny(TranslationTask.Synthesis, 16, 1);
        using var model = (Tsit)config.Build();   // images as pixels in [0, 1]
        using var scope = NewDisposeScope();
        var step = zeros(1, 1, 16, 16);
        step[.., .., .., 8..] = 1;   // black left half, white right half
        var map = model.StructureMap(step)[0, 0];
        // Columns 7 and 8 border the step: |gx| = 1 + 2 + 1 = 4, so 1 after dividing by 4; elsewhere the image is flat.
        Assert.True(map[.., 7..9].allclose(ones(16, 2)));
        Assert.Equal(0f, map[.., ..7].abs().max().item<float>());
        Assert.Equal(0f, map[.., 9..].abs().max().item<float>());
    }

    /// <summary>Each task trains both phases; a resumed run equals an unbroken one; the evaluation and the figure run.</summary>
    [Theory]
    [InlineData(TranslationTask.Synthesis, false)]
    [InlineData(TranslationTask.Synthesis, true)]
    [InlineData(TranslationTask.Style, false)]
    [InlineData(TranslationTask.Multimodal, false)]
    public void Each_task_trains_resumes_like_an_unbroken_run_and_reports_its_measures(TranslationTask task, bool pix2pix)
    {
        using var data = TestData.FashionMnist(128, 64);
        var normalization = Normalization.Of(data.Train);
        var config = (TsitConfig)TsitConfig.Tiny(task).ForInput(28, 1) with { Networks = TsitConfig.Tiny(task).Networks with { Width = 8 }, Pix2Pix = pix2pix };
        var (unbroken, whole) = TestData.AssertResumeEqualsUnbroken(config, data.Train, normalization, 32);
        Assert.Equal(8, unbroken.PhaseLosses!["generator"].Count);
        Assert.Equal(8, unbroken.PhaseLosses["discriminator"].Count);
        Assert.All(unbroken.Losses, l => Assert.True(double.IsFinite(l)));

        whole.Module.eval();
        Dictionary<string, double> scalars;
        using (no_grad()) scalars = TestData.Measure(config, whole, normalization, normalization.Apply(data.Test.Images, CPU), new Generator(0));
        string[] expected = task switch
        {
            TranslationTask.Synthesis => ["l1", "ssim"],
            TranslationTask.Style => ["style_distance", "style_distance_untranslated"],
            _ => ["style_distance", "style_distance_untranslated", "diversity"],
        };
        Assert.Equal(expected.Order(), scalars.Keys.Order());
        Assert.All(scalars.Values, v => Assert.True(double.IsFinite(v) && v >= 0));
        Assert.Equal(config.UsesStyle, whole.Module.named_parameters().Any(p => p.name.StartsWith("style.")));
    }

    /// <summary>Synthesis on real data, by TSIT and by the pix2pix baseline: the translation's L1 to the image falls and its SSIM
    /// rises as the generator trains.</summary>
    [Theory]
    [InlineData("synthesis")]
    [InlineData("pix2pix")]
    public void Synthesis_learns_to_draw_the_image_from_its_structure_map(string preset)
    {
        using var data = TestData.FashionMnist(1024, 128);
        var normalization = Normalization.Of(data.Train);
        var config = (TsitConfig)Tsit.Method.Preset(preset).ForInput(28, 1);
        var model = Pretraining.Build(config, 0, BuildContext.Of(config, normalization));
        var test = normalization.Apply(data.Test.Images, CPU);
        Dictionary<string, double> Measure()
        {
            model.Module.eval();
            using (no_grad()) return TestData.Measure(config, model, normalization, test, new Generator(0));
        }
        var before = Measure();
        new Trainer(new TrainConfig(2, 32, config.Optimizer, Seed: 0)).Fit(new DataLoader(data.Train, 32, normalization, seed: 0), model);
        var after = Measure();
        Assert.True(after["l1"] < 0.7 * before["l1"], $"L1 {before["l1"]:F3} → {after["l1"]:F3}");
        Assert.True(after["ssim"] > before["ssim"] + 0.1, $"SSIM {before["ssim"]:F3} → {after["ssim"]:F3}");
    }

    [Fact]
    public void The_perceptual_loss_reads_a_kit_classifier_run_and_other_runs_are_refused_in_one_line()
    {
        using var data = TestData.FashionMnist(256, 16);
        var normalization = Normalization.Of(data.Train);
        var classifier = TestData.WideTeacher(data.Train);
        var config = (TsitConfig)TsitConfig.Tiny() with { Perceptual = classifier };
        config = (TsitConfig)config.ForData(data.Train, normalization);
        var model = (Tsit)Pretraining.Build(config, 0, BuildContext.Of(config, normalization));
        var images = normalization.Apply(data.Test.Images, CPU);
        using (no_grad())
        {
            Assert.Equal(0f, model.PerceptualDistance(images, images).item<float>());
            Assert.True(model.PerceptualDistance(images, images.flip(0)).item<float>() > 0);
        }
        Assert.Single(config.FrozenDependencies());

        // The content evaluation: the same classifier scores the translations (accuracy against the content's labels, FD).
        var (_, reference) = Pretraining.Load(classifier);
        var request = new EvaluationRequest(model, normalization, images, data.Test.Labels, new Dictionary<string, ImageDataset>(), new Generator(0))
            { References = new Dictionary<string, IPretrainModel> { ["classifier"] = reference } };
        model.Module.eval();
        Dictionary<string, double> scores;
        using (no_grad()) scores = MethodEvaluations.Scalars(MethodEvaluations.Run(Tsit.Method, request, ["content"]));
        Assert.InRange(scores["content_accuracy"], 0, 1);
        double byHand;
        using (no_grad()) byHand = ((Supervised)reference).call(images).argmax(1).eq(data.Test.Labels).to_type(ScalarType.Float64).mean().item<double>();
        Assert.Equal(Math.Round(byHand, 4), scores["content_accuracy_real"], 4);
        Assert.True(double.IsFinite(scores["fd_kit_classifier"]) && scores["fd_kit_classifier"] > 0);
        // A run of another method is not a perceptual network.
        var other = Path.Combine(TestData.TempDir(), "rotnet");
        Pretraining.Run(RotNetConfig.Tiny(), new PretrainOptions(Epochs: 1, BatchSize: 32, TrainLimit: 64), data.Train, other);
        var error = Assert.Throws<ResearchKitException>(() => (config with { Perceptual = other }).ForData(data.Train, normalization));
        Assert.Contains("expected a supervised CNN run", error.Message);
    }

    /// <summary>`researchkit pretrain --method tsit --task multimodal` then `show RUN --what translations`: a PNG grid, and the
    /// same figure through <see cref="RunFigures"/>: each map under four styles with the noise held fixed, so the output
    /// rows differ by their style image alone.</summary>
    [Fact]
    public void Show_draws_the_translations_grid_of_a_trained_run()
    {
        var dir = Path.Combine(TestData.TempDir(), "tsit");
        var (code, _, err) = TestData.Cli("pretrain", "--method", "tsit", "--task", "multimodal", "--dataset", "shapes", "--width", "8",
            "--epochs", "1", "--train-limit", "32", "--batch", "16", "--out", dir);
        Assert.True(code == 0, err);
        var png = Path.Combine(dir, "translations.png");
        (code, var output, err) = TestData.Cli("show", dir, "--what", "translations", "--n", "3", "--out", png);
        Assert.True(code == 0, err);
        Assert.Contains("3 structure maps, each rendered in 4 styles", output);
        var bytes = File.ReadAllBytes(png);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);

        var (config, model) = Pretraining.Load(dir);
        var rows = RunFigures.Draw(model, config, "translations", 3).Rows;
        Assert.Equal(["content", "style 1", "output", "style 2", "output", "style 3", "output", "style 4", "output"], rows.Select(r => r.Label));
        Assert.All(rows, r => Assert.Equal([3L, 3, 32, 32], r.Images.shape));
        Assert.All(rows, r => Assert.InRange(r.Images.min().item<float>(), 0, 1));
        Assert.All(rows, r => Assert.InRange(r.Images.max().item<float>(), 0, 1));
        var outputs = rows.Where(r => r.Label == "output").Select(r => r.Images).ToList();
        Assert.False(outputs[0].allclose(outputs[1], atol: 1e-4), "two style images gave the same output");
        Assert.Contains("--what: tsit draws translations", Assert.Throws<ResearchKitException>(() => RunFigures.Draw(model, config, "samples")).Message);
        model.Module.Dispose();
    }
}
