using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Tokenizers;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>iGPT: the colour palette (k-means), the AR and BERT objectives, the key/value-cache sampler, fine-tuning's auxiliary loss.</summary>
public class ImageGptTests
{
    static ImageGptConfig Small(ImageGptObjective objective = ImageGptObjective.Ar) =>
        ImageGptConfig.Tiny() with { Resolution = 6, Dim = 32, Depth = 2, Heads = 2, Colors = 8, Objective = objective };

    static ImageGpt Build(ImageGptConfig config, int seed = 0)
    {
        Compute.Seed(seed);
        var model = new ImageGpt(config);
        model.eval();
        return model;
    }

    // ---- palette ----------------------------------------------------------------------------------------------

    [Fact]
    public void Palette_colours_round_trip_exactly_and_tokens_follow_raster_order()
    {
        var palette = new ColorPalette(tensor(new float[] { 0.1f, 0.2f, 0.3f, 0.9f, 0.5f, 0.5f, 0f, 1f, 0.25f }).reshape(3, 3));
        manual_seed(0);
        var tokens = randint(0, 3, [4, 25]);
        var images = palette.Decode(tokens);
        Assert.Equal(new long[] { 4, 3, 5, 5 }, images.shape);
        Assert.True(palette.Encode(images).Same(tokens));
        Assert.True(palette.Decode(palette.Encode(images)).Same(images));   // bit for bit
        Assert.Equal(double.PositiveInfinity, palette.QuantisationPsnr(images));
        // Raster order: token r·W + c is pixel (r, c).
        Assert.Equal(palette.Colors[tokens[1, 2 * 5 + 3]].data<float>().ToArray(), images[1, .., 2, 3].data<float>().ToArray());
    }

    [Fact]
    public void Kmeans_inertia_matches_a_brute_force_assignment_and_counts_equal_repeated_points()
    {
        manual_seed(3);
        var points = cat([randn(200, 2) * 0.3, randn(150, 2) * 0.5 + 4, randn(100, 2) * 0.2 - 3], 0).to_type(ScalarType.Float64);
        var fit = KMeans.Fit(points, 3, seed: 1);
        var p = points.data<double>().ToArray();
        var c = fit.Centers.data<double>().ToArray();
        double brute = 0;
        for (int i = 0; i < p.Length / 2; i++)
            brute += Enumerable.Range(0, 3).Min(j => Math.Pow(p[2 * i] - c[2 * j], 2) + Math.Pow(p[2 * i + 1] - c[2 * j + 1], 2));
        Assert.Equal(brute, fit.Inertia, 1e-9 * brute);
        // Each centre is the mean of its points (Lloyd's fixed point), and the three blobs are found.
        var (labels, _) = KMeans.Assign(points, fit.Centers);
        for (int j = 0; j < 3; j++)
            Assert.True(points[labels.eq(j)].mean([0L]).allclose(fit.Centers[j], rtol: 0, atol: 1e-9));
        Assert.Equal(new[] { 100, 150, 200 }, Enumerable.Range(0, 3).Select(j => (int)labels.eq(j).sum().item<long>()).Order());

        // Distinct points with counts give the same fit as the repeated points (what the palette relies on).
        var distinct = tensor(new double[] { 0, 1, 2, 10, 11, 30 }).unsqueeze(1);
        var counts = tensor(new double[] { 5, 3, 1, 4, 4, 2 });
        var repeated = distinct.repeat_interleave(counts.to_type(ScalarType.Int64), 0);
        var weighted = KMeans.Fit(distinct, 3, seed: 0, weights: counts);
        var plain = KMeans.Fit(repeated, 3, seed: 0);
        Assert.Equal(plain.Inertia, weighted.Inertia, 1e-9);
        Assert.True(plain.Centers.sort(0).Values.allclose(weighted.Centers.sort(0).Values), $"{string.Join(", ", plain.Centers.data<double>())} vs {string.Join(", ", weighted.Centers.data<double>())}");
        // Worked by hand: {0×5, 1×3, 2} → 5/9; {10×4, 11×4} → 10.5; {30×2} → 30;
        // inertia 5·(5/9)² + 3·(4/9)² + (13/9)² + 8·(1/2)² = 342/81 + 2 = 56/9.
        Assert.True(weighted.Centers.sort(0).Values.flatten().allclose(tensor(new double[] { 5.0 / 9, 10.5, 30 }), rtol: 0, atol: 1e-12));
        Assert.Equal(56.0 / 9, weighted.Inertia, 1e-9);
    }

    [Fact]
    public void Palette_fit_refuses_more_colours_than_distinct_pixels_and_other_channel_counts()
    {
        var levels = tensor(new byte[] { 0, 60, 120, 180, 255 });
        var images = levels.index_select(0, randint(0, 5, [40 * 16], generator: new Generator(0))).reshape(40, 1, 4, 4);
        var error = Assert.Throws<ResearchKitException>(() => ColorPalette.FitTo(images, 8, 4));
        Assert.Equal("palette: k = 8 (--k) is more than the 5 distinct colours in the 640 sampled pixels; choose a smaller --k or sample more images (--images)", error.Message);
        // iGPT fits its palette with --colors on images it chooses itself (issue 22, item 14: it named --k).
        using var levelsData = new ImageDataset("levels", "train", images, zeros(40, dtype: ScalarType.Int64), ["one"], "test");
        error = Assert.Throws<ResearchKitException>(() => (ImageGptConfig.Tiny() with { Colors = 8, Resolution = 4 }).ForInput(4, 1).ForData(levelsData, Normalization.Of(levelsData)));
        Assert.Equal("palette: k = 8 (--colors) is more than the 5 distinct colours in the 640 sampled pixels; choose a smaller --colors", error.Message);
        var palette = ColorPalette.FitTo(images, 5, 4);
        Assert.True(palette.Colors.flatten().allclose(levels.to_type(ScalarType.Float32) / 255, atol: 1e-6));   // every level is a colour
        Assert.Equal(0, palette.Fit!.Inertia, 1e-9);

        var rgb = new ColorPalette(rand(4, 3));
        var wrong = Assert.Throws<ResearchKitException>(() => rgb.Encode(rand(2, 1, 4, 4)));
        Assert.Equal("palette: fitted to 3-channel colours, but the images have 1 channels; fit a palette on this data set (`researchkit palette fit`)", wrong.Message);
        var path = Path.Combine(TestData.TempDir(), "rgb.json");
        rgb.Save(path);
        var config = Small() with { Palette = path };
        using var data = TestData.FashionMnist(64, 1);
        var refused = Assert.Throws<ResearchKitException>(() => config.ForData(data.Train, Normalization.Of(data.Train)));
        Assert.Equal("palette: fitted to 3-channel colours, but the fashion-mnist images have 1 channels; fit a palette on this data set (`researchkit palette fit`)", refused.Message);
        var loaded = ColorPalette.Load(path);
        Assert.True(loaded.Colors.Same(rgb.Colors));
    }

    // ---- the transformer ---------------------------------------------------------------------------------------

    [Fact]
    public void Ar_logits_never_see_the_pixel_they_predict_or_any_later_one()
    {
        var model = Build(Small());
        var tokens = randint(0, 8, [2, 36], generator: new Generator(1));
        var before = model.Logits(tokens);
        const int changed = 17;
        var edited = tokens.clone();
        edited[.., changed] = (edited[.., changed] + 3) % 8;
        var after = model.Logits(edited);
        // Logit i predicts pixel i from pixels < i: positions ≤ 17 are unchanged, 18 on may change (and do).
        Assert.True(before[.., ..(changed + 1)].Same(after[.., ..(changed + 1)]));
        Assert.False(before[.., changed + 1].allclose(after[.., changed + 1]));
    }

    [Fact]
    public void The_key_value_cache_gives_the_logits_of_a_full_forward_pass()
    {
        var model = Build(Small());
        var tokens = randint(0, 8, [3, 36], generator: new Generator(2));
        var whole = model.Logits(tokens);
        // [SOS] + pixels fed as 1 + 9 positions, then one position at a time, as the sampler does.
        var input = cat([full(3, 1, model.SosToken, dtype: ScalarType.Int64), tokens[.., ..35]], 1);
        var caches = model.NewCaches();
        using var _ = no_grad();
        var pieces = new List<Tensor> { model.Step(caches, input[.., ..10]) };
        for (int i = 10; i < 36; i++) pieces.Add(model.Step(caches, input[.., i..(i + 1)]));
        var cached = cat(pieces, 1);
        Assert.Equal(whole.shape, cached.shape);
        Assert.True(whole.allclose(cached, rtol: 0, atol: 1e-5), $"max difference {(whole - cached).abs().max().item<float>()}");
        foreach (var cache in caches) cache.Dispose();
    }

    [Fact]
    public void Bert_loss_counts_masked_pixels_only()
    {
        var model = Build(Small(ImageGptObjective.Bert));
        var images = randn(4, 1, 28, 28, generator: new Generator(3));
        var output = model.Forward(images, new Generator(4));
        Assert.Equal(Enumerable.Repeat(6f, 4), output.Mask!.sum(1).data<float>().ToArray());   // ⌈0.15 · 36⌉ per image
        var logProbabilities = output.Logits.log_softmax(-1).gather(2, output.Tokens.unsqueeze(2)).squeeze(2);
        var masked = output.Mask.to_type(ScalarType.Bool);
        Assert.Equal(-logProbabilities[masked].mean().item<float>(), output.Loss.item<float>(), 1e-5);
        // A masked pixel's true colour reaches only the loss: recolouring it leaves every logit as it was.
        var position = (int)output.Mask[0].argmax().item<long>();
        var recoloured = output.Tokens.clone();
        recoloured[0, position] = (recoloured[0, position] + 1) % 8;
        var again = model.ForwardTokens(recoloured, output.Mask);
        Assert.True(again.Logits.Same(output.Logits));
        Assert.NotEqual(output.Loss.item<float>(), again.Loss.item<float>());
    }

    [Fact]
    public void A_uniform_model_costs_log2_k_bits_per_pixel()
    {
        foreach (var objective in new[] { ImageGptObjective.Ar, ImageGptObjective.Bert })
        {
            var model = Build(Small(objective) with { Colors = 16 });
            using (no_grad())
                foreach (var (name, p) in model.named_parameters().Where(p => p.name == "head.weight")) p.zero_();
            var output = model.Forward(randn(3, 1, 28, 28, generator: new Generator(5)), new Generator(6));
            Assert.Equal(4.0, output.BitsPerPixel, 1e-5);
        }
    }

    [Fact]
    public void Sampling_respects_the_prefix_temperature_and_top_k_and_refuses_a_bert_model()
    {
        var model = Build(Small());
        var prefix = randint(0, 8, [2, 18], generator: new Generator(7));
        var sampled = model.Sample(2, new Generator(8), new SamplingOptions(0.8, TopK: 3), prefix);
        Assert.Equal(new long[] { 2, 36 }, sampled.shape);
        Assert.True(sampled[.., ..18].Same(prefix));
        Assert.True(sampled.min().item<long>() >= 0 && sampled.max().item<long>() < 8);
        Assert.True(sampled.Same(model.Sample(2, new Generator(8), new SamplingOptions(0.8, TopK: 3), prefix)));   // seeded
        // Top-1 sampling is greedy decoding: every pixel is the argmax of the logits given the pixels before it.
        var greedy = model.Sample(2, new Generator(9), new SamplingOptions(TopK: 1), prefix);
        Assert.True(model.Logits(greedy).argmax(-1)[.., 18..].Same(greedy[.., 18..]));
        Assert.Equal("igpt: the temperature (--temperature) must be positive; got 0",
            Assert.Throws<ResearchKitException>(() => model.Sample(1, new Generator(0), new SamplingOptions(0))).Message);
        var bert = Build(Small(ImageGptObjective.Bert));
        Assert.Equal("igpt: sampling needs an autoregressive model (--objective ar); this one was trained with the bert objective",
            Assert.Throws<ResearchKitException>(() => bert.Sample(1, new Generator(0))).Message);
    }

    [Fact]
    public void The_generative_objective_adds_exactly_lambda_times_the_generative_loss_to_cross_entropy()
    {
        // iGPT §3.5: L = L_CLF + λ·L_GEN, the objective igpt provides (and fine-tunes with by default). Fine-tunings from the
        // same weights, head and batches with λ = 0 and λ = 0.5: at the first step (nothing updated yet) their losses differ by
        // 0.5 · L_GEN of that batch, computed here from another copy; λ = 0 is the generic cross-entropy on the same features.
        using var data = TestData.Random(64, seed: 4);
        var normalization = Normalization.Of(data);
        var splits = new DatasetSplits(data, data);
        var config = new FineTuneConfig(Epochs: 1, BatchSize: 32, Seed: 3);
        FineTuneResult Tune(string objective, string? lambda = null) => FineTuning.Run(Build(Small()), splits, normalization, config,
            loss: ImageGpt.Method.Objective(objective, lambda is null ? null : new Dictionary<string, string> { ["--lambda"] = lambda }));
        var plain = Tune("generative", "0");
        var weighted = Tune("generative", "0.5");
        var crossEntropy = Tune("cross-entropy");
        var loader = new DataLoader(data, 32, normalization, shuffle: true, seed: 3);
        var firstBatch = loader.Load(loader.Epoch(0).First()).Images;
        var generative = Build(Small()).FeaturesAndGenerativeLoss(firstBatch).GenerativeLoss.item<float>();
        Assert.Equal(0.5 * generative, weighted.Training.Losses[0] - plain.Training.Losses[0], 4);
        Assert.NotEqual(plain.Training.Losses[1], weighted.Training.Losses[1]);   // and the updates differ from there on
        Assert.Equal(crossEntropy.Training.Losses[0], plain.Training.Losses[0], 5);
        Assert.Equal("generative", ImageGpt.Method.DefaultObjective);             // the paper's recipe, λ = 1 unless given

        // Objectives and their options are the method's: other names, options and values are one-line errors.
        Assert.Equal("--lambda: the generative loss's weight must be ≥ 0; got -1",
            Assert.Throws<ResearchKitException>(() => ImageGpt.Method.Objective("generative", new Dictionary<string, string> { ["--lambda"] = "-1" })).Message);
        Assert.Equal("igpt's generative objective has no option --beta; its options: --lambda",
            Assert.Throws<ResearchKitException>(() => ImageGpt.Method.Objective("generative", new Dictionary<string, string> { ["--beta"] = "1" })).Message);
        Assert.Equal("--objective: rotnet fine-tunes with cross-entropy; got 'generative'",
            Assert.Throws<ResearchKitException>(() => RotNet.Method.Objective("generative")).Message);
    }

    [Fact]
    public void Features_are_pooled_per_layer_and_fine_tuning_gets_the_generative_loss_from_the_same_pass()
    {
        var model = Build(Small());
        var images = randn(5, 1, 28, 28, generator: new Generator(10));
        var layers = model.LayerFeatures(images);
        Assert.Equal(2, layers.Length);
        Assert.All(layers, l => Assert.Equal(new long[] { 5, 32 }, l.shape));
        // Layer-normed before pooling: every position has zero mean over the width, so the pooled vector has too.
        Assert.All(layers, l => Assert.True(l.mean([1L]).abs().max().item<float>() < 1e-5));
        var (features, generative) = model.FeaturesAndGenerativeLoss(images);
        Assert.True(features.allclose(model.Features(images)));
        Assert.Equal(model.Forward(images, null).Loss.item<float>(), generative.item<float>(), 1e-6);
    }

    [Fact]
    public void Fine_tuning_experiments_leave_unset_settings_out_of_their_cache_key()
    {
        var source = new Experiment(Small(), new PretrainOptions(), new EvaluationOptions());
        var plain = new FineTuneExperiment(source, int.MaxValue, 1, 100, 100);
        var json = System.Text.Json.Nodes.JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(plain, ResearchKit.Methods.MethodRegistry.Json))!.AsObject();
        // Results cached before the objective and the learning rate were settings keep their keys.
        Assert.Equal(["source", "blocks", "epochs", "trainLimit", "testLimit", "seed"], json.Select(p => p.Key));
        Assert.NotEqual(ResearchKit.Reporting.Sweep.Key(plain), ResearchKit.Reporting.Sweep.Key(plain with { Objective = "cross-entropy" }));
        Assert.NotEqual(ResearchKit.Reporting.Sweep.Key(plain with { Objective = "generative" }),
            ResearchKit.Reporting.Sweep.Key(plain with { Objective = "generative", ObjectiveOptions = new() { ["--lambda"] = "0.5" } }));
        Assert.NotEqual(ResearchKit.Reporting.Sweep.Key(plain), ResearchKit.Reporting.Sweep.Key(plain with { BaseLearningRate = 1e-2 }));
    }

    // ---- end to end on real data ---------------------------------------------------------------------------------

    [Fact]
    public void A_tiny_run_on_fashion_mnist_learns_pixels_in_both_objectives_and_probes_every_layer()
    {
        using var data = TestData.FashionMnist(1024, 256);
        foreach (var objective in new[] { ImageGptObjective.Ar, ImageGptObjective.Bert })
        {
            var config = ImageGptConfig.Tiny() with { Dim = 48, Depth = 3, Heads = 2, Objective = objective };
            var run = Pretraining.Run(config, new PretrainOptions(Epochs: 2, BatchSize: 64, Seed: 0), data.Train, TestData.TempDir());
            var losses = run.Result.Losses;
            Assert.True(losses.TakeLast(5).Average() < 0.8 * losses.Take(3).Average(), $"{objective}: loss {losses[0]:F3} → {losses[^1]:F3}");
            var model = (ImageGpt)run.Model;
            Assert.Equal(16, model.Palette.K);
            // Fashion-MNIST's palette: black background first (sorted by brightness), 16 grey levels that quantise well.
            Assert.True(model.Palette.Colors[0, 0].item<float>() < 0.02f);
            Assert.True(model.Palette.QuantisationPsnr(ColorPalette.Downsample(Normalization.ToUnit(data.Test.Images, CPU), 14)) > 30);
            using var _ = no_grad();
            var bits = TestData.Measure(run.Config.Method, model, run.Config.Normalization,
                run.Config.Normalization.Apply(data.Test.Images, Compute.Device), new Generator(0))["bits_per_pixel"];
            Assert.InRange(bits, 0.5, 3.5);   // uniform: 4 bits
            var trained = ProbeByLayer(model, data, run.Config.Normalization);
            Assert.Equal(3, trained.Length);
            // Measured (seed 0): AR 0.598 0.570 0.586 against 0.555 0.535 0.551 untrained; BERT 0.410 0.406 0.406 against
            // 0.398 0.398 0.387 — BERT's probes are the weaker, as in the paper (Fig. 3). Both are far above chance (0.1).
            var untrained = ProbeByLayer(Pretraining.Build(run.Config.Method, 0, Pretraining.Context(run.Config)).Backbone, data, run.Config.Normalization);
            Assert.All(trained, a => Assert.True(a > 0.3, $"{objective}: {string.Join(" ", trained)}"));
            Assert.True(trained.Max() > untrained.Max(), $"{objective}: trained {string.Join(" ", trained)}, untrained {string.Join(" ", untrained)}");
            if (objective == ImageGptObjective.Ar) Assert.True(trained.Max() > untrained.Max() + 0.02);
        }
    }

    static double[] ProbeByLayer(Backbone backbone, DatasetSplits data, Normalization normalization)
    {
        using var train = LayerFeatures.Extract(backbone, data.Train, normalization);
        using var test = LayerFeatures.Extract(backbone, data.Test, normalization);
        return LinearProbe.PerLayer(train, test, 10).Select(p => p.Accuracy).ToArray();
    }
}
