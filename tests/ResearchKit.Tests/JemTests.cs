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
using static TorchSharp.torch.nn;

namespace ResearchKit.Tests;

/// <summary>JEM's core (issue 25, item 2): SGLD on log p(x) = logsumexp f(x), the replay buffer and its checkpoint.</summary>
public class JemTests
{
    static readonly JemConfig Small = JemConfig.Tiny() with { Steps = 2, BufferSize = 96 };

    [Fact]
    public void Langevin_dynamics_climb_log_p_x_and_move_only_the_images()
    {
        var model = (Jem)Pretraining.Build(Small, 0);
        using var draws = new Generator(1);
        var start = Draws.Uniform(draws, [16, 1, 28, 28], CPU);
        double Mean(Tensor x) { using var _ = no_grad(); return model.LogDensity(x).mean().item<float>(); }
        var moved = model.Langevin(start, draws, steps: 10);
        Assert.True(Mean(moved) > Mean(start), $"log p(x) {Mean(start):F3} → {Mean(moved):F3}");
        Assert.False(moved.requires_grad);
        Assert.All(model.parameters(), p => Assert.True(p.grad is null, "SGLD left a gradient on a weight"));
        // No noise and a tiny step: one step is x + α ∇ log p(x), the gradient checked against a finite difference.
        var still = (Jem)((JemConfig)Small with { Noise = 0, StepSize = 1e-3 }).Build();
        using (no_grad()) foreach (var (p, q) in still.parameters().Zip(model.parameters())) p.copy_(q);
        var x = start[..1].clone();
        var step = still.Langevin(x, draws, steps: 1) - x;                                   // α ∇ log p(x)
        var direction = step / step.norm();
        double h = 1e-2, slope;
        using (no_grad()) slope = (still.LogDensity(x + h * direction) - still.LogDensity(x - h * direction)).item<float>() / (2 * h);
        Assert.Equal(step.norm().item<float>() / 1e-3, slope, 0.05 * Math.Abs(slope) + 1e-3);  // |∇| along its own direction
    }

    [Fact]
    public void A_resumed_run_continues_with_the_same_replay_buffer_as_an_uninterrupted_one()
    {
        using var data = TestData.FashionMnist(128, 16);
        var normalization = Normalization.Of(data.Train);
        var config = (JemConfig)Small.ForData(data.Train, normalization);
        Jem Train(string? dir, int epochs)
        {
            var model = (Jem)Pretraining.Build(config, 0, BuildContext.Of(config, normalization));
            new Trainer(new TrainConfig(epochs, 32, config.Optimizer, Seed: 0, CheckpointEvery: 1000), dir)
                .Fit(new DataLoader(data.Train, 32, normalization, seed: 0), model);
            return model;
        }
        var whole = Train(null, 2);
        var dir = TestData.TempDir();
        Train(dir, 1).Module.Dispose();
        var resumed = Train(dir, 2);
        using var draws = new Generator(0);
        var (a, b) = (whole.Buffer(draws, CPU), resumed.Buffer(draws, CPU));
        Assert.Equal([96, 1, 28, 28], a.shape);
        Assert.True(a.Same(b), "the buffer after resuming differs from the uninterrupted run's");
        Assert.All(whole.state_dict().Zip(resumed.state_dict()), p => Assert.True(p.First.Value.Same(p.Second.Value), p.First.Key));
        // The buffer moved away from its uniform start: 8 steps × 32 samples wrote into it.
        var fresh = (Jem)Pretraining.Build(config, 0, BuildContext.Of(config, normalization));
        Assert.False(fresh.Buffer(new Generator(0), CPU).Same(a));
    }

    [Fact]
    public void ECE_and_AUROC_match_numpy_and_scikit_learn_on_the_same_probabilities_and_scores()
    {
        Compute.Seed(5);
        var probabilities = functional.softmax(randn(500, 10) * 2, 1);
        var labels = randint(0, 10, [500], dtype: ScalarType.Int64);
        labels = where(rand(500).lt(0.6), probabilities.argmax(1), labels);                  // mostly right, as a classifier
        var report = ClassifierMetrics.Report(probabilities, labels);
        var inScores = randn(300, dtype: ScalarType.Float64) + 1;
        var outScores = (randn(200, dtype: ScalarType.Float64) * 1.5).round(1);               // ties, as scores can have
        double auroc = OodDetection.Auroc(inScores.data<double>().ToArray(), outScores.data<double>().ToArray());

        var dir = TestData.TempDir();
        File.WriteAllBytes(Path.Combine(dir, "p.f64"), Bytes(probabilities));
        File.WriteAllBytes(Path.Combine(dir, "y.f64"), Bytes(labels));
        File.WriteAllBytes(Path.Combine(dir, "in.f64"), Bytes(inScores));
        File.WriteAllBytes(Path.Combine(dir, "out.f64"), Bytes(outScores));
        const string script = """
            import sys, numpy as np
            from sklearn.metrics import roc_auc_score
            d = sys.argv[1]
            p = np.fromfile(d + '/p.f64').reshape(500, 10); y = np.fromfile(d + '/y.f64').astype(int)
            conf, pred = p.max(1), p.argmax(1)
            edges = np.linspace(0, 1, 16); ece = 0.0
            for lo, hi in zip(edges[:-1], edges[1:]):
                b = (conf > lo) & (conf <= hi)
                if b.any(): ece += b.mean() * abs((pred[b] == y[b]).mean() - conf[b].mean())
            s_in, s_out = np.fromfile(d + '/in.f64'), np.fromfile(d + '/out.f64')
            auc = roc_auc_score(np.r_[np.ones(len(s_in)), np.zeros(len(s_out))], np.r_[s_in, s_out])
            print(repr(ece), repr((pred == y).mean()), repr(auc))
            """;
        var (code, stdout, stderr) = TestData.RunProcess("/usr/bin/python3", "-c", script, dir);
        Assert.True(code == 0, $"numpy and scikit-learn are needed (sudo bash .ci/setup --tests): {stderr}");
        var reference = stdout.Trim().Split(' ').Select(t => double.Parse(t, CultureInfo.InvariantCulture)).ToArray();
        Assert.Equal(reference[0], report.Scalars["ece"], 6);
        Assert.Equal(reference[1], report.Scalars["test_accuracy"], 9);
        Assert.Equal(reference[2], auroc, 9);
    }

    static byte[] Bytes(Tensor t) => MemoryMarshal.AsBytes(t.to_type(ScalarType.Float64).contiguous().data<double>().ToArray().AsSpan()).ToArray();

    [Theory]
    [InlineData(AttackNorm.Linf, 0.1)]
    [InlineData(AttackNorm.L2, 1.5)]
    public void PGD_stays_in_its_ball_and_in_valid_pixels_and_lowers_a_trained_classifiers_accuracy(AttackNorm norm, double epsilon)
    {
        using var data = TestData.FashionMnist(2048, 256);
        var normalization = Normalization.Of(data.Train);
        // A linear classifier on pixels, trained enough to be right most of the time.
        var weight = Parameter(zeros(10, 784));
        var bias = Parameter(zeros(10));
        Tensor Logits(Tensor pixels) => pixels.flatten(1).matmul(weight.t()) + bias;
        var trainPixels = Normalization.ToUnit(data.Train.Images, CPU);
        var optimizer = optim.Adam([weight, bias], 0.01);
        for (int i = 0; i < 100; i++)
        {
            optimizer.zero_grad();
            functional.cross_entropy(Logits(trainPixels), data.Train.Labels).backward();
            optimizer.step();
        }
        weight.requires_grad_(false); bias.requires_grad_(false);
        var pixels = Normalization.ToUnit(data.Test.Images, CPU);
        double clean = Logits(pixels).argmax(1).eq(data.Test.Labels).to_type(ScalarType.Float64).mean().item<double>();
        using var draws = new Generator(0);
        var attacked = Pgd.Attack(Logits, pixels, data.Test.Labels, norm, epsilon, 10, draws);
        var delta = (attacked - pixels).flatten(1);
        double largest = norm == AttackNorm.Linf ? delta.abs().max().item<float>() : delta.square().sum(1).sqrt().max().item<float>();
        Assert.True(largest <= epsilon + 1e-5, $"perturbation {largest} beyond ε = {epsilon}");
        Assert.True(attacked.min().item<float>() >= 0 && attacked.max().item<float>() <= 1, "attacked pixels left [0, 1]");
        double robust = Logits(attacked).argmax(1).eq(data.Test.Labels).to_type(ScalarType.Float64).mean().item<double>();
        Assert.True(clean > 0.7, $"clean accuracy {clean}");
        Assert.True(robust < clean - 0.2, $"PGD at ε = {epsilon} left accuracy {robust} of clean {clean}");
        Assert.Same(pixels, Pgd.Attack(Logits, pixels, data.Test.Labels, norm, 0, 10, draws));
    }

    [Fact]
    public void Divergence_restarts_from_the_last_checkpoint_with_half_the_learning_rate_each_time_then_stops()
    {
        using var data = TestData.FashionMnist(64, 16);
        var normalization = Normalization.Of(data.Train);
        // A bound every loss exceeds: each attempt diverges at its first read step, so both restarts are used, then training
        // stops at the last good checkpoint: here the initial weights (step 0), as the paper's code stops a diverged run.
        var config = (JemConfig)(Small with { DivergesAbove = 1e-3, MaxRestarts = 2 }).ForData(data.Train, normalization);
        var model = (Jem)Pretraining.Build(config, 0, BuildContext.Of(config, normalization));
        Assert.Equal(1e-3, model.Phases()[0].DivergesAbove);
        var dir = TestData.TempDir();
        var result = new Trainer(new TrainConfig(1, 32, config.Optimizer, LogEvery: 1), dir).Fit(new DataLoader(data.Train, 32, normalization, seed: 0), model);
        Assert.Equal(0, result.Steps);
        Assert.Equal(["learning rate × 0.5", "learning rate × 0.25", "stopped: training ends at the last good checkpoint (step 0)"],
            DivergenceLog.Read(dir).Select(d => d.Action));
        Assert.All(DivergenceLog.Read(dir), d => Assert.Equal((0L, 0L), (d.Step, d.RestartedFrom)));
        Assert.Equal(0.25, model.LearningRateFactor);
        var initial = (Jem)Pretraining.Build(config, 0, BuildContext.Of(config, normalization));
        Assert.All(initial.state_dict().Zip(model.state_dict()), p => Assert.True(p.First.Value.Same(p.Second.Value), p.First.Key));
    }

    [Fact]
    public void The_CLI_trains_resumes_and_evaluates_JEM_printing_JSON_by_evaluation()
    {
        var dir = Path.Combine(TestData.TempDir(), "jem");
        string[] Train(int epochs) => ["pretrain", "--method", "jem", "--sgld-steps", "2", "--buffer", "64", "--epochs", $"{epochs}",
            "--train-limit", "128", "--batch", "32", "--out", dir];
        var (code, output, err) = TestData.Cli(Train(1));
        Assert.True(code == 0, err);
        (code, output, err) = TestData.Cli(Train(2));
        Assert.True(code == 0, err);
        Assert.Contains("8 steps", output);
        Assert.Contains("(resumed)", output);
        Assert.False(File.Exists(Path.Combine(dir, DivergenceLog.FileName)));   // nothing diverged: no event file
        (code, output, err) = TestData.Cli("evaluate", dir, "--n", "32", "--extra", "ood=shapes", "--json");
        Assert.True(code == 0, err);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["classifier", "ood", "robustness"], lines.Select(l => l.GetProperty("evaluation").GetString()));
        var scalars = lines.SelectMany(l => l.GetProperty("scalars").EnumerateObject()).ToDictionary(p => p.Name, p => p.Value.GetDouble());
        Assert.InRange(scalars["ece"], 0, 1);
        foreach (var set in new[] { "noise", "constant", "inverted", "extra" })
            Assert.InRange(scalars[$"ood_auroc_logpx_{set}"], 0, 1);
        Assert.All(Pgd.Budgets, b => Assert.InRange(scalars[Pgd.RobustAccuracyName(b.Norm, b.Epsilon)], 0, 1));
    }

    [Fact]
    public void The_configuration_refuses_batch_norm_and_out_of_range_sampler_settings_in_one_line()
    {
        Assert.Equal("jem: the backbone must be without BatchNorm (samples and data would share batch statistics)",
            Assert.Throws<ResearchKitException>(() => (Small with { Backbone = Small.Backbone with { WithoutBatchNorm = false } }).Validate()).Message);
        Assert.Equal("jem: --sgld-steps must be 1–1000; got 0", Assert.Throws<ResearchKitException>(() => (Small with { Steps = 0 }).Validate()).Message);
        Assert.Equal("jem: --reinit must be in [0, 1]; got 1.5", Assert.Throws<ResearchKitException>(() => (Small with { Reinitialise = 1.5 }).Validate()).Message);
        Assert.Equal("jem: --restart-lr-factor must be in (0, 1]; got 2",
            Assert.Throws<ResearchKitException>(() => (Small with { RestartLearningRateFactor = 2 }).Validate()).Message);
    }
}
