using ResearchKit.Methods;
using ResearchKit.Models;
using static TorchSharp.torch;

namespace ResearchKit.Evaluation;

/// <summary>
/// Measures of generated images against real ones, in the feature space of a classifier trained in the kit on the same data.
/// No Inception weights can be downloaded here, so the Fréchet distance is named for what it is, "FD (kit classifier)",
/// and is not comparable with any published FID: only with itself, on the same classifier and image counts.
/// </summary>
public static class SampleQuality
{
    /// <summary>The k of the k-NN precision and recall (Kynkäänniemi et al., 2019, use 3).</summary>
    public const int NearestNeighbours = 3;

    /// <summary>
    /// FD (kit classifier) and k-NN precision and recall of as many samples as <paramref name="real"/> holds (normalised
    /// images), in the pooled features of <paramref name="classifier"/>.
    /// </summary>
    public static Dictionary<string, double> Measure(IImageSampler sampler, Tensor real, Backbone classifier, Generator draws)
    {
        if (real.shape[0] < 2) throw new ResearchKitException($"sample quality needs at least 2 real images; got {real.shape[0]}");
        return Measure(EvaluationRequest.Batched(real, x => sampler.Sample(x.shape[0], draws)), real, classifier);
    }

    /// <summary>The same measures of generated images <paramref name="fake"/> (translations, say) against <paramref name="real"/>.</summary>
    public static Dictionary<string, double> Measure(Tensor fake, Tensor real, Backbone classifier)
    {
        long n = real.shape[0];
        if (n < 2 || fake.shape[0] < 2) throw new ResearchKitException($"sample quality needs at least 2 real and 2 generated images; got {n} and {fake.shape[0]}");
        bool wasTraining = classifier.training;
        classifier.eval();
        try
        {
            var realFeatures = EvaluationRequest.Batched(real, classifier.Features);
            var fakeFeatures = EvaluationRequest.Batched(fake, classifier.Features);
            var (precision, recall) = PrecisionRecall(realFeatures, fakeFeatures, NearestNeighbours);
            return new Dictionary<string, double>
            {
                ["fd_kit_classifier"] = FrechetDistance(realFeatures, fakeFeatures),
                ["sample_precision"] = precision,
                ["sample_recall"] = recall,
            };
        }
        finally { classifier.train(wasTraining); }
    }

    /// <summary>
    /// The Fréchet distance between Gaussians fitted to two sets of features [N, D] and [M, D] (Heusel et al., 2017, eq. 6):
    /// |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½), covariances with N − 1 as numpy.cov. In float64 on the host. tr (Σ₁Σ₂)^½ is
    /// the sum of the square roots of the eigenvalues of Σ₁^½ Σ₂ Σ₁^½, which has those of Σ₁Σ₂ and is symmetric, so a
    /// symmetric eigensolver gives it without the complex parts scipy.linalg.sqrtm must discard.
    /// </summary>
    public static double FrechetDistance(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var (x, y) = (a.to(CPU).to_type(ScalarType.Float64), b.to(CPU).to_type(ScalarType.Float64));
        if (x.dim() != 2 || y.dim() != 2 || x.shape[1] != y.shape[1])
            throw new ResearchKitException($"Fréchet distance: expected features [N, D] and [M, D]; got [{string.Join(", ", a.shape)}] and [{string.Join(", ", b.shape)}]");
        if (x.shape[0] < 2 || y.shape[0] < 2) throw new ResearchKitException("Fréchet distance: each set needs at least 2 feature vectors");
        var (meanX, meanY) = (x.mean([0]), y.mean([0]));
        var (covX, covY) = (Covariance(x, meanX), Covariance(y, meanY));
        var (values, vectors) = linalg.eigh(covX);
        var rootX = vectors.matmul(diag(values.clamp_min(0).sqrt())).matmul(vectors.t());
        var middle = rootX.matmul(covY).matmul(rootX);
        var traceRoot = linalg.eigvalsh((middle + middle.t()) / 2).clamp_min(0).sqrt().sum();
        var distance = (meanX - meanY).square().sum() + covX.trace() + covY.trace() - 2 * traceRoot;
        return distance.item<double>();
    }

    static Tensor Covariance(Tensor x, Tensor mean)
    {
        var centred = x - mean;
        return centred.t().matmul(centred) / (x.shape[0] - 1);
    }

    /// <summary>
    /// k-NN precision and recall (Kynkäänniemi et al., 2019, §3): the share of fake features inside the k-NN ball of some
    /// real feature (precision: how many samples look real), and the share of real features inside the ball of some fake
    /// one (recall: how much of the data the samples cover). A ball's radius is the distance to its k-th nearest other
    /// point of the same set.
    /// </summary>
    public static (double Precision, double Recall) PrecisionRecall(Tensor real, Tensor fake, int k = NearestNeighbours)
    {
        using var scope = NewDisposeScope();
        if (real.shape[0] <= k || fake.shape[0] <= k)
            throw new ResearchKitException($"k-NN precision/recall: each set needs more than k = {k} points; got {real.shape[0]} and {fake.shape[0]}");
        var (r, f) = (real.to_type(ScalarType.Float32), fake.to_type(ScalarType.Float32));
        double Covered(Tensor points, Tensor by)
        {
            // The k-th smallest distance among the others: index k of the sorted row, since index 0 is the point itself.
            var radii = cdist(by, by).kthvalue(k + 1, 1).values;                                    // M
            return cdist(points, by).le(radii.unsqueeze(0)).any(1).to_type(ScalarType.Float64).mean().item<double>();
        }
        return (Covered(f, r), Covered(r, f));
    }

    /// <summary>
    /// Mean pairwise L2 distance among the first images (pixels) over the same among the reference images: near 1 for
    /// samples as varied as the data, near 0 for a collapsed generator.
    /// </summary>
    public static double DiversityRatio(Tensor samples, Tensor reference, long count = 256)
    {
        using var scope = NewDisposeScope();
        double Spread(Tensor images)
        {
            var flat = images.narrow(0, 0, Math.Min(count, images.shape[0])).flatten(1).to_type(ScalarType.Float32);
            long n = flat.shape[0];
            if (n < 2) throw new ResearchKitException($"sample diversity needs at least 2 images; got {n}");
            return cdist(flat, flat).sum().to_type(ScalarType.Float64).item<double>() / (n * (n - 1));
        }
        return Spread(samples) / Math.Max(Spread(reference), 1e-12);
    }
}
