using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Evaluation;

/// <summary>
/// Probe settings. <see cref="L2"/> multiplies ‖W‖² added to the mean cross-entropy; the default, 1/(2N),
/// is scikit-learn's LogisticRegression(C = 1), so probe numbers compare with sklearn references.
/// </summary>
public sealed record ProbeConfig(int MaxIterations = 500, double? L2 = null, int Seed = 0);

/// <summary>One layer's probe result.</summary>
public sealed record ProbeResult(int Layer, double Accuracy, double? KnnAccuracy);

/// <summary>
/// Linear probe on frozen features, MAE's recipe (Appendix A.2): BatchNorm without affine, then a linear
/// head. On cached features the BatchNorm is exactly a standardisation with the training set's mean and
/// variance (its eval-mode statistics with the full set), so we apply that directly and fit the head —
/// a convex multinomial logistic regression — to convergence with full-batch L-BFGS instead of SGD.
/// </summary>
public static class LinearProbe
{
    /// <summary>Trains on (trainX [N, D], trainY [N]) and returns top-1 accuracy on (testX, testY), in 0..1.</summary>
    public static double Fit(Tensor trainX, Tensor trainY, Tensor testX, Tensor testY, int classes, ProbeConfig? config = null, Device? device = null)
    {
        using var scope = NewDisposeScope();
        Shapes.RequireFeatures(trainX, trainY, nameof(trainX), nameof(trainY));
        Shapes.RequireFeatures(testX, testY, nameof(testX), nameof(testY));
        Shapes.RequireSameWidth(trainX, testX, nameof(trainX), nameof(testX));
        var head = Train(trainX, trainY, classes, config, device, out var standardize);
        using (no_grad()) return Accuracy(head.call(standardize(testX.to(head.weight.device))), testY.to(head.weight.device));
    }

    /// <summary>Fits the standardisation and the linear head; returns the head and the standardising function.</summary>
    public static Linear Train(Tensor trainX, Tensor trainY, int classes, ProbeConfig? config, Device? device, out Func<Tensor, Tensor> standardize)
    {
        Shapes.RequireFeatures(trainX, trainY, nameof(trainX), nameof(trainY));
        config ??= new ProbeConfig();
        device ??= Compute.Device;
        var x = trainX.to(device).to_type(ScalarType.Float32);
        var y = trainY.to(device);
        var mean = x.mean(new long[] { 0 });
        var std = x.std(0, unbiased: false) + 1e-5f;        // BatchNorm's eps keeps constant features finite
        standardize = f => (f - mean) / std;
        var z = standardize(x);
        double l2 = config.L2 ?? 1.0 / (2 * x.shape[0]);
        long D = x.shape[1], K = classes;
        var oneHot = functional.one_hot(y, classes).to_type(ScalarType.Float32);     // N, K

        // Parameters as one vector [W (K·D), b (K)]; the gradient is written out (softmax − one-hot),
        // so the solver needs no autograd graph.
        (double, Tensor) Objective(Tensor w)
        {
            using var inner = NewDisposeScope();
            var W = w[..(int)(K * D)].reshape(K, D);
            var b = w[(int)(K * D)..];
            var logits = z.mm(W.T) + b;                                            // N, K
            var logProbabilities = logits.log_softmax(1);
            double value = -(logProbabilities * oneHot).sum(1).mean().item<float>() + l2 * W.square().sum().item<float>();
            var error = (logProbabilities.exp() - oneHot) / z.shape[0];                // N, K
            var gradW = error.T.mm(z) + 2 * l2 * W;
            var gradient = cat(new[] { gradW.reshape(-1), error.sum(new long[] { 0 }) }).MoveToOuterDisposeScope();
            return (value, gradient);
        }
        var solution = Lbfgs.Minimize(Objective, zeros(K * D + K, device: device), config.MaxIterations);
        var head = Linear(D, K, device: device);
        using (no_grad())
        {
            head.weight.copy_(solution[..(int)(K * D)].reshape(K, D));
            head.bias!.copy_(solution[(int)(K * D)..]);
        }
        return head;
    }

    /// <summary>Fraction of rows whose arg-max logit equals the label.</summary>
    public static double Accuracy(Tensor logits, Tensor labels) =>
        logits.argmax(1).eq(labels).to_type(ScalarType.Float64).mean().item<double>();

    /// <summary>Probes each requested layer (all when null) on cached features; kNN too when asked.</summary>
    public static List<ProbeResult> PerLayer(LayerFeatures train, LayerFeatures test, int classes, IEnumerable<int>? layers = null,
        ProbeConfig? config = null, bool knn = true, Action<ProbeResult>? onResult = null)
    {
        var results = new List<ProbeResult>();
        foreach (var layer in layers ?? Enumerable.Range(0, train.Depth))
        {
            if (layer < 0 || layer >= train.Depth) throw new ResearchKitException($"layer {layer} does not exist; the encoder has layers 0–{train.Depth - 1}");
            double accuracy = Fit(train.Layers[layer], train.Labels, test.Layers[layer], test.Labels, classes, config);
            double? knnAccuracy = knn ? Knn.Accuracy(train.Layers[layer], train.Labels, test.Layers[layer], test.Labels, classes) : null;
            var result = new ProbeResult(layer, accuracy, knnAccuracy);
            onResult?.Invoke(result);
            results.Add(result);
        }
        return results;
    }
}

/// <summary>Weighted k-nearest-neighbour classification on cosine similarity (the protocol of Wu et al., 2018, used by DINO).</summary>
public static class Knn
{
    /// <summary>Accuracy in 0..1: each test feature votes its k nearest training labels weighted by exp(sim/τ).</summary>
    public static double Accuracy(Tensor trainX, Tensor trainY, Tensor testX, Tensor testY, int classes, int k = 20, double temperature = 0.07, int chunk = 1024)
    {
        Shapes.RequireFeatures(trainX, trainY, nameof(trainX), nameof(trainY));
        Shapes.RequireFeatures(testX, testY, nameof(testX), nameof(testY));
        Shapes.RequireSameWidth(trainX, testX, nameof(trainX), nameof(testX));
        using var scope = NewDisposeScope();
        var bank = functional.normalize(trainX.to_type(ScalarType.Float32), dim: 1);   // N, D
        long correct = 0, n = testX.shape[0];
        for (long start = 0; start < n; start += chunk)
        {
            using var inner = NewDisposeScope();
            long end = Math.Min(n, start + chunk);
            var queries = functional.normalize(testX.narrow(0, start, end - start).to_type(ScalarType.Float32), dim: 1);   // Q, D
            var (similarity, neighbours) = queries.mm(bank.T).topk((int)Math.Min(k, bank.shape[0]), dim: 1);  // Q, k
            var votes = zeros(end - start, classes, device: queries.device).scatter_add_(1, trainY.to(queries.device)[neighbours], (similarity / temperature).exp());
            correct += votes.argmax(1).eq(testY.narrow(0, start, end - start)).sum().item<long>();
        }
        return (double)correct / n;
    }
}
