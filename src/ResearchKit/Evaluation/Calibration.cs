using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Evaluation;

/// <summary>One bin of a reliability diagram: how many predictions fell in it, their mean confidence and their accuracy.</summary>
public sealed record ReliabilityBin(double Lower, double Upper, int Count, double Confidence, double Accuracy);

/// <summary>
/// Calibration of a classifier's confidence (Guo et al., 2017, "On Calibration of Modern Neural Networks", §2): predictions
/// grouped into equal-width bins of confidence (the top class's probability); a calibrated model's accuracy in each bin
/// equals its mean confidence. Host arithmetic on values already read from the model.
/// </summary>
public static class Calibration
{
    /// <summary>Bins ((m−1)/M, m/M] of confidence, m = 1…M, as Guo et al. define them; empty bins are kept (Count 0, NaN means).</summary>
    public static ReliabilityBin[] Reliability(IReadOnlyList<double> confidence, IReadOnlyList<bool> correct, int bins = 15)
    {
        if (confidence.Count != correct.Count) throw new ArgumentException($"{confidence.Count} confidences for {correct.Count} outcomes");
        if (bins < 1) throw new ArgumentOutOfRangeException(nameof(bins), bins, "at least one bin");
        var count = new int[bins];
        var sumConfidence = new double[bins];
        var hits = new int[bins];
        for (int i = 0; i < confidence.Count; i++)
        {
            double c = confidence[i];
            if (!(c >= 0 && c <= 1)) throw new ArgumentException($"confidence {c} is not a probability");
            int m = Math.Clamp((int)Math.Ceiling(c * bins) - 1, 0, bins - 1);   // (m/M, (m+1)/M]; a confidence of 0 joins the first bin
            count[m]++;
            sumConfidence[m] += c;
            if (correct[i]) hits[m]++;
        }
        return Enumerable.Range(0, bins).Select(m => new ReliabilityBin((double)m / bins, (double)(m + 1) / bins, count[m],
            count[m] == 0 ? double.NaN : sumConfidence[m] / count[m], count[m] == 0 ? double.NaN : (double)hits[m] / count[m])).ToArray();
    }

    /// <summary>Expected calibration error: Σ_m |B_m|/n · |acc(B_m) − conf(B_m)| (Guo et al., eq. 3).</summary>
    public static double ExpectedError(IReadOnlyList<ReliabilityBin> bins)
    {
        long n = bins.Sum(b => (long)b.Count);
        return n == 0 ? double.NaN : bins.Where(b => b.Count > 0).Sum(b => (double)b.Count / n * Math.Abs(b.Accuracy - b.Confidence));
    }
}

/// <summary>
/// Out-of-distribution detection from a score that is higher for in-distribution inputs (e.g. the maximum softmax
/// probability, Hendrycks &amp; Gimpel, 2017): in-distribution is the positive class.
/// </summary>
public static class OodDetection
{
    /// <summary>Area under the ROC curve: P(s_in &gt; s_out) + ½ P(s_in = s_out), by ranks (Mann–Whitney U with mid-ranks for ties).</summary>
    public static double Auroc(IReadOnlyList<double> inScores, IReadOnlyList<double> outScores)
    {
        if (inScores.Count == 0 || outScores.Count == 0) throw new ArgumentException("AUROC needs in- and out-of-distribution scores");
        var all = inScores.Select(s => (Score: s, In: true)).Concat(outScores.Select(s => (Score: s, In: false))).OrderBy(p => p.Score).ToArray();
        double inRankSum = 0;
        for (int i = 0; i < all.Length;)
        {
            int j = i;
            while (j < all.Length && all[j].Score == all[i].Score) j++;
            double midRank = (i + 1 + j) / 2.0;                      // ranks i+1 … j share their mean
            for (int k = i; k < j; k++) if (all[k].In) inRankSum += midRank;
            i = j;
        }
        double nIn = inScores.Count, nOut = outScores.Count;
        return (inRankSum - nIn * (nIn + 1) / 2) / (nIn * nOut);
    }

    /// <summary>
    /// False-positive rate at 95% true-positive rate: the share of out-of-distribution inputs scored at or above the
    /// threshold that keeps (at least) 95% of the in-distribution ones.
    /// </summary>
    public static double FalsePositiveRateAt95(IReadOnlyList<double> inScores, IReadOnlyList<double> outScores)
    {
        if (inScores.Count == 0 || outScores.Count == 0) throw new ArgumentException("the FPR needs in- and out-of-distribution scores");
        var descending = inScores.OrderByDescending(s => s).ToArray();
        double threshold = descending[(int)Math.Ceiling(0.95 * descending.Length) - 1];
        return outScores.Count(s => s >= threshold) / (double)outScores.Count;
    }
}

/// <summary>What a classifier's probabilities say on labelled test images: accuracy, NLL, ECE and the reliability diagram.</summary>
public static class ClassifierMetrics
{
    /// <summary>Softmax probabilities [N, K] of a classifier's <paramref name="logits"/> on <paramref name="images"/>, in float32,
    /// computed in batches (<see cref="Methods.EvaluationRequest.Batched"/>).</summary>
    public static Tensor Probabilities(Func<Tensor, Tensor> logits, Tensor images) =>
        Methods.EvaluationRequest.Batched(images, x => functional.softmax(logits(x).to_type(ScalarType.Float32), 1));

    /// <summary>
    /// test_accuracy, test_nll and ece (15 equal-width bins, Guo et al., 2017) of <paramref name="probabilities"/> [N, K] for
    /// <paramref name="labels"/> [N], with the reliability diagram's filled bins as the curve "reliability".
    /// </summary>
    public static Methods.EvaluationReport Report(Tensor probabilities, Tensor labels)
    {
        var (confidence, predicted) = probabilities.max(1);
        double nll = -probabilities.gather(1, labels.unsqueeze(1)).clamp_min(1e-12).log().mean().to_type(ScalarType.Float64).item<double>();
        var correct = predicted.eq(labels).cpu().data<bool>().ToArray();
        var bins = Calibration.Reliability(confidence.to_type(ScalarType.Float64).cpu().data<double>().ToArray(), correct);
        var filled = bins.Where(b => b.Count > 0).ToArray();
        return new Methods.EvaluationReport(new Dictionary<string, double>
        {
            ["test_accuracy"] = correct.Count(c => c) / (double)correct.Length,
            ["test_nll"] = nll,
            ["ece"] = Calibration.ExpectedError(bins),
        })
        {
            Curves = new Dictionary<string, Methods.Curve>
            {
                ["reliability"] = new("confidence", "accuracy", filled.Select(b => b.Confidence).ToArray(), filled.Select(b => b.Accuracy).ToArray()),
            },
        };
    }
}
