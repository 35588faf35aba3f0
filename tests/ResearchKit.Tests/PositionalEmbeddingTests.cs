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
    public void SinCos_rejects_odd_dimensions()
    {
        Assert.Throws<ArgumentException>(() => PositionalEmbedding.SinCos2D(6, 2, false));
    }
}
