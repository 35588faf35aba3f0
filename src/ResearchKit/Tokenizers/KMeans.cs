using static TorchSharp.torch;

namespace ResearchKit.Tokenizers;

/// <summary>A k-means fit: centres [k, D] (float64, CPU), the weighted sum of squared distances to the nearest centre, and the Lloyd iterations run.</summary>
public sealed record KMeansResult(Tensor Centers, double Inertia, int Iterations);

/// <summary>
/// Weighted k-means (Lloyd's algorithm) with greedy k-means++ seeding (Arthur &amp; Vassilvitskii, 2007; the greedy
/// variant tries 2 + ⌊ln k⌋ candidates per centre and keeps the one that lowers the potential most, as scikit-learn
/// does). Weights let a caller fit distinct points with their counts (<see cref="ColorPalette"/>), which gives the same
/// centres and inertia as fitting every repeated point. Convergence follows scikit-learn's rule: stop when the
/// assignments no longer change or the centres' total squared shift falls to tolerance × the data's mean variance per
/// dimension. Computed in float64 on the CPU, in chunks, so memory stays O(chunk · k).
/// </summary>
public static class KMeans
{
    const long Chunk = 16_384;

    /// <summary>
    /// Fits k centres to points [N, D] (optionally weighted [N]); with <paramref name="inits"/> &gt; 1, that many seedings
    /// (drawn one after another from the one seed) each run to convergence, and the lowest inertia is kept, as
    /// scikit-learn's n_init does: single runs land in local optima a few percent apart.
    /// </summary>
    public static KMeansResult Fit(Tensor points, int k, int seed, Tensor? weights = null, int maxIterations = 300, double tolerance = 1e-4, int inits = 1)
    {
        if (inits < 1) throw new ResearchKitException($"k-means: the number of initialisations must be at least 1; got {inits}");
        using var _ = no_grad();
        var outer = NewDisposeScope();
        try
        {
            var x = points.detach().to(CPU).to_type(ScalarType.Float64);
            if (x.dim() != 2) throw new ResearchKitException($"k-means: points must be [N, D]; got [{string.Join(", ", x.shape)}]");
            long n = x.shape[0];
            if (k < 1 || k > n) throw new ResearchKitException($"k-means: k must be in 1 … {n} (the number of points); got {k}");
            var w = weights is null ? ones(n, dtype: ScalarType.Float64) : weights.detach().to(CPU).to_type(ScalarType.Float64);
            using var generator = new Generator((ulong)seed);
            double totalWeight = w.sum().item<double>();
            var mean = (x * w.unsqueeze(1)).sum([0L]) / totalWeight;
            double meanVariance = ((x - mean).square() * w.unsqueeze(1)).sum([0L]).div(totalWeight).mean().item<double>();
            KMeansResult? best = null;
            for (int i = 0; i < inits; i++)
            {
                var fit = Lloyd(x, w, PlusPlus(x, w, k, generator), maxIterations, tolerance * meanVariance);
                if (best is null || fit.Inertia < best.Inertia) best = fit;
            }
            return best! with { Centers = best!.Centers.MoveToOuterDisposeScope() };
        }
        finally { outer.Dispose(); }
    }

    /// <summary>Lloyd iterations from <paramref name="centers"/> until the assignments stop changing or the centres move less than the tolerance.</summary>
    static KMeansResult Lloyd(Tensor x, Tensor w, Tensor centers, int maxIterations, double shiftTolerance)
    {
        Tensor? labels = null;
        int iteration = 0;
        while (iteration < maxIterations)
        {
            iteration++;
            using var step = NewDisposeScope();   // an iteration's [chunk, k] distances are freed at once
            var (assigned, distances) = Assign(x, centers);
            var updated = Update(x, w, assigned, distances, centers.shape[0]);
            double shift = (updated - centers).square().sum().item<double>();
            bool unchanged = labels is not null && assigned.eq(labels).all().item<bool>();
            labels?.Dispose();
            centers = updated.MoveToOuterDisposeScope();
            labels = assigned.MoveToOuterDisposeScope();
            if (unchanged || shift <= shiftTolerance) break;
        }
        var (_, final) = Assign(x, centers);   // the last update moved the centres: the inertia is measured at them
        return new KMeansResult(centers, (final * w).sum().item<double>(), iteration);
    }

    /// <summary>Nearest centre of every point and the squared distance to it: ([N] int64, [N] float64).</summary>
    public static (Tensor Labels, Tensor Distances) Assign(Tensor x, Tensor centers)
    {
        var labels = new List<Tensor>();
        var distances = new List<Tensor>();
        var centerNorms = centers.square().sum(1).unsqueeze(0);                       // 1, k
        for (long start = 0; start < x.shape[0]; start += Chunk)
        {
            var part = x.narrow(0, start, Math.Min(Chunk, x.shape[0] - start));
            // ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖², clamped at 0 against rounding.
            var d = (part.square().sum(1, keepdim: true) - 2 * part.mm(centers.t()) + centerNorms).clamp_min(0);
            var (min, argmin) = d.min(1);
            labels.Add(argmin);
            distances.Add(min);
        }
        return (cat(labels, 0), cat(distances, 0));
    }

    /// <summary>
    /// The weighted mean of each centre's points; a centre left without points moves to the point that contributes most to
    /// the inertia (largest weight · squared distance <paramref name="distances"/> to its own centre).
    /// </summary>
    static Tensor Update(Tensor x, Tensor w, Tensor labels, Tensor distances, long k)
    {
        var sums = zeros(k, x.shape[1], dtype: ScalarType.Float64).index_add_(0, labels, x * w.unsqueeze(1), 1);
        var mass = zeros(k, dtype: ScalarType.Float64).index_add_(0, labels, w, 1);
        var updated = sums / mass.clamp_min(double.Epsilon).unsqueeze(1);
        var empty = mass.eq(0).nonzero().flatten();
        if (empty.numel() > 0)
        {
            var farthest = (distances * w).argsort(descending: true).narrow(0, 0, empty.numel());
            updated.index_copy_(0, empty, x.index_select(0, farthest));
        }
        return updated;
    }

    /// <summary>Greedy k-means++ seeding: each new centre is drawn with probability ∝ weight · D², best of 2 + ⌊ln k⌋ draws.</summary>
    static Tensor PlusPlus(Tensor x, Tensor w, int k, Generator generator)
    {
        int trials = 2 + (int)Math.Log(k);
        var centers = new List<Tensor> { x.index_select(0, multinomial(w, 1, generator: generator)) };
        var closest = Assign(x, centers[0]).Distances;
        for (int c = 1; c < k; c++)
        {
            using var pick = NewDisposeScope();   // the trials' distances are freed once one is kept
            if (!((closest * w).sum().item<double>() > 0))
                throw new ResearchKitException($"k-means: the points have only {c} distinct values, fewer than k = {k}");
            var candidates = x.index_select(0, multinomial(closest * w, trials, replacement: true, generator: generator));
            var (best, bestDistances, bestPotential) = (0, (Tensor?)null, double.PositiveInfinity);
            for (int t = 0; t < trials; t++)
            {
                var d = minimum(closest, Assign(x, candidates[t..(t + 1)]).Distances);
                double p = (d * w).sum().item<double>();
                if (p < bestPotential) (best, bestDistances, bestPotential) = (t, d, p);
            }
            centers.Add(candidates[best..(best + 1)].clone().MoveToOuterDisposeScope());
            closest = bestDistances!.MoveToOuterDisposeScope();
        }
        return cat(centers, 0);
    }
}
