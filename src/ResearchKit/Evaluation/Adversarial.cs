using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Evaluation;

/// <summary>The norm ball of an attack: L∞ (every pixel moves at most ε) or L2 (the whole perturbation's length at most ε).</summary>
public enum AttackNorm { Linf, L2 }

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
    public static double RobustAccuracy(Func<Tensor, Tensor> logits, Tensor pixels, Tensor labels, AttackNorm norm, double epsilon, int steps, Generator draws)
    {
        var adversarial = Attack(logits, pixels, labels, norm, epsilon, steps, draws);
        using var _ = no_grad();
        return logits(adversarial).argmax(1).eq(labels).to_type(ScalarType.Float64).mean().item<double>();
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
