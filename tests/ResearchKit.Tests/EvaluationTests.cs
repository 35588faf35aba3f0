using ResearchKit.Evaluation;
using ResearchKit.Methods;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

public class EvaluationTests
{
    static (Tensor X, Tensor Y) Blobs(int n, int seed, bool randomLabels = false)
    {
        var g = new Generator((ulong)seed);
        var y = randint(0, 3, new long[] { n }, generator: g);
        var centres = tensor(new float[] { 3, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 3, 0, 0 }).reshape(3, 5);
        var x = centres[y] + randn(new long[] { n, 5 }, generator: g);
        return (x, randomLabels ? randint(0, 3, new long[] { n }, generator: g) : y);
    }

    [Fact]
    public void Probe_separates_separable_classes_and_stays_near_chance_on_random_labels()
    {
        var (x, y) = Blobs(600, 1);
        var (tx, ty) = Blobs(600, 2);
        Assert.True(LinearProbe.Fit(x, y, tx, ty, 3) > 0.95);
        var (rx, ry) = Blobs(600, 3, randomLabels: true);
        var (rtx, rty) = Blobs(600, 4, randomLabels: true);
        Assert.InRange(LinearProbe.Fit(rx, ry, rtx, rty, 3), 0.2, 0.47);
    }

    [Fact]
    public void Probe_reaches_the_optimum_of_the_regularised_logistic_loss()
    {
        // Independent check with autograd: the objective's gradient at the solution is ~0.
        var (x, y) = Blobs(400, 5);
        var head = LinearProbe.Train(x, y, 3, null, CPU, out var standardize);
        var z = standardize(x);
        var w = head.weight.detach().clone().requires_grad_(true);
        var b = head.bias!.detach().clone().requires_grad_(true);
        var loss = nn.functional.cross_entropy(z.matmul(w.T) + b, y) + 1.0 / (2 * 400) * w.square().sum();
        loss.backward();
        Assert.True(w.grad!.abs().max().item<float>() < 1e-4, $"weight gradient {w.grad!.abs().max().item<float>()}");
        Assert.True(b.grad!.abs().max().item<float>() < 1e-4);
    }

    [Fact]
    public void Probes_refuse_mismatched_features_with_both_shapes_instead_of_aborting_in_native_matmul()
    {
        // Before the checks these reached TorchSharp's matmul, whose libtorch error aborts the whole process.
        var labels = tensor(new long[] { 0, 1, 0, 1 });
        var knn = Assert.Throws<ArgumentException>(() => Knn.Accuracy(randn(4, 8), labels, randn(4, 6), labels, 2));
        Assert.Equal("trainX [4, 8] and testX [4, 6] must have the same feature width (Parameter 'testX')", knn.Message);
        var probe = Assert.Throws<ArgumentException>(() => LinearProbe.Fit(randn(4, 2, 3), labels, randn(4, 6), labels, 2));
        Assert.Equal("trainX must be [N, D] features; got [4, 2, 3] (Parameter 'trainX')", probe.Message);
        var count = Assert.Throws<ArgumentException>(() => LinearProbe.Fit(randn(4, 6), labels[..3], randn(4, 6), labels, 2));
        Assert.Equal("trainY must be [N] labels for trainX [4, 6]; got [3] (Parameter 'trainY')", count.Message);
    }

    [Fact]
    public void Knn_votes_by_cosine_similarity()
    {
        var train = tensor(new float[] { 1, 0, 0.9f, 0.1f, 0, 1, 0.1f, 0.9f }).reshape(4, 2);
        var labels = tensor(new long[] { 0, 0, 1, 1 });
        var test = tensor(new float[] { 5, 1, 1, 4, -1, 0.01f }).reshape(3, 2);   // scale does not matter for cosine
        Assert.Equal(1.0, Knn.Accuracy(train, labels, test, tensor(new long[] { 0, 1, 1 }), 2, k: 2), 6);
        Assert.Equal(2.0 / 3, Knn.Accuracy(train, labels, test, tensor(new long[] { 0, 1, 0 }), 2, k: 2), 6);
    }

    [Fact]
    public void Reconstruction_metrics_match_hand_values()
    {
        var prediction = tensor(new float[] { 0.5f, 0.5f, 0.2f, 1.0f });
        var target = tensor(new float[] { 0.4f, 0.5f, 0.2f, 0.8f });
        Assert.Equal((0.01 + 0.04) / 4, Reconstruction.Mse(prediction, target), 6);
        Assert.Equal(0.01, Reconstruction.Mse(prediction, target, tensor(new float[] { 1, 0, 0, 0 })), 6);
        Assert.Equal(20.0, Reconstruction.Psnr(0.01), 9);
        Assert.Equal(40.0, Reconstruction.Psnr(0.01 * 0.01), 9);
    }

    [Fact]
    public void Expected_calibration_error_matches_a_hand_worked_case()
    {
        // Three bins of width 1/3: (0, ⅓] holds 0.2 (wrong); (⅓, ⅔] holds 0.5 (right) and 0.6 (wrong); (⅔, 1] holds 0.9, 1.0
        // (right) and 0.7 (wrong). ECE = 1/6·|0 − 0.2| + 2/6·|0.5 − 0.55| + 3/6·|2/3 − 2.6/3| = 0.0333… + 0.0166… + 0.1 = 0.15.
        double[] confidence = [0.2, 0.5, 0.6, 0.9, 1.0, 0.7];
        bool[] correct = [false, true, false, true, true, false];
        var bins = Calibration.Reliability(confidence, correct, bins: 3);
        Assert.Equal([1, 2, 3], bins.Select(b => b.Count));
        Assert.Equal(0.55, bins[1].Confidence, 12);
        Assert.Equal(2.0 / 3, bins[2].Accuracy, 12);
        Assert.Equal(2.6 / 3, bins[2].Confidence, 12);
        Assert.Equal(0.15, Calibration.ExpectedError(bins), 12);
        // A bin edge belongs to the bin below (Guo et al.'s (m−1)/M < conf ≤ m/M); a perfectly calibrated set scores 0.
        Assert.Equal([1, 0], Calibration.Reliability([0.5], [true], bins: 2).Select(b => b.Count));
        Assert.Equal(0, Calibration.ExpectedError(Calibration.Reliability([1.0, 1.0, 0.5, 0.5], [true, true, true, false], bins: 2)), 12);
    }

    [Fact]
    public void Auroc_by_ranks_equals_counting_every_pair_with_ties_as_half()
    {
        // Hand-worked: in {0.9, 0.8, 0.4} against out {0.5, 0.4, 0.1}: 3 + 3 + (1 + ½) wins of 9 pairs.
        Assert.Equal(7.5 / 9, OodDetection.Auroc([0.9, 0.8, 0.4], [0.5, 0.4, 0.1]), 12);
        Assert.Equal(0.5, OodDetection.Auroc([0.3, 0.3], [0.3]), 12);
        // Against the definition on random scores with many ties (an independent O(n·m) count).
        var random = new Random(5);
        double[] inScores = Enumerable.Range(0, 300).Select(_ => Math.Round(random.NextDouble() + 0.3, 1)).ToArray();
        double[] outScores = Enumerable.Range(0, 200).Select(_ => Math.Round(random.NextDouble(), 1)).ToArray();
        double wins = inScores.Sum(i => outScores.Sum(o => i > o ? 1.0 : i == o ? 0.5 : 0.0));
        Assert.Equal(wins / (inScores.Length * outScores.Length), OodDetection.Auroc(inScores, outScores), 12);
    }

    [Fact]
    public void Fpr_at_95_tpr_counts_the_out_scores_above_the_threshold_that_keeps_95_percent_of_the_in_scores()
    {
        // 20 in-scores 1…20: keeping 19 of them (95%) puts the threshold at 2. Out-scores 0, 1.5, 2, 3: two are at or above it.
        double[] inScores = Enumerable.Range(1, 20).Select(i => (double)i).ToArray();
        Assert.Equal(0.5, OodDetection.FalsePositiveRateAt95(inScores, [0, 1.5, 2, 3]), 12);
        Assert.Equal(0.0, OodDetection.FalsePositiveRateAt95(inScores, [0, 1, 1.9]), 12);
    }

    [Fact]
    public void Stored_evaluations_merge_by_weights_and_name_and_read_back_by_scalar_name()
    {
        var folder = TestData.TempDir();
        EvaluationOutcome Outcome(string name, params (string, double)[] scalars) =>
            new(name, scalars.ToDictionary(s => s.Item1, s => s.Item2), new Dictionary<string, Curve>(), new Dictionary<string, (byte[], string)>());
        MethodEvaluations.Store(folder, "final", [Outcome("a", ("x", 1.5)), Outcome("b", ("y", double.PositiveInfinity))]);
        MethodEvaluations.Store(folder, "final", [Outcome("a", ("x", 2.5))]);                 // replaces a, keeps b
        MethodEvaluations.Store(folder, "epoch-1", [Outcome("a", ("x", 0.5))]);
        Assert.Equal(new Dictionary<string, double> { ["x"] = 2.5, ["y"] = double.PositiveInfinity }, MethodEvaluations.ReadScalars(folder));
        Assert.Equal(0.5, MethodEvaluations.ReadScalars(folder, "epoch-1")["x"]);
        Assert.Empty(MethodEvaluations.ReadScalars(folder, "step-3"));
        var reliability = new Curve("confidence", "accuracy", [0.55, 0.95], [0.5, 1]);
        MethodEvaluations.Store(folder, "final", [Outcome("c", ("z", 1)) with { Curves = new Dictionary<string, Curve> { ["reliability"] = reliability } }]);
        var curve = Assert.Single(MethodEvaluations.ReadCurves(folder)).Value;
        Assert.Equal((reliability.XLabel, reliability.YLabel), (curve.XLabel, curve.YLabel));
        Assert.Equal(reliability.X, curve.X);
        Assert.Equal(reliability.Y, curve.Y);
        Assert.Empty(MethodEvaluations.ReadCurves(folder, "epoch-1"));
        // Two evaluations reporting one name would make results ambiguous by name.
        Assert.Contains("'x' is also reported", Assert.Throws<InvalidOperationException>(() =>
            MethodEvaluations.Scalars([Outcome("a", ("x", 1)), Outcome("c", ("x", 2))])).Message);
        File.WriteAllText(Path.Combine(folder, MethodEvaluations.FileName), "[1,");
        Assert.StartsWith($"{Path.Combine(folder, MethodEvaluations.FileName)}: not an evaluations file",
            Assert.Throws<ResearchKitException>(() => MethodEvaluations.ReadScalars(folder)).Message);
    }
}
