using ResearchKit.Evaluation;
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
}
