using static TorchSharp.torch;

namespace ResearchKit.Layers;

/// <summary>Fixed sin-cos positional embeddings (Transformer §3.5; 2-D form as in MAE's reference code).</summary>
public static class PositionalEmbedding
{
    /// <summary>
    /// 1-D: for position p and i in [0, D/2): value[i] = sin(p·ω_i), value[D/2 + i] = cos(p·ω_i),
    /// with ω_i = 1 / 10000^(i / (D/2)). Returns [positions.Length, D].
    /// </summary>
    public static double[,] SinCos1D(int dim, IReadOnlyList<double> positions)
    {
        if (dim % 2 != 0) throw new ArgumentException($"sin-cos embedding dimension must be even; got {dim}", nameof(dim));
        int half = dim / 2;
        var result = new double[positions.Count, dim];
        for (int p = 0; p < positions.Count; p++)
            for (int i = 0; i < half; i++)
            {
                double angle = positions[p] / Math.Pow(10000, (double)i / half);
                result[p, i] = Math.Sin(angle);
                result[p, half + i] = Math.Cos(angle);
            }
        return result;
    }

    /// <summary>
    /// 2-D: token (row r, column c) of a gridSize×gridSize raster gets [SinCos1D(D/2, c), SinCos1D(D/2, r)]
    /// (column first, as MAE's reference orders its meshgrid). With <paramref name="clsToken"/> a zero row
    /// is prepended. Returns [1, (1 +) gridSize², D], float32.
    /// </summary>
    public static Tensor SinCos2D(int dim, int gridSize, bool clsToken)
    {
        if (dim % 4 != 0) throw new ArgumentException($"2-D sin-cos embedding dimension must be divisible by 4; got {dim}", nameof(dim));
        int length = gridSize * gridSize, offset = clsToken ? 1 : 0, half = dim / 2;
        var columns = new double[length];
        var rows = new double[length];
        for (int t = 0; t < length; t++) { rows[t] = t / gridSize; columns[t] = t % gridSize; }
        var byColumn = SinCos1D(half, columns);
        var byRow = SinCos1D(half, rows);
        var values = new float[(length + offset) * dim];
        for (int t = 0; t < length; t++)
            for (int i = 0; i < half; i++)
            {
                values[(t + offset) * dim + i] = (float)byColumn[t, i];
                values[(t + offset) * dim + half + i] = (float)byRow[t, i];
            }
        return tensor(values, new long[] { 1, length + offset, dim }, device: CPU);   // a module buffer: built on the host, moved with the module
    }
}
