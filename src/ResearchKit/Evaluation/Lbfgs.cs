using static TorchSharp.torch;

namespace ResearchKit.Evaluation;

/// <summary>
/// Limited-memory BFGS for smooth convex problems on one flat parameter vector (Nocedal &amp; Wright,
/// Algorithm 7.4, with Armijo backtracking). Written here because TorchSharp's LBFGS prints a native
/// deprecation warning on every step that .NET cannot silence, and has no line search option.
/// </summary>
public static class Lbfgs
{
    /// <summary>Minimises f from <paramref name="start"/>; f returns (value, gradient) for a point. Returns the minimiser.</summary>
    public static Tensor Minimize(Func<Tensor, (double Value, Tensor Gradient)> f, Tensor start, int maxIterations = 500,
        int history = 20, double gradientTolerance = 1e-5, double valueTolerance = 1e-10)
    {
        var x = start.detach().clone();
        var (value, gradient) = f(x);
        var steps = new LinkedList<(Tensor S, Tensor Y, double Rho)>();
        for (int iteration = 0; iteration < maxIterations; iteration++)
        {
            if (gradient.abs().max().item<float>() < gradientTolerance) break;
            // Two-loop recursion: direction = −H·g with H built from the last pairs.
            var q = gradient.clone();
            var alphas = new Stack<double>();
            foreach (var (s, y, rho) in steps.Reverse())
            {
                double a = rho * s.dot(q).item<float>();
                alphas.Push(a);
                q.sub_(y * a);
            }
            double gamma = steps.Count == 0 ? 1.0 / Math.Max(1e-12, gradient.norm().item<float>())
                : steps.Last!.Value.S.dot(steps.Last.Value.Y).item<float>() / steps.Last.Value.Y.dot(steps.Last.Value.Y).item<float>();
            var direction = q.mul_(gamma);
            foreach (var (s, y, rho) in steps)
            {
                double b = rho * y.dot(direction).item<float>();
                direction.add_(s * (alphas.Pop() - b));
            }
            direction.neg_();
            double slope = gradient.dot(direction).item<float>();
            if (slope >= 0) { direction = gradient.neg(); slope = -gradient.dot(gradient).item<float>(); steps.Clear(); }

            // Backtracking until the Armijo condition f(x + t·d) ≤ f(x) + 1e-4·t·slope holds.
            double t = 1, nextValue;
            Tensor next, nextGradient;
            while (true)
            {
                next = x + direction * t;
                (nextValue, nextGradient) = f(next);
                if (nextValue <= value + 1e-4 * t * slope || t < 1e-10) break;
                t *= 0.5;
            }
            var sNew = next - x;
            var yNew = nextGradient - gradient;
            double sy = sNew.dot(yNew).item<float>();
            if (sy > 1e-10)
            {
                steps.AddLast((sNew, yNew, 1 / sy));
                if (steps.Count > history) steps.RemoveFirst();
            }
            bool converged = Math.Abs(value - nextValue) <= valueTolerance * Math.Max(1, Math.Abs(value));
            (x, value, gradient) = (next, nextValue, nextGradient);
            if (converged) break;
        }
        return x;
    }
}
