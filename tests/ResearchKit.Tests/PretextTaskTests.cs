using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Models;
using ResearchKit.Runs;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>The four classic pretext tasks (issue 21, part 6) and the colour pieces two of them share.</summary>
public class PretextTaskTests
{
    // ---- Denoising autoencoder ----

    [Fact]
    public void Masking_noise_zeroes_the_asked_share_of_pixels_in_pixel_space_and_level_zero_is_a_plain_autoencoder()
    {
        var normalization = new Normalization([0.3f], [0.4f]);
        var config = (DenoisingConfig)DenoisingConfig.Tiny().ForInput(28, 1);
        var context = BuildContext.Of(config, normalization);
        Compute.Seed(0);
        var model = (DenoisingAutoencoder)config.Build(context);
        var pixels = rand(64, 1, 28, 28) * 0.9 + 0.1;                                         // no pixel is 0 before the noise
        var corrupted = context.ToPixels(model.Corrupt(context.FromPixels(pixels), new Generator(1)));
        double zeroed = corrupted.abs().lt(1e-5).to_type(ScalarType.Float64).mean().item<double>();
        Assert.InRange(zeroed, 0.23, 0.27);                                                   // ν = 0.25 of 50 176 pixels
        Assert.True(corrupted.where(corrupted.abs().gt(1e-5), pixels).allclose(pixels, atol: 1e-5), "kept pixels are unchanged");
        var plain = (DenoisingAutoencoder)(config with { Level = 0 }).Build(context);
        var images = context.FromPixels(pixels);
        Assert.Same(images, plain.Corrupt(images, new Generator(1)));
        Assert.Equal("denoising: --level must be a share in [0, 1); got 1",
            Assert.Throws<ResearchKitException>(() => (config with { Level = 1 }).Validate()).Message);
    }

    // ---- Context encoder ----

    [Theory]
    [InlineData(ContextRegion.Central)]
    [InlineData(ContextRegion.RandomBlocks)]
    [InlineData(ContextRegion.RandomRegion)]
    public void Context_regions_cover_the_asked_share_and_the_loss_is_the_squared_error_on_them(ContextRegion region)
    {
        var config = ContextEncoderConfig.Tiny() with { Region = region };
        Compute.Seed(0);
        var model = (ContextEncoder)config.Build();
        var removed = model.Region(32, 28, new Generator(3), CPU);                              // 32, 1, 28, 28
        var share = removed.mean(new long[] { 1, 2, 3 });
        if (region == ContextRegion.Central)
        {
            Assert.True(share.allclose(full(32, 0.25f)), "a central 14 × 14 square of 28 × 28");
            Assert.Equal(1f, removed[0, 0, 7, 7].item<float>());
            Assert.Equal(0f, removed[0, 0, 6, 7].item<float>());
        }
        else if (region == ContextRegion.RandomRegion) Assert.True(share.allclose(full(32, 0.25f), atol: 0.01), $"a quarter each; got {share.min().item<float>()}–{share.max().item<float>()}");
        else Assert.True(share.le(0.25).all().item<bool>() && share.gt(0.05).all().item<bool>(), "overlapping blocks cover at most a quarter");
        if (region != ContextRegion.Central) Assert.False(removed[0].Same(removed[1]), "each image has its own region");

        var images = randn(4, 1, 28, 28);
        var output = model.call(images, new Generator(5));
        Assert.True((output.Input * output.Removed).abs().max().item<float>() == 0, "the hole is filled with the mean, 0");
        var byHand = ((output.Output - images).square() * output.Removed).sum() / output.Removed.sum();
        Assert.Equal(byHand.item<float>(), output.ReconstructionLoss.item<float>(), 4);
        var context = output.Removed.eq(0).expand_as(images);
        Assert.True(output.Completion.where(context, output.Output).Same(images.where(context, output.Output)), "the completion keeps the context");
    }

    [Fact]
    public void The_adversarial_context_encoder_trains_its_discriminator_in_a_phase_of_its_own()
    {
        var config = ContextEncoderConfig.Tiny() with { AdversarialWeight = 0.001 };
        Compute.Seed(0);
        var model = (ContextEncoder)config.Build();
        var phases = model.Phases();
        Assert.Equal(["discriminator", "loss"], phases.Select(p => p.Name));
        Assert.All(phases[0].Parameters, p => Assert.StartsWith("discriminator.", p.Name));
        Assert.DoesNotContain(phases[1].Parameters, p => p.Name.StartsWith("discriminator."));
        Assert.True(phases[0].Optimizer!.AbsoluteLearningRate);
        Assert.Single(((ContextEncoder)ContextEncoderConfig.Tiny().Build()).Phases());
        // Both losses are finite on a batch, and the discriminator's starts near 2·ln 2 (it cannot tell yet).
        var batch = new Batch(randn(8, 1, 28, 28), zeros(8, ScalarType.Int64));
        double dLoss = phases[0].Loss(batch, new Generator(1)).item<float>();
        Assert.InRange(dLoss, 0.5, 3);
        Assert.True(double.IsFinite(phases[1].Loss(batch, new Generator(1)).item<float>()));
    }

    // ---- Colorization and split-brain ----

    [Fact]
    public void Colour_methods_refuse_grey_data_in_one_line()
    {
        Assert.Equal("colorization: needs colour (RGB) images; this data has 1 channel(s) (use shapes, cifar10 or an image folder)",
            Assert.Throws<ResearchKitException>(() => ColorizationConfig.Tiny().ForInput(28, 1).Validate()).Message);
        Assert.Equal("split-brain: needs colour (RGB) images; this data has 1 channel(s) (use shapes, cifar10 or an image folder)",
            Assert.Throws<ResearchKitException>(() => SplitBrainConfig.Tiny().ForInput(28, 1).Validate()).Message);
    }

    [Fact]
    public void Regression_colorization_is_the_squared_error_on_ab_at_a_quarter_of_the_side()
    {
        var config = ColorizationConfig.Tiny() with { Loss = ColorizationLoss.Regression };
        Compute.Seed(0);
        var model = (Colorization)config.Build();
        var pixels = rand(2, 3, 32, 32);
        var output = model.call(pixels);                                                      // pixel space: identity normalisation
        Assert.Equal(new long[] { 2, 2, 8, 8 }, output.Ab.shape);
        var target = nn.functional.avg_pool2d(LabColor.FromRgb(pixels)[.., 1..3], 4);
        Assert.Equal(((output.Ab - target) / 110).square().mean().item<float>(), output.Loss.item<float>(), 4);
        // The backbone sees only L: two images with the same lightness and different colours have the same features.
        var lab = LabColor.FromRgb(pixels);
        var recoloured = LabColor.ToRgb(cat([lab[.., 0..1], lab[.., 1..3] * 0.5], 1));
        model.eval();
        Assert.True(model.Backbone.Features(pixels).allclose(model.Backbone.Features(recoloured), atol: 1e-3));
    }

    [Fact]
    public void Split_brain_concatenates_two_half_networks_block_by_block()
    {
        var config = SplitBrainConfig.Tiny();
        Compute.Seed(0);
        var model = (SplitBrain)config.Build();
        var images = rand(3, 3, 32, 32);
        Assert.Equal(64, model.Backbone.FeatureDim);
        Assert.Equal(new long[] { 3, 64 }, model.Backbone.Features(images).shape);
        var halves = (SplitBrainBackbone)model.Backbone;
        var (l, ab, _) = halves.Inputs(images);
        var layers = model.Backbone.LayerFeatures(images);
        Assert.Equal(4, layers.Length);
        for (int i = 0; i < 4; i++)
            Assert.True(layers[i].Same(cat([halves.LightnessHalf.LayerFeatures(l)[i], halves.ColourHalf.LayerFeatures(ab)[i]], 1)));
        var output = model.call(images);
        Assert.Equal(output.AbLoss.item<float>() + output.LightnessLoss.item<float>(), output.Loss.item<float>(), 4);
        Assert.Equal("split-brain: width (--width) must be even (two halves); got 63",
            Assert.Throws<ResearchKitException>(() => (config with { Backbone = config.Backbone with { Width = 63 } }).Validate()).Message);
    }

    // ---- All four on real data ----

    /// <summary>Each task on the data it is compared on, with the loss of the trivial prediction: the mean (0 after
    /// normalisation: the second moment of standardised pixels, 1) for the reconstructions, the uniform distribution over
    /// the bins (ln Q; colorization's rebalancing weights average 1 under the colour prior) for the classifications.</summary>
    public static TheoryData<string, string, double> Tasks => new()
    {
        { "denoising", "fashion-mnist", 1 }, { "context-encoder", "fashion-mnist", 1 },
        { "colorization", "shapes", Math.Log(ColorBins.Ab.Count) },
        { "split-brain", "shapes", Math.Log(ColorBins.Ab.Count) + Math.Log(ColorBins.Lightness.Count) },
    };

    [Theory]
    [MemberData(nameof(Tasks))]
    public void Each_pretext_loss_falls_below_the_trivial_prediction_on_real_data_and_the_run_folder_reloads(string method, string dataset,
        double trivial)
    {
        using var data = DatasetCatalog.Load(dataset, 2048, 256);
        var config = MethodRegistry.Get(method).Preset("tiny");
        var dir = TestData.TempDir();
        var run = Pretraining.Run(config, new PretrainOptions(dataset, Epochs: 2, BatchSize: 64), data.Train, dir);
        var losses = run.Result.Losses;
        double first = losses.Take(8).Average(), last = losses.TakeLast(8).Average();
        Assert.True(last < first && last < 0.95 * trivial, $"{method}: loss {first:F3} → {last:F3}; the trivial prediction's {trivial:F3}");
        var (loaded, model) = Pretraining.Load(dir);
        Assert.Equal(Pretraining.Serialize(run.Config), Pretraining.Serialize(loaded));   // rebalancing weights included
        var images = loaded.Normalization.Apply(data.Test.Images[..32], CPU);
        var metrics = TestData.Measure(loaded.Method, model, loaded.Normalization, images, new Generator(0));
        var again = TestData.Measure(run.Config.Method, run.Model, loaded.Normalization, images, new Generator(0));
        Assert.NotEmpty(metrics);
        foreach (var (name, value) in metrics) Assert.Equal(again[name], value, 6);
    }

    public static TheoryData<string, string, string> Commands => new()
    {
        { "denoising", "fashion-mnist", "reconstructions" }, { "context-encoder", "fashion-mnist", "completions" },
        { "colorization", "shapes", "colourings" }, { "split-brain", "shapes", "colourings" },
    };

    [Theory]
    [MemberData(nameof(Commands))]
    public void Each_pretext_task_pretrains_probes_shows_and_evaluates_from_the_command_line(string method, string dataset, string figure)
    {
        var dir = Path.Combine(TestData.TempDir(), "run");
        var (code, output, err) = TestData.Cli("pretrain", "--method", method, "--dataset", dataset, "--preset", "tiny", "--epochs", "1",
            "--train-limit", "512", "--batch", "128", "--out", dir);
        Assert.True(code == 0, err);
        (code, output, err) = TestData.Cli("probe", dir, "--layer", "0", "--json", "--train-limit", "512", "--test-limit", "256");
        Assert.True(code == 0, err);
        // Both data sets have 10 classes: the probe must beat chance by three binomial standard errors on 256 test images. After
        // one epoch on 512 images it need not beat the raw-pixel floor (78% on Fashion-MNIST at this size, within the noise of
        // these features); the notebook's full run is where the floors are compared (notebooks/README.md).
        double accuracy = System.Text.Json.JsonDocument.Parse(output).RootElement.GetProperty("accuracy").GetDouble();
        Assert.True(accuracy > 0.1 + 3 * Math.Sqrt(0.1 * 0.9 / 256), output);
        var png = Path.Combine(dir, "figure.png");
        (code, output, err) = TestData.Cli("show", dir, "--what", figure, "--n", "3", "--out", png);
        Assert.True(code == 0, err);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], File.ReadAllBytes(png).Take(4));

        // The method's evaluation through the generic command equals the same evaluation run here on the reloaded model.
        (code, output, err) = TestData.Cli("evaluate", dir, "--n", "64");
        Assert.True(code == 0, err);
        var stored = MethodEvaluations.ReadScalars(dir);
        Assert.NotEmpty(stored);
        var (config, model) = Pretraining.Load(dir);
        using var data = DatasetCatalog.Load(dataset, 1, 64);
        var here = TestData.Measure(config.Method, model, config.Normalization, config.Normalization.Apply(data.Test.Images, CPU), new Generator(0));
        Assert.Equal(here.Keys.Order(), stored.Keys.Order());
        foreach (var (name, value) in here) Assert.Equal(Math.Round(value, 4), stored[name], 3);
        Assert.Contains($"{MethodRegistry.Get(method).Evaluations[0].Name}: ", output);
    }
}
