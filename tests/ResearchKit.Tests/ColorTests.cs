using ResearchKit.Data;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>Lab colour, ab bins and class rebalancing (Zhang et al., 2016), the pieces colorization and split-brain share.</summary>
public class ColorTests
{
    [Fact]
    public void Lab_matches_published_values_for_the_primaries_and_round_trips()
    {
        // CIE Lab (D65) of sRGB white, black, red, green and blue as colour references list them.
        var rgb = tensor(new float[] { 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1 }, [5, 3, 1, 1]);
        var lab = LabColor.FromRgb(rgb).flatten(1);
        double[][] expected = [[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [32.30, 79.19, -107.86]];
        for (int i = 0; i < 5; i++)
            for (int c = 0; c < 3; c++)
                Assert.Equal(expected[i][c], lab[i, c].item<float>(), 1);
        Compute.Seed(0);
        var images = rand(4, 3, 8, 8);
        Assert.True(LabColor.ToRgb(LabColor.FromRgb(images)).allclose(images, atol: 1e-4), "RGB → Lab → RGB is the identity");
        Assert.Equal("rgb: expected images [B, 3, H, W]; got [2, 1, 8, 8]",
            Assert.Throws<ResearchKitException>(() => LabColor.FromRgb(rand(2, 1, 8, 8))).Message);
    }

    [Fact]
    public void Ab_bins_encode_soft_encode_and_decode_consistently()
    {
        var bins = ColorBins.Ab;
        // (a, b) = (−105, 3) lies in cell (0, 11); (24, −2) in (13, 10).
        var values = tensor(new float[] { -105, 24, 3, -2 }, [1, 2, 1, 2]);
        Assert.Equal(new long[] { 0 * 22 + 11, 13 * 22 + 10 }, bins.Encode(values).flatten().data<long>().ToArray());
        var soft = bins.SoftEncode(values);                                                  // 1, 484, 1, 2
        Assert.True(soft.sum(1).allclose(ones(1, 1, 2)), "each pixel's soft target sums to 1");
        Assert.Equal(5, (int)soft[0, .., 0, 0].gt(0).sum().item<long>());
        Assert.Equal(bins.Encode(values).flatten(), soft.argmax(1).flatten());            // the nearest bin weighs most
        // A peaked distribution decodes to its bin's centre; a flat one to the grid's mean (0, 0).
        var peaked = full(1, bins.Count, 1, 1, -50f);
        peaked[0, 13 * 22 + 10, 0, 0] = tensor(50f);
        Assert.True(bins.Decode(peaked).flatten().allclose(tensor(new float[] { 25, -5 }), atol: 1e-3));
        Assert.True(bins.Decode(zeros(1, bins.Count, 1, 1), 1).flatten().allclose(zeros(2), atol: 1e-4));
    }

    [Fact]
    public void Rebalancing_weights_are_one_without_rebalancing_and_favour_rare_colours_with_unit_mean()
    {
        // Three occupied bins of a 1-D grid with counts 70, 20, 10, far apart so the smoothing does not mix them.
        var bins = new ColorBins(0, 10, 20, 1);
        var indices = cat([full(70, 2L), full(20, 9L), full(10, 16L)]);
        Assert.All(bins.RebalancingWeights(indices, lambda: 1), w => Assert.Equal(1f, w, 4));   // λ = 1: the uniform prior
        var weights = bins.RebalancingWeights(indices, lambda: 0.5, sigma: 5);
        Assert.True(weights[16] > weights[9] && weights[9] > weights[2], $"{weights[2]}, {weights[9]}, {weights[16]}");
        // Eq. 4: E_p̃[w] = 1 under the smoothed distribution; by hand, each bin's mass spreads over its neighbours equally.
        var kernel = Enumerable.Range(-2, 5).Select(d => Math.Exp(-d * d / (2 * 0.25))).ToArray();
        double total = kernel.Sum();
        var smoothed = new double[20];
        foreach (var (bin, count) in new[] { (2, 70), (9, 20), (16, 10) })
            for (int d = -2; d <= 2; d++) smoothed[bin + d] += count / 100.0 * kernel[d + 2] / total;
        Assert.Equal(1, smoothed.Select((p, i) => p * weights[i]).Sum(), 4);
        int occupied = 3;
        double scale = 1 / smoothed.Select(p => p / (0.5 * p + 0.5 / occupied)).Sum();
        Assert.Equal(scale / (0.5 * smoothed[9] + 0.5 / occupied), weights[9], 3);
    }
}
