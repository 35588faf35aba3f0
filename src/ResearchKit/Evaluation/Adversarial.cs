using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Evaluation;

/// <summary>The norm ball of an attack: L∞ (every pixel moves at most ε) or L2 (the whole perturbation's length at most ε).</summary>
public enum AttackNorm { Linf, L2 }

/// <summary>
/// A PGD threat model and attack: the ball (norm, ε in [0, 1] pixels), the number of steps, the step size (null: the
/// robustness library's rule, 2.5·ε / steps) and the restarts (an image counts as robust only when every restart fails).
/// Written as `linf:8/255,steps:7` or `l2:0.5,steps:10,step:0.125,restarts:2` (<see cref="Parse"/>, <see cref="ToString"/>).
/// </summary>
public sealed record ThreatModel(AttackNorm Norm, double Epsilon, int Steps,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    double? StepSize = null,
    int Restarts = 1)
{
    public void Validate(string owner)
    {
        if (!Enum.IsDefined(Norm)) throw new ResearchKitException($"{owner}: the attack's norm must be linf or l2; got {Norm}");
        if (!(Epsilon > 0) || !double.IsFinite(Epsilon)) throw new ResearchKitException($"{owner}: ε must be positive and finite (pixels in [0, 1]); got {Epsilon}");
        if (Norm == AttackNorm.Linf && Epsilon > 1) throw new ResearchKitException($"{owner}: an L∞ ε above 1 allows any image (pixels are in [0, 1]); got {Epsilon}");
        if (Steps is < 1 or > 1000) throw new ResearchKitException($"{owner}: the attack's steps must be 1–1000; got {Steps}");
        if (StepSize is { } a && !(a > 0 && double.IsFinite(a))) throw new ResearchKitException($"{owner}: the attack's step size must be positive; got {a}");
        if (Restarts is < 1 or > 100) throw new ResearchKitException($"{owner}: the attack's restarts must be 1–100; got {Restarts}");
    }

    /// <summary>The same ball attacked harder, for evaluation (more steps and restarts than training's, as Madry et al. evaluate).</summary>
    public ThreatModel Stronger() => this with { Steps = Math.Max(20, 2 * Steps), StepSize = null, Restarts = Math.Max(2, Restarts) };

    public override string ToString() => string.Join(",", new[]
    {
        $"{Methods.EnumNames.Of(Norm)}:{Number(Epsilon)}", $"steps:{Steps}",
        StepSize is { } a ? $"step:{Number(a)}" : null, Restarts != 1 ? $"restarts:{Restarts}" : null,
    }.Where(p => p is not null));

    static string Number(double v) => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Reads `NORM:EPS[,steps:K][,step:A][,restarts:R]`; ε may be a fraction (8/255). Steps default to 7 (Madry et al.'s
    /// CIFAR-10 training attack). A malformed text is refused in one line naming <paramref name="option"/>.</summary>
    public static ThreatModel Parse(string text, string option)
    {
        string expected = $"{option}: expected NORM:EPS[,steps:K][,step:A][,restarts:R] with NORM linf or l2 and EPS in pixels in [0, 1] (e.g. linf:8/255,steps:7)";
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var head = parts[0].Split(':', 2, StringSplitOptions.TrimEntries);
        if (head.Length != 2) throw new ResearchKitException($"{expected}; got '{text}'");
        var norm = Methods.EnumNames.Parse<AttackNorm>(option, head[0]);
        var threat = new ThreatModel(norm, Value(head[1]), 7);
        foreach (var part in parts.Skip(1))
        {
            var kv = part.Split(':', 2, StringSplitOptions.TrimEntries);
            if (kv.Length != 2) throw new ResearchKitException($"{expected}; got '{text}'");
            threat = kv[0] switch
            {
                "steps" => threat with { Steps = Whole(kv[1]) },
                "step" => threat with { StepSize = Value(kv[1]) },
                "restarts" => threat with { Restarts = Whole(kv[1]) },
                _ => throw new ResearchKitException($"{option}: unknown setting '{kv[0]}' (steps, step, restarts); got '{text}'"),
            };
        }
        threat.Validate(option);
        return threat;

        double Value(string v)
        {
            var fraction = v.Split('/');
            var numbers = fraction.Select(f => double.TryParse(f, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var x) ? x : double.NaN).ToArray();
            double value = numbers.Length switch { 1 => numbers[0], 2 => numbers[0] / numbers[1], _ => double.NaN };
            return double.IsFinite(value) ? value : throw new ResearchKitException($"{expected}; got '{text}'");
        }
        int Whole(string v) => int.TryParse(v, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var k) ? k
            : throw new ResearchKitException($"{expected}; got '{text}'");
    }
}

/// <summary>
/// Projected gradient descent (Madry et al., 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks", §2.1):
/// from a random start in the ε-ball, <c>steps</c> ascent steps on the cross-entropy, each projected back onto the ball and
/// onto valid pixels [0, 1]. Works in pixel space, so ε means the same for every normalisation: the caller gives the
/// classifier of pixels. Shared by JEM's robustness evaluation and adversarially robust training.
/// </summary>
public static class Pgd
{
    /// <summary>Adversarial pixels [N, C, H, W] for <paramref name="pixels"/> and their labels; ε = 0 returns the input.</summary>
    /// <param name="logits">Pixels in [0, 1] → class logits.</param>
    /// <param name="stepSize">Per step; null: 2.5·ε / steps (Madry et al.'s choice).</param>
    public static Tensor Attack(Func<Tensor, Tensor> logits, Tensor pixels, Tensor labels, AttackNorm norm, double epsilon, int steps,
        Generator draws, double? stepSize = null)
    {
        if (!(epsilon >= 0) || !double.IsFinite(epsilon)) throw new ResearchKitException($"PGD: ε must be ≥ 0 and finite; got {epsilon}");
        if (steps < 1) throw new ResearchKitException($"PGD: steps must be at least 1; got {steps}");
        if (epsilon == 0) return pixels;
        double alpha = stepSize ?? 2.5 * epsilon / steps;
        var x = (pixels + Project(Start(pixels, norm, epsilon, draws), norm, epsilon)).clamp(0, 1).detach();
        for (int k = 0; k < steps; k++)
        {
            using var scope = NewDisposeScope();
            var input = x.requires_grad_(true);
            var gradient = autograd.grad([functional.cross_entropy(logits(input), labels, reduction: Reduction.Sum)], [input])[0];
            var ascent = norm == AttackNorm.Linf ? gradient.sign() : gradient / PerImageNorm(gradient).clamp_min(1e-12);
            var delta = Project(input.detach() + alpha * ascent - pixels, norm, epsilon);
            x = (pixels + delta).clamp(0, 1).detach().MoveToOuterDisposeScope();
        }
        return x;
    }

    /// <summary>The share of <paramref name="pixels"/> whose attacked version is still classified correctly.</summary>
    public static double RobustAccuracy(Func<Tensor, Tensor> logits, Tensor pixels, Tensor labels, AttackNorm norm, double epsilon, int steps, Generator draws) =>
        RobustAccuracy(logits, pixels, labels, new ThreatModel(norm, epsilon, steps), draws);

    /// <summary>The share of <paramref name="pixels"/> still classified correctly under every one of the threat model's restarts
    /// (each from its own random start): the worst case over restarts, per image.</summary>
    public static double RobustAccuracy(Func<Tensor, Tensor> logits, Tensor pixels, Tensor labels, ThreatModel threat, Generator draws)
    {
        Tensor? robust = null;
        for (int r = 0; r < threat.Restarts; r++)
        {
            var adversarial = Attack(logits, pixels, labels, threat.Norm, threat.Epsilon, threat.Steps, draws, threat.StepSize);
            using var _ = no_grad();
            var correct = logits(adversarial).argmax(1).eq(labels);
            robust = robust is null ? correct : robust.logical_and(correct);
        }
        return robust!.to_type(ScalarType.Float64).mean().item<double>();
    }

    /// <summary>The budgets the robustness evaluations report, in [0, 1] pixels: L∞ 0.02, 0.05, 0.1 (about 5, 13 and 26 grey
    /// levels of 255) and L2 0.5, 1, 2 (for 28×28 images, a per-pixel RMS of 0.018, 0.036 and 0.071).</summary>
    public static readonly (AttackNorm Norm, double Epsilon)[] Budgets =
        [(AttackNorm.Linf, 0.02), (AttackNorm.Linf, 0.05), (AttackNorm.Linf, 0.1), (AttackNorm.L2, 0.5), (AttackNorm.L2, 1), (AttackNorm.L2, 2)];

    /// <summary>The scalar name of the robust accuracy at one budget: robust_accuracy_linf_0.05.</summary>
    public static string RobustAccuracyName(AttackNorm norm, double epsilon) =>
        $"robust_accuracy_{Methods.EnumNames.Of(norm)}_{epsilon.ToString(System.Globalization.CultureInfo.InvariantCulture)}";

    /// <summary>
    /// Robust accuracy of a classifier of normalised images (<paramref name="logits"/>) at every <see cref="Budgets"/> entry with
    /// <paramref name="steps"/> steps and <paramref name="restarts"/> restarts, on an evaluation's test images, by
    /// <see cref="RobustAccuracyName"/>.
    /// </summary>
    public static Dictionary<string, double> RobustAccuracies(Func<Tensor, Tensor> logits, Methods.EvaluationRequest request, int steps, int restarts) =>
        Budgets.ToDictionary(b => RobustAccuracyName(b.Norm, b.Epsilon),
            b => RobustAccuracy(logits, request, new ThreatModel(b.Norm, b.Epsilon, steps, Restarts: restarts)));

    /// <summary>Robust accuracy of a classifier of normalised images (<paramref name="logits"/>) on an evaluation's test images,
    /// attacked in pixel space in batches. Evaluations run under no_grad; the attack needs gradients, so they are enabled here.</summary>
    public static double RobustAccuracy(Func<Tensor, Tensor> logits, Methods.EvaluationRequest request, ThreatModel threat)
    {
        Tensor OfPixels(Tensor pixels) => logits(request.Normalization.Standardize(pixels));
        using var grad = enable_grad();
        return Methods.EvaluationRequest.BatchedMean(request.Normalization.Invert(request.Images), request.Labels,
            (x, y) => RobustAccuracy(OfPixels, x, y, threat, request.Generator));
    }

    static Tensor Start(Tensor pixels, AttackNorm norm, double epsilon, Generator draws) => norm == AttackNorm.Linf
        ? (Draws.Uniform(draws, [.. pixels.shape], pixels.device) * 2 - 1) * epsilon
        : Draws.Normal(draws, [.. pixels.shape], pixels.device) * (epsilon / Math.Sqrt(pixels[0].numel()));

    /// <summary>δ projected onto the ε-ball: clipped per pixel (L∞) or scaled down to length ε (L2).</summary>
    public static Tensor Project(Tensor delta, AttackNorm norm, double epsilon) => norm == AttackNorm.Linf
        ? delta.clamp(-epsilon, epsilon)
        : delta * (epsilon / PerImageNorm(delta).clamp_min(epsilon));

    static Tensor PerImageNorm(Tensor t) => t.flatten(1).square().sum(1).sqrt().reshape(t.shape[0], 1, 1, 1);
}
