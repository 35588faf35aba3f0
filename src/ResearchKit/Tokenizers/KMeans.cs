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
/// dimension. Computed in float64 on the CPU; assignments run in chunks, so memory stays O(chunk · k + N · (2 + ln k)),
/// the second term the seeding's distances to its candidates.
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
            var w = weights is null ? ones(n, dtype: ScalarType.Float64, device: CPU) : weights.detach().to(CPU).to_type(ScalarType.Float64);
            using var generator = new Generator((ulong)seed);
            double totalWeight = w.sum().item<double>();
            var mean = (x * w.unsqueeze(1)).sum([0L]) / totalWeight;
            double meanVariance = ((x - mean).square() * w.unsqueeze(1)).sum([0L]).div(totalWeight).mean().item<double>();
            var norms = x.square().sum(1);   // ‖x‖², shared by every distance computation
            KMeansResult? best = null;
            for (int i = 0; i < inits; i++)
            {
                var fit = Lloyd(x, w, norms, PlusPlus(x, w, norms, k, generator), maxIterations, tolerance * meanVariance);
                if (best is null || fit.Inertia < best.Inertia) best = fit;
            }
            return best! with { Centers = best!.Centers.MoveToOuterDisposeScope() };
        }
        finally { outer.Dispose(); }
    }

    /// <summary>Lloyd iterations from <paramref name="centers"/> until the assignments stop changing or the centres move less than the tolerance.</summary>
    static KMeansResult Lloyd(Tensor x, Tensor w, Tensor norms, Tensor centers, int maxIterations, double shiftTolerance)
    {
        Tensor? labels = null;
        int iteration = 0;
        while (iteration < maxIterations)
        {
            iteration++;
            using var step = NewDisposeScope();   // an iteration's [chunk, k] distances are freed at once
            var (assigned, distances) = Assign(x, norms, centers);
            var updated = Update(x, w, assigned, distances, centers.shape[0]);
            double shift = (updated - centers).square().sum().item<double>();
            bool unchanged = labels is not null && assigned.eq(labels).all().item<bool>();
            labels?.Dispose();
            centers = updated.MoveToOuterDisposeScope();
            labels = assigned.MoveToOuterDisposeScope();
            if (unchanged || shift <= shiftTolerance) break;
        }
        var (_, final) = Assign(x, norms, centers);   // the last update moved the centres: the inertia is measured at them
        return new KMeansResult(centers, (final * w).sum().item<double>(), iteration);
    }

    /// <summary>
    /// Nearest centre of every point and the squared distance to it: ([N] int64, [N] in the points' type), on the points'
    /// device, in chunks. Also what <see cref="ColorPalette.Encode"/> tokenises with.
    /// </summary>
    public static (Tensor Labels, Tensor Distances) Assign(Tensor x, Tensor centers) => Assign(x, x.square().sum(1), centers);

    /// <summary><see cref="Assign(Tensor, Tensor)"/> with the points' squared norms [N] computed once by the caller.</summary>
    static (Tensor Labels, Tensor Distances) Assign(Tensor x, Tensor norms, Tensor centers)
    {
        var labels = new List<Tensor>();
        var distances = new List<Tensor>();
        var centerNorms = centers.square().sum(1).unsqueeze(0);                              // 1, k
        for (long start = 0; start < x.shape[0]; start += Chunk)
        {
            long size = Math.Min(Chunk, x.shape[0] - start);
            // ‖x‖² is the same for every centre, so the nearest centre minimises ‖c‖² − 2 x·c (one fused product) and
            // ‖x‖² is added to the minimum alone; clamped at 0 against rounding.
            var (min, argmin) = addmm(centerNorms, x.narrow(0, start, size), centers.t(), beta: 1, alpha: -2).min(1);
            labels.Add(argmin);
            distances.Add((min + norms.narrow(0, start, size)).clamp_min(0));
        }
        return (cat(labels, 0), cat(distances, 0));
    }

    /// <summary>Squared distances [n, m] from points [n, D] (squared norms [n]) to centres [m, D]: ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖², clamped at 0 against rounding.</summary>
    static Tensor SquaredDistances(Tensor x, Tensor norms, Tensor centers) =>
        addmm(centers.square().sum(1).unsqueeze(0), x, centers.t(), beta: 1, alpha: -2).add_(norms.unsqueeze(1)).clamp_min_(0);

    /// <summary>
    /// The weighted mean of each centre's points; a centre left without points moves to the point that contributes most to
    /// the inertia (largest weight · squared distance <paramref name="distances"/> to its own centre).
    /// </summary>
    static Tensor Update(Tensor x, Tensor w, Tensor labels, Tensor distances, long k)
    {
        var sums = zeros(k, x.shape[1], dtype: ScalarType.Float64, device: x.device).index_add_(0, labels, x * w.unsqueeze(1), 1);
        var mass = zeros(k, dtype: ScalarType.Float64, device: x.device).index_add_(0, labels, w, 1);
        var updated = sums / mass.clamp_min(double.Epsilon).unsqueeze(1);
        var empty = mass.eq(0).nonzero().flatten();
        if (empty.numel() > 0)
        {
            var farthest = (distances * w).argsort(descending: true).narrow(0, 0, empty.numel());
            updated.index_copy_(0, empty, x.index_select(0, farthest));
        }
        return updated;
    }

    /// <summary>
    /// Greedy k-means++ seeding: each new centre is drawn with probability ∝ weight · D², best of 2 + ⌊ln k⌋ draws. The
    /// draws are scored together, one [N, draws] distance matrix per centre rather than a pass over the points per draw.
    /// </summary>
    static Tensor PlusPlus(Tensor x, Tensor w, Tensor norms, int k, Generator generator)
    {
        int trials = 2 + (int)Math.Log(k);
        var centers = new List<Tensor> { x.index_select(0, Draws.Multinomial(generator, w, 1)) };
        var closest = Assign(x, norms, centers[0]).Distances;
        for (int c = 1; c < k; c++)
        {
            using var pick = NewDisposeScope();   // the draws' distances are freed once one is kept
            if (!((closest * w).sum().item<double>() > 0))
                throw new ResearchKitException($"k-means: the points have only {c} distinct values, fewer than k = {k}");
            var candidates = x.index_select(0, Draws.Multinomial(generator, closest * w, trials, replacement: true));
            var withCandidate = minimum(closest.unsqueeze(1), SquaredDistances(x, norms, candidates));   // N, trials
            long best = (withCandidate * w.unsqueeze(1)).sum([0L]).argmin().item<long>();           // lowest potential; the first on a tie
            centers.Add(candidates.narrow(0, best, 1).clone().MoveToOuterDisposeScope());
            closest = withCandidate.select(1, best).contiguous().MoveToOuterDisposeScope();
        }
        return cat(centers, 0);
    }
}
