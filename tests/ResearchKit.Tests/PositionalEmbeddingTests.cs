using ResearchKit.Layers;

namespace ResearchKit.Tests;

public class PositionalEmbeddingTests
{
    [Fact]
    public void SinCos2D_matches_the_formula_worked_by_hand()
    {
        const int dim = 8, grid = 3;
        var embedding = PositionalEmbedding.SinCos2D(dim, grid, clsToken: true);
        Assert.Equal(new long[] { 1, 1 + grid * grid, dim }, embedding.shape);
        var e = embedding[0].data<float>().ToArray();
        // [CLS] row is zero.
        Assert.All(e.Take(dim), v => Assert.Equal(0f, v));
        // Token (row 1, column 2) = raster index 5, row 6 with [CLS]. Each half has dim/2 = 4 values:
        // [sin(c·ω0), sin(c·ω1), cos(c·ω0), cos(c·ω1)] with ω_i = 10000^(−i/2), then the same for r.
        int row = 1, col = 2, t = 1 + row * grid + col;
        double w0 = 1, w1 = 1 / 100.0;   // 10000^(0/2) and 10000^(1/2) = 100
        var expected = new[] { Math.Sin(col * w0), Math.Sin(col * w1), Math.Cos(col * w0), Math.Cos(col * w1),
                               Math.Sin(row * w0), Math.Sin(row * w1), Math.Cos(row * w0), Math.Cos(row * w1) };
        for (int i = 0; i < dim; i++) Assert.Equal(expected[i], e[t * dim + i], 6);
    }

    [Fact]
    public void SinCos1D_rejects_odd_dimensions_and_accepts_even_ones()
    {
        var e = Assert.Throws<ArgumentException>(() => PositionalEmbedding.SinCos1D(7, [0.0, 1.0]));
        Assert.Equal("dim", e.ParamName);
        Assert.Contains("must be even; got 7", e.Message);
        // 6 is even but not divisible by 4: the 1-D form takes it (only the 2-D form needs D/2 even).
        var ok = PositionalEmbedding.SinCos1D(6, [0.0, 1.0]);
        Assert.Equal((2, 6), (ok.GetLength(0), ok.GetLength(1)));
        // Position 1 with D/2 = 3: ω_i = 10000^(−i/3) = 1, 10000^(−1/3), 10000^(−2/3); sines then cosines.
        double w1 = Math.Pow(10000, -1.0 / 3), w2 = Math.Pow(10000, -2.0 / 3);
        var expected = new[] { Math.Sin(1), Math.Sin(w1), Math.Sin(w2), Math.Cos(1), Math.Cos(w1), Math.Cos(w2) };
        for (int i = 0; i < 6; i++) Assert.Equal(expected[i], ok[1, i], 12);
    }

    [Theory]
    [InlineData(6)]    // even, but D/2 = 3 is odd
    [InlineData(7)]    // odd
    [InlineData(10)]
    public void SinCos2D_rejects_dimensions_not_divisible_by_4(int dim)
    {
        var e = Assert.Throws<ArgumentException>(() => PositionalEmbedding.SinCos2D(dim, 2, false));
        Assert.Equal("dim", e.ParamName);
        Assert.Contains($"must be divisible by 4; got {dim}", e.Message);
    }
}
