using System.Text.Json;
using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Methods;
using ResearchKit.Models;
using ResearchKit.Reporting;
using ResearchKit.Runs;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>The method contract, the CNN backbone and RotNet.</summary>
public class MethodTests
{
    [Fact]
    public void RotNet_shows_each_image_at_four_rotations_with_the_right_labels()
    {
        var image = arange(9, dtype: ScalarType.Float32).reshape(1, 1, 3, 3);   // [[0,1,2],[3,4,5],[6,7,8]]
        var (rotated, labels) = RotNet.RotateAll(cat(new[] { image, image + 10 }, 0));
        Assert.Equal(new long[] { 8, 1, 3, 3 }, rotated.shape);
        Assert.Equal(new long[] { 0, 0, 1, 1, 2, 2, 3, 3 }, labels.data<long>().ToArray());
        // Worked by hand: 90° counter-clockwise puts the last column on top; 180° reverses the raster; 270° is 90° the other way.
        float[] Grid(int i) => rotated[i].flatten().data<float>().ToArray();
        Assert.Equal(new float[] { 0, 1, 2, 3, 4, 5, 6, 7, 8 }, Grid(0));
        Assert.Equal(new float[] { 2, 5, 8, 1, 4, 7, 0, 3, 6 }, Grid(2));
        Assert.Equal(new float[] { 8, 7, 6, 5, 4, 3, 2, 1, 0 }, Grid(4));
        Assert.Equal(new float[] { 6, 3, 0, 7, 4, 1, 8, 5, 2 }, Grid(6));
        Assert.Equal(new float[] { 12, 15, 18, 11, 14, 17, 10, 13, 16 }, Grid(3));   // second image, 90°
    }

    [Theory]
    [InlineData(28, 1)]
    [InlineData(32, 3)]
    public void ConvNet_gives_every_blocks_features_in_one_pass_at_a_common_width(int size, int channels)
    {
        manual_seed(0);
        var net = new ConvNet(ConvNetConfig.Tiny(size, channels));
        var x = randn(5, channels, size, size);
        var maps = net.FeatureMaps(x);
        Assert.Equal(new long[] { 5, 64, size, size }, maps[0].shape);
        Assert.Equal(new long[] { 5, 64, size / 2, size / 2 }, maps[1].shape);
        Assert.Equal(new long[] { 5, 64, size / 4, size / 4 }, maps[3].shape);
        var layers = net.LayerFeatures(x);
        Assert.Equal(4, layers.Length);
        Assert.All(layers, l => Assert.Equal(new long[] { 5, 64 * 3 * 3 }, l.shape));   // ~576 values per block
        // Pooled features are the global average of the last map.
        Assert.True(net.Features(x).allclose(maps[3].mean(new long[] { 2, 3 }), atol: 1e-6));
        // Block 1's probe features: its map averaged over a 3×3 grid of cells, checked on one cell by hand.
        int end = ((int)maps[1].shape[2] + 2) / 3;                                    // adaptive pooling's first cell: rows and columns [0, ⌈h/3⌉)
        Assert.True(layers[1].reshape(5, 64, 3, 3)[.., .., 0, 0].allclose(maps[1][.., .., ..end, ..end].mean(new long[] { 2, 3 }), atol: 1e-5));
        Assert.DoesNotContain(layers, l => l.isnan().any().item<bool>());
    }

    [Fact]
    public void ConvNet_partial_fine_tuning_freezes_weights_and_batch_norm_statistics_of_frozen_blocks()
    {
        manual_seed(0);
        var net = new ConvNet(ConvNetConfig.Tiny());
        net.FreezeAllBut(1);
        net.train();
        var named = net.named_parameters().ToList();
        Assert.All(named, p => Assert.Equal(p.name.StartsWith("blocks.3."), p.parameter.requires_grad));
        var statistics = net.named_buffers().Where(b => b.name.EndsWith("running_mean")).ToDictionary(b => b.name, b => b.buffer.clone());
        net.call(randn(8, 1, 28, 28) * 3 + 1);
        foreach (var (name, buffer) in net.named_buffers().Where(b => b.name.EndsWith("running_mean")))
            Assert.Equal(name.StartsWith("blocks.3."), !buffer.Same(statistics[name]));
        // Also when training is switched on through a model that holds the backbone (as fine-tuning does).
        var classifier = new Classifier(net, 10);
        classifier.eval();
        classifier.train();
        Assert.Equal(new[] { false, false, false, true }, Enumerable.Range(0, 4).Select(i => net.named_modules().First(m => m.name == $"blocks.{i}").module.training));
        net.FreezeAllBut(int.MaxValue);
        Assert.All(net.parameters(), p => Assert.True(p.requires_grad));
    }

    [Fact]
    public void A_run_configuration_stores_the_method_by_name_and_rebuilds_the_same_model()
    {
        var normalization = new Normalization([0.5f], [0.25f]);
        // RotNet's own recipe shape (step decay at 30, 60, 80% of training) round-trips with its milestones.
        var stepped = RotNetConfig.Tiny() with { Optimizer = RotNetConfig.Tiny().Optimizer with { Schedule = ScheduleConfig.Step(0.2, 0.3, 0.6, 0.8) } };
        foreach (var method in new MethodConfig[] { MaeConfig.Tiny() with { MaskRatio = 0.6 }, RotNetConfig.Tiny(), stepped })
        {
            var config = new RunConfig("fashion-mnist", 100, method, new TrainConfig(Optimizer: method.Optimizer), normalization, AugmentKind.None);
            var json = Pretraining.Serialize(config);
            Assert.Equal(MethodRegistry.Of(method).Name, JsonDocument.Parse(json).RootElement.GetProperty("method").GetProperty("name").GetString());
            var back = JsonSerializer.Deserialize<RunConfig>(json, MethodRegistry.Json)!;
            Assert.Equal(method, back.Method);
            // A schedule is written only when chosen, so the configurations (and sweep keys) of earlier runs are unchanged.
            Assert.Equal(method == stepped, json.Contains("\"schedule\""));
            Assert.IsType(method.Build().GetType(), back.Method.Build());
        }
        var unknown = Pretraining.Serialize(new RunConfig("x", null, RotNetConfig.Tiny(), new TrainConfig(), normalization, AugmentKind.None, Version: RunConfig.CurrentVersion)).Replace("\"rotnet\"", "\"nope\"");
        var dir = TestData.TempDir();
        File.WriteAllText(Path.Combine(dir, "config.json"), unknown);
        var e = Assert.Throws<DataFormatException>(() => Pretraining.ReadConfig(dir));
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void Method_options_parse_strictly_and_name_the_method_and_its_options()
    {
        var mae = MethodRegistry.Get("mae");
        var config = (MaeConfig)mae.Option("--mask-ratio").Apply(mae.Preset("tiny"), "0.5");
        Assert.Equal(0.5, config.MaskRatio);
        Assert.Equal(128, ((MaeConfig)mae.Option("--decoder-dim").Apply(config, "128")).DecoderDim);
        var nan = Assert.Throws<ResearchKitException>(() => mae.Option("--mask-ratio").Apply(config, "NaN"));
        Assert.Equal("--mask-ratio: expected a finite number; got 'NaN'", nan.Message);
        var range = Assert.Throws<ResearchKitException>(() => (config with { MaskRatio = 0 }).Validate());
        Assert.Contains("--mask-ratio", range.Message);
        var missing = Assert.Throws<ResearchKitException>(() => MethodRegistry.Get("rotnet").Option("--mask-ratio"));
        Assert.Equal("rotnet has no option --mask-ratio; its options: --blocks, --width", missing.Message);
        Assert.Contains("unknown method 'nope'; expected one of: mae, rotnet, beit, igpt", Assert.Throws<ResearchKitException>(() => MethodRegistry.Get("nope")).Message);
    }

    [Fact]
    public void Seed_statistics_match_hand_values_and_differences_within_the_spread_do_not_count()
    {
        var a = SeedStats.Of([0.80, 0.82, 0.84]);
        Assert.Equal(0.82, a.Mean, 12);
        Assert.Equal(0.02, a.Std, 12);                                  // sample std: sqrt((0.0004 + 0 + 0.0004) / 2)
        Assert.Equal("82.0 ± 2.0", a.Format());
        var close = SeedStats.Of([0.83, 0.84, 0.85]);                   // Δ 0.02 < spread 0.03
        var far = SeedStats.Of([0.90, 0.90, 0.91]);
        Assert.False(a.DiffersFrom(close));
        Assert.True(a.DiffersFrom(far));
        Assert.False(SeedStats.Of([0.5]).DiffersFrom(SeedStats.Of([0.9])));   // one seed: no spread to judge by
    }

    [Fact]
    public void RotNet_on_fashion_mnist_learns_to_predict_rotations()
    {
        using var data = TestData.FashionMnist(1536, 512);
        var run = Pretraining.Run(RotNetConfig.Tiny(), new PretrainOptions(Epochs: 3, BatchSize: 128), data.Train, TestData.TempDir());
        var losses = run.Result.Losses;
        Assert.Equal(36, losses.Count);                                 // measured: 1.37 → 1.07 (chance: ln 4 = 1.386)
        Assert.True(losses.TakeLast(3).Average() < 0.85 * losses.Take(3).Average(), $"loss {losses.Take(3).Average():F3} → {losses.TakeLast(3).Average():F3}");
        var images = run.Config.Normalization.Apply(data.Test.Images, CPU);
        run.Model.Module.eval();
        using var g = new Generator(0);
        double accuracy = TestData.Measure(run.Config.Method, run.Model, run.Config.Normalization, images, g)["rotation_accuracy"];
        Assert.True(accuracy > 0.5, $"rotation accuracy {accuracy:P1} on held-out images (chance 25%)");
    }

    [Fact]
    public void The_experiment_runner_measures_any_method_and_the_sweep_caches_it()
    {
        var folder = TestData.TempDir();
        var evaluation = new EvaluationOptions(ProbeTrain: 512, ProbeTest: 256, FineTuneEpochs: 2, FineTuneTrain: 512, PretextImages: 64);
        var experiments = new[]
        {
            new Experiment(RotNetConfig.Tiny(), new PretrainOptions(Epochs: 1, TrainLimit: 256, BatchSize: 128), evaluation),
            new Experiment(MaeConfig.Tiny(), new PretrainOptions(Epochs: 0, TrainLimit: 256), evaluation with { FineTuneEpochs = 0 }),
        };
        int runs = 0;
        List<SweepEntry<Experiment, ExperimentResult>> Sweep_() => Sweep.Run(folder, experiments, (e, dir) => { runs++; return Experiments.Run(e, dir); });
        var entries = Sweep_();
        Assert.Equal(2, runs);
        var rotnet = entries[0].Result;
        Assert.Equal(4, rotnet.ProbeByLayer.Length);
        Assert.All(rotnet.ProbeByLayer, a => Assert.True(a > 0.3, $"probe {a} (chance 0.1)"));
        Assert.InRange(rotnet.FineTune, 0.2, 1.0);

        // The results are those of the run folder it kept, recomputed here by another path: the best layer's probe from
        // the saved weights, and the rotation accuracy counted by hand from the model's logits (rotation k is block k).
        using var data = TestData.FashionMnist(512, 256);
        var (config, saved) = Pretraining.Load(Experiments.PretrainFolder(Path.Combine(folder, entries[0].Key)));
        var probeTrain = data.Train.Take(512);
        var probeTest = data.Test.Take(256);
        using (var train = LayerFeatures.Extract(saved.Backbone, probeTrain, config.Normalization))
        using (var test = LayerFeatures.Extract(saved.Backbone, probeTest, config.Normalization))
            Assert.Equal(rotnet.BestProbe, Math.Round(LinearProbe.PerLayer(train, test, 10, [rotnet.BestLayer]).Single().Accuracy, 4), 6);   // stored to 4 places
        var images = config.Normalization.Apply(data.Test.Images[..64], CPU);
        var predicted = ((RotNet)saved).call(images).Logits.argmax(1).data<long>().ToArray();
        double correct = Enumerable.Range(0, predicted.Length).Count(i => predicted[i] == i / 64);
        Assert.Equal(Math.Round(correct / predicted.Length, 4), rotnet.Pretext["rotation_accuracy"], 6);
        // The run folder keeps the same evaluation by name (`researchkit evaluate` writes the same file).
        Assert.Equal(rotnet.Pretext["rotation_accuracy"],
            MethodEvaluations.ReadScalars(Experiments.PretrainFolder(Path.Combine(folder, entries[0].Key)))["rotation_accuracy"]);

        // The untrained floor's PSNR worked by hand from the same model, images and mask seed: 10·log10(1 / MSE) over the
        // removed patches' pixels in [0, 1].
        var floor = entries[1].Result;
        Assert.Equal(6, floor.ProbeByLayer.Length);
        Assert.True(double.IsNaN(floor.FineTune) && double.IsNaN(floor.FinalLoss));
        var split = data.Train.Take(256);
        var normalization = Normalization.Of(split);
        var sized = Pretraining.Sized(MaeConfig.Tiny(), split, normalization);
        var untrained = (MaskedAutoencoder)Pretraining.Build(sized, 0, BuildContext.Of(sized, normalization));
        untrained.eval();
        images = normalization.Apply(data.Test.Images[..64], CPU);
        using var generator = new Generator(0);
        var (_, reconstruction, _, removed) = untrained.Reconstruct(images, generator);
        var error = (normalization.Invert(reconstruction) - normalization.Invert(images)).square().data<float>().ToArray();
        var weight = removed.expand(images.shape).contiguous().data<float>().ToArray();
        double mse = error.Zip(weight, (e, w) => (double)e * w).Sum() / weight.Sum(w => (double)w);
        Assert.Equal(Math.Round(10 * Math.Log10(1 / mse), 4), floor.Pretext["reconstruction_psnr"], 3);

        var again = Sweep_();
        Assert.Equal(2, runs);                                           // both cached
        Assert.Equal(rotnet.ProbeByLayer, again[0].Result.ProbeByLayer);
    }

    /// <summary>
    /// Cached sweep results are found by the hash of the experiment's JSON, so a refactoring that reorders or renames a
    /// config property silently reruns every cached experiment. These configurations and keys were written by the
    /// pretext-tasks notebook's full run of 2026-12-05; each must read back to the same key.
    /// </summary>
    [Theory]
    [InlineData("2578021a62d62906", """{"method":{"name":"rotnet","backbone":{"imageSize":32,"channels":3,"width":64,"depth":4,"probeFeatures":576},"optimizer":{"kind":"sgd","baseLearningRate":0.1,"weightDecay":0.0005,"beta1":0.9,"beta2":0.95,"momentum":0.9,"nesterov":true,"warmupFraction":0.02}},"pretrain":{"dataset":"shapes","epochs":0,"trainLimit":6000,"seed":1,"batchSize":128,"baseLearningRate":null,"augment":"none"},"evaluation":{"probeTrain":4000,"probeTest":4000,"fineTuneEpochs":0,"fineTuneTrain":10000,"fineTuneBlocks":2147483647,"pretextImages":256}}""")]
    [InlineData("1e0db3be47e14a4c", """{"method":{"name":"denoising","backbone":{"imageSize":32,"channels":3,"width":64,"depth":4,"probeFeatures":576},"noise":"masking","level":0.25,"optimizer":{"kind":"adam-w","baseLearningRate":0.004,"weightDecay":0,"beta1":0.9,"beta2":0.999,"momentum":0.9,"nesterov":false,"warmupFraction":0.02}},"pretrain":{"dataset":"shapes","epochs":2,"trainLimit":6000,"seed":0,"batchSize":128,"baseLearningRate":null,"augment":"none"},"evaluation":{"probeTrain":4000,"probeTest":4000,"fineTuneEpochs":0,"fineTuneTrain":10000,"fineTuneBlocks":2147483647,"pretextImages":256}}""")]
    [InlineData("0997b8f37a70bb83", """{"method":{"name":"colorization","backbone":{"imageSize":32,"channels":3,"width":64,"depth":4,"probeFeatures":576},"loss":"classification","rebalancing":0.5,"temperature":0.38,"optimizer":{"kind":"adam-w","baseLearningRate":0.004,"weightDecay":0,"beta1":0.9,"beta2":0.999,"momentum":0.9,"nesterov":false,"warmupFraction":0.02}},"pretrain":{"dataset":"shapes","epochs":2,"trainLimit":6000,"seed":0,"batchSize":128,"baseLearningRate":null,"augment":"none"},"evaluation":{"probeTrain":4000,"probeTest":4000,"fineTuneEpochs":0,"fineTuneTrain":10000,"fineTuneBlocks":2147483647,"pretextImages":256}}""")]
    [InlineData("6693b9d842409c69", """{"method":{"name":"split-brain","backbone":{"imageSize":32,"channels":3,"width":64,"depth":4,"probeFeatures":576},"temperature":0.38,"optimizer":{"kind":"adam-w","baseLearningRate":0.004,"weightDecay":0,"beta1":0.9,"beta2":0.999,"momentum":0.9,"nesterov":false,"warmupFraction":0.02}},"pretrain":{"dataset":"shapes","epochs":2,"trainLimit":6000,"seed":0,"batchSize":128,"baseLearningRate":null,"augment":"none"},"evaluation":{"probeTrain":4000,"probeTest":4000,"fineTuneEpochs":0,"fineTuneTrain":10000,"fineTuneBlocks":2147483647,"pretextImages":256}}""")]
    [InlineData("28be9e1990448b45", """{"method":{"name":"context-encoder","backbone":{"imageSize":28,"channels":1,"width":64,"depth":4,"probeFeatures":576},"region":"central","holeFraction":0.25,"adversarialWeight":0,"optimizer":{"kind":"adam-w","baseLearningRate":0.004,"weightDecay":0,"beta1":0.9,"beta2":0.999,"momentum":0.9,"nesterov":false,"warmupFraction":0.02},"discriminatorOptimizer":{"kind":"adam-w","baseLearningRate":0.0002,"weightDecay":0,"beta1":0.5,"beta2":0.999,"momentum":0.9,"nesterov":false,"warmupFraction":0,"schedule":{"kind":"constant","milestones":null,"factor":0.1},"absoluteLearningRate":true}},"pretrain":{"dataset":"fashion-mnist","epochs":2,"trainLimit":6000,"seed":0,"batchSize":128,"baseLearningRate":null,"augment":"none"},"evaluation":{"probeTrain":4000,"probeTest":4000,"fineTuneEpochs":0,"fineTuneTrain":10000,"fineTuneBlocks":2147483647,"pretextImages":256}}""")]
    [InlineData("3da950874ae7912a", """{"method":{"name":"supervised","backbone":"cnn","cnn":{"imageSize":32,"channels":3,"width":64,"depth":4,"probeFeatures":576},"vit":{"imageSize":32,"patchSize":4,"channels":3,"dim":128,"depth":6,"heads":4,"mlpRatio":4,"pooling":"mean"},"classes":10,"labelSmoothing":0,"optimizer":{"kind":"sgd","baseLearningRate":0.1,"weightDecay":0.0005,"beta1":0.9,"beta2":0.95,"momentum":0.9,"nesterov":true,"warmupFraction":0.02}},"pretrain":{"dataset":"shapes","epochs":2,"trainLimit":6000,"seed":1,"batchSize":128,"baseLearningRate":null,"augment":"none"},"evaluation":{"probeTrain":4000,"probeTest":4000,"fineTuneEpochs":0,"fineTuneTrain":10000,"fineTuneBlocks":2147483647,"pretextImages":256}}""")]
    public void Experiments_cached_by_earlier_runs_keep_their_sweep_keys(string key, string json)
    {
        var experiment = System.Text.Json.JsonSerializer.Deserialize<Experiment>(json, MethodRegistry.Json)!;
        Assert.Equal(key, ResearchKit.Reporting.Sweep.Key(experiment));
    }
}
