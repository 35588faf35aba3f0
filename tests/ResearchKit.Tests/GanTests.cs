using System.Globalization;
using System.Runtime.InteropServices;
using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Methods;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>SSGAN and the GAN pieces it brings (issue 24): losses, spectral normalisation, the two phases, sample quality.</summary>
public class GanTests
{
    const string Python = "/usr/bin/python3";

    [Fact]
    public void The_GAN_losses_equal_their_formulas_worked_by_hand()
    {
        var real = tensor(new[] { 2f, -1f });
        var fake = tensor(new[] { 0.5f, -3f });
        static double Softplus(double x) => Math.Log(1 + Math.Exp(x));
        double nsD = (Softplus(-2) + Softplus(1)) / 2 + (Softplus(0.5) + Softplus(-3)) / 2;
        double nsG = (Softplus(-0.5) + Softplus(3)) / 2;
        double hingeD = (0 + 2) / 2.0 + (1.5 + 0) / 2.0, hingeG = -(0.5 - 3) / 2.0;
        Assert.Equal(nsD, GanLosses.Discriminator(GanLoss.NonSaturating, real, fake).item<float>(), 5);
        Assert.Equal(nsG, GanLosses.Generator(GanLoss.NonSaturating, fake).item<float>(), 5);
        Assert.Equal(hingeD, GanLosses.Discriminator(GanLoss.Hinge, real, fake).item<float>(), 5);
        Assert.Equal(hingeG, GanLosses.Generator(GanLoss.Hinge, fake).item<float>(), 5);
    }

    [Fact]
    public void Spectral_normalisation_brings_the_largest_singular_value_to_one_and_eval_mode_freezes_the_estimate()
    {
        Compute.Seed(0);
        var layer = SpectralLayer.Conv2d(3, 8, 3, padding: 1);
        using (no_grad()) foreach (var p in layer.parameters()) p.mul_(7);   // far from norm 1 before normalising
        var x = randn(2, 3, 6, 6);
        layer.train();
        for (int i = 0; i < 30; i++) layer.call(x);                          // power iterations, one per forward pass
        var weight = layer.EffectiveWeight().detach().flatten(1);
        double sigma = linalg.svdvals(weight)[0].item<float>();
        Assert.InRange(sigma, 0.999, 1.001);
        var before = layer.buffers().Select(b => b.clone()).ToList();
        layer.eval();
        layer.call(x);
        Assert.All(layer.buffers().Zip(before), pair => Assert.True(pair.First.Same(pair.Second), "eval mode moved u or v"));
        var plain = SpectralLayer.Linear(4, 3, normalize: false);
        Assert.Same(plain.parameters().First(), plain.EffectiveWeight());
    }

    [Fact]
    public void Frechet_distance_and_knn_precision_recall_match_scipy_and_numpy_on_the_same_features()
    {
        RequirePython();
        Compute.Seed(3);
        // Correlated features with different means and covariances, some dimensions nearly degenerate.
        var a = randn(300, 12).matmul(randn(12, 12)) + 0.5;
        var b = randn(250, 12).matmul(randn(12, 12) * 0.7) - 0.2;
        b[.., 11] = b[.., 10] * 2;                                             // a rank-deficient covariance
        double ours = SampleQuality.FrechetDistance(a, b);
        var (precision, recall) = SampleQuality.PrecisionRecall(a, b, k: 3);

        var dir = TestData.TempDir();
        Write(Path.Combine(dir, "a.f64"), a);
        Write(Path.Combine(dir, "b.f64"), b);
        const string script = """
            import sys, numpy as np, scipy.linalg
            d = sys.argv[1]
            a = np.fromfile(d + '/a.f64').reshape(300, 12); b = np.fromfile(d + '/b.f64').reshape(250, 12)
            # pytorch-fid's calculate_frechet_distance: scipy's sqrtm of the covariance product, real part
            m1, m2 = a.mean(0), b.mean(0); s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
            root = scipy.linalg.sqrtm(s1.dot(s2)).real
            fd = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root)
            def covered(points, by, k=3):
                dist_by = np.sqrt(((by[:, None, :] - by[None, :, :]) ** 2).sum(-1))
                radius = np.sort(dist_by, axis=1)[:, k]
                dist = np.sqrt(((points[:, None, :] - by[None, :, :]) ** 2).sum(-1))
                return (dist <= radius[None, :]).any(1).mean()
            print(repr(fd), repr(covered(b, a)), repr(covered(a, b)))
            """;
        var (code, stdout, stderr) = TestData.RunProcess(Python, "-c", script, dir);
        Assert.True(code == 0, stderr);
        var reference = stdout.Trim().Split(' ').Select(t => double.Parse(t, CultureInfo.InvariantCulture)).ToArray();
        Assert.True(Math.Abs(ours - reference[0]) <= 1e-3 * Math.Abs(reference[0]), $"FD ours {ours} vs scipy {reference[0]}");
        Assert.Equal(reference[1], precision, 3);
        Assert.Equal(reference[2], recall, 3);
        Assert.True(ours > 1, "different distributions are apart");
        Assert.InRange(SampleQuality.FrechetDistance(a, a), -1e-6, 1e-6);
    }

    [Fact]
    public void SSGAN_trains_both_phases_on_fashion_mnist_its_head_learns_rotation_and_a_resumed_run_equals_an_unbroken_one()
    {
        using var data = TestData.FashionMnist(1024, 256);
        var config = (SsganConfig)SsganConfig.Tiny().ForInput(28, 1) with { DiscriminatorSteps = 2 };
        var normalization = Normalization.Of(data.Train);
        var (unbroken, whole) = TestData.AssertResumeEqualsUnbroken(config, data.Train, normalization, 32);
        Assert.Equal(64, unbroken.Steps);
        Assert.Equal(64, unbroken.PhaseLosses!["discriminator"].Count);
        Assert.Equal(32, unbroken.PhaseLosses["generator"].Count);                   // n_dis = 2

        // The rotation head learns the pretext task on held-out real images (chance 0.25) within 64 steps.
        whole.Module.eval();
        Dictionary<string, double> scalars;
        using (no_grad()) scalars = TestData.Measure(config, whole, normalization, normalization.Apply(data.Test.Images, CPU), new Generator(0));
        Assert.True(scalars["rotation_accuracy"] > 0.4, $"rotation accuracy {scalars["rotation_accuracy"]}");
        Assert.InRange(scalars["d_right_on_real"], 0, 1);
        Assert.True(scalars["sample_diversity"] > 0, "samples differ from each other");

        // The plain GAN has no rotation head and trains no rotation term.
        var gan = (SelfSupervisedGan)SsganConfig.TinyGan().Build();
        Assert.DoesNotContain(gan.named_parameters(), p => p.name.StartsWith("rotation"));
        Assert.Throws<ResearchKitException>(() => gan.RotationLogits(zeros(1, gan.Backbone.FeatureDim)));
    }

    [Fact]
    public void A_run_along_steps_evaluates_the_initial_weights_every_snapshot_and_the_final_weights_by_step()
    {
        var work = TestData.TempDir();
        var experiment = new Experiment(SsganConfig.Tiny(), new PretrainOptions(Epochs: 1, TrainLimit: 320, BatchSize: 64),
            new EvaluationOptions(ProbeTrain: 256, ProbeTest: 128, FineTuneEpochs: 0, PretextImages: 64));
        var results = Experiments.RunAlongSteps(experiment, 2, work);
        Assert.Equal([0L, 2, 4, 5], results.Select(r => r.Step));                  // 5 steps: snapshots at 2 and 4, then the end
        Assert.True(double.IsNaN(results[0].TrainLoss));
        Assert.All(results.Skip(1), r => Assert.True(double.IsFinite(r.TrainLoss)));
        Assert.All(results, r => Assert.Equal(3, r.Result.ProbeByLayer.Length));
        Assert.All(results, r => Assert.InRange(r.Result.Pretext["rotation_accuracy"], 0, 1));
        Assert.Equal(0.25, results[0].Result.Pretext["rotation_accuracy"], 0.1);    // an untrained head: chance
        var stored = MethodEvaluations.ReadScalars(Experiments.PretrainFolder(work), "step-4");
        Assert.Equal(results[2].Result.Pretext["d_right_on_real"], stored["d_right_on_real"]);
        Assert.Contains("final", File.ReadAllText(Path.Combine(Experiments.PretrainFolder(work), MethodEvaluations.FileName)));
        Assert.Equal([2L, 4], StepSnapshots.Kept(Experiments.PretrainFolder(work)));
    }

    [Fact]
    public void The_discriminator_is_a_backbone_with_per_block_features_and_samples_are_normalised_as_the_data()
    {
        var config = SsganConfig.Tiny(32, 3);
        var normalization = new Normalization([0.5f, 0.4f, 0.3f], [0.2f, 0.25f, 0.3f]);
        var context = BuildContext.Of(config, normalization);
        Compute.Seed(0);
        var model = (SelfSupervisedGan)config.Build(context);
        model.eval();
        using var _ = no_grad();
        var images = randn(5, 3, 32, 32);
        var layers = model.Backbone.LayerFeatures(images);
        Assert.Equal(3, layers.Length);
        Assert.All(layers, l => Assert.Equal(5, l.shape[0]));
        Assert.Equal([5, model.Backbone.FeatureDim], model.Backbone.Features(images).shape);
        var pixels = context.ToPixels(model.Sample(6, new Generator(1)));
        Assert.Equal([6, 3, 32, 32], pixels.shape);
        Assert.True(pixels.min().item<float>() >= -1e-5 && pixels.max().item<float>() <= 1 + 1e-5, "samples are pixels in [0, 1] once un-normalised");
        Assert.Equal("ssgan: image size must be a multiple of 4, at least 8 (the generator doubles a quarter-size map twice); got 30",
            Assert.Throws<ResearchKitException>(() => (config with { Networks = config.Networks with { ImageSize = 30 } }).Validate()).Message);
    }

    [Fact]
    public void Stability_warnings_name_the_step_for_a_discriminator_that_keeps_winning_and_for_collapse()
    {
        IReadOnlyDictionary<string, double> At(double wins, double diversity) => new Dictionary<string, double>
            { ["flag_discriminator_wins"] = wins, ["flag_collapse"] = diversity < GanStability.CollapseBelow ? 1 : 0, ["sample_diversity"] = diversity };
        var warnings = GanStability.Warnings([(0, At(1, 1)), (100, At(0, 0.9)), (200, At(1, 0.8)), (300, At(1, 0.2))]);
        Assert.Equal(2, warnings.Count);
        Assert.StartsWith("step 300: the discriminator has won outright for 2 snapshots", warnings[0]);
        Assert.StartsWith("step 300: sample diversity 0.20", warnings[1]);
        Assert.Empty(GanStability.Warnings([(0, At(0, 1)), (100, At(1, 0.9))]));
    }

    static void RequirePython()
    {
        var (code, _, error) = TestData.RunProcess(Python, "-c", "import numpy, scipy.linalg");
        Assert.True(code == 0, $"{Python} cannot import numpy and scipy (sudo bash .ci/setup --tests): {error.Trim()}");
    }

    static void Write(string path, Tensor t) =>
        File.WriteAllBytes(path, MemoryMarshal.AsBytes(t.to_type(ScalarType.Float64).contiguous().data<double>().ToArray().AsSpan()).ToArray());
}
