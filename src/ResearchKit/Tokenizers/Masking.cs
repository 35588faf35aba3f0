using static TorchSharp.torch;

namespace ResearchKit.Tokenizers;

/// <summary>
/// A per-sample random split of L patches into K kept and L−K removed (MAE §3).
/// Convention for the whole codebase: in <see cref="Mask"/>, 1 = removed, 0 = kept.
/// </summary>
/// <param name="Keep">[B, K] long: indices of kept patches, in shuffled order.</param>
/// <param name="Restore">[B, L] long: inverse permutation; gathering the shuffled sequence with it restores raster order.</param>
/// <param name="Mask">[B, L] float: 1 = removed, 0 = kept, in raster order.</param>
public sealed record PatchMask(Tensor Keep, Tensor Restore, Tensor Mask);

/// <summary>One rectangle of a blockwise mask, in patch-grid coordinates.</summary>
public readonly record struct MaskBlock(int Top, int Left, int Height, int Width)
{
    public int Area => Height * Width;
}

/// <summary>Masking strategies as pure functions over patch grids.</summary>
public static class Masking
{
    /// <summary>
    /// Number of patches MAE keeps: ⌊L·(1 − ratio)⌋ as the reference computes it (int(L * (1 - mask_ratio))),
    /// with two deliberate differences: a 1e-9 tolerance, so float error in 1 − ratio does not drop a patch (the
    /// reference's int(10 * (1 - 0.9)) is 0, not 1), and at least one kept patch, so the encoder always has input.
    /// </summary>
    public static int KeptCount(int length, double maskRatio)
    {
        if (maskRatio < 0 || maskRatio >= 1) throw new ArgumentOutOfRangeException(nameof(maskRatio), maskRatio, "mask ratio must be in [0, 1)");
        return Math.Max(1, (int)(length * (1 - maskRatio) + 1e-9));
    }

    /// <summary>
    /// MAE random masking: per sample, argsort uniform noise drawn on <paramref name="device"/> (<see cref="Draws"/>); the K
    /// smallest are kept. Exactly <see cref="KeptCount"/> patches are kept in every sample.
    /// </summary>
    public static PatchMask Random(long batch, int length, double maskRatio, Generator? generator = null, Device? device = null) =>
        FromNoise(Draws.Uniform(generator, [batch, length], device ?? CPU), maskRatio);

    /// <summary>MAE's random masking from given noise [B, L]: argsort per sample, the <see cref="KeptCount"/> smallest are kept.</summary>
    public static PatchMask FromNoise(Tensor noise, double maskRatio)
    {
        int keep = KeptCount((int)noise.shape[1], maskRatio);
        var shuffle = noise.argsort(dim: 1);                                                       // small = keep
        return FromShuffle(shuffle, keep);
    }

    /// <summary>
    /// A mask given as [B, L] (1 = removed) with the same number removed per row → keep/restore indices. Reads the counts
    /// to check them (a wait on a GPU); a sampler that knows its count uses <see cref="FromMask(Tensor, int)"/>.
    /// </summary>
    public static PatchMask FromMask(Tensor mask)
    {
        var removed = mask.sum(1);
        if (removed.min().item<float>() != removed.max().item<float>())
            throw new ArgumentException("every sample must remove the same number of patches to build keep indices", nameof(mask));
        return FromMask(mask, (int)(mask.shape[1] - removed[0].item<float>()));
    }

    /// <summary>A mask [B, L] (1 = removed) that keeps exactly <paramref name="keep"/> patches per row → keep/restore indices, on the mask's device.</summary>
    public static PatchMask FromMask(Tensor mask, int keep)
    {
        // Stable sort puts kept (0) before removed (1), each group in raster order.
        var shuffle = mask.sort(dim: 1, stable: true).Indices;
        return FromShuffle(shuffle, keep);
    }

    static PatchMask FromShuffle(Tensor shuffle, int keep)
    {
        var restore = shuffle.argsort(dim: 1);                                     // B, L
        var kept = shuffle[.., ..keep];                                            // B, K
        var mask = ones(shuffle.shape, device: shuffle.device);
        mask.narrow(1, 0, keep).fill_(0);
        mask = mask.gather(1, restore);                                            // back to raster order
        return new PatchMask(kept, restore, mask);
    }

    /// <summary>
    /// MAE's grid sampling: keep one patch of every stride×stride cell (its top-left), remove the rest
    /// (stride 2 → 75%). Returns [gridHeight, gridWidth] float, 1 = removed.
    /// </summary>
    public static Tensor Grid(int gridHeight, int gridWidth, int stride = 2)
    {
        // A slice step of 0 aborts the process inside TorchSharp's native indexing rather than throwing.
        if (stride < 1) throw new ArgumentOutOfRangeException(nameof(stride), stride, "grid masking needs a stride of at least 1");
        var mask = ones(gridHeight, gridWidth, device: CPU);
        mask[TensorIndex.Slice(0, null, stride), TensorIndex.Slice(0, null, stride)].fill_(0);   // a view: fills in place
        return mask;
    }

    /// <summary>
    /// MAE's grid sampling at an exact count (MAE Table 1f): a regular pattern removing
    /// L − <see cref="KeptCount"/> patches. At 75% the kept patches form a stride-2 lattice (one of every 2×2),
    /// at 50% a checkerboard; of the pattern's phases the one whose kept count is nearest the target is used (on the
    /// 7×7 grid both ratios are met exactly), and any remainder is evened out at evenly spaced positions in raster
    /// order, so every image removes exactly the same number — as the visible-only encoder needs.
    /// Returns [gridHeight, gridWidth] float, 1 = removed.
    /// </summary>
    public static Tensor GridExact(int gridHeight, int gridWidth, double maskRatio)
    {
        bool lattice = Math.Abs(maskRatio - 0.75) < 1e-9, checkerboard = Math.Abs(maskRatio - 0.5) < 1e-9;
        if (!lattice && !checkerboard)
            throw new ArgumentOutOfRangeException(nameof(maskRatio), maskRatio, "grid masking is defined at mask ratios 0.5 (checkerboard) and 0.75 (one of every 2×2 kept)");
        int length = gridHeight * gridWidth, keep = KeptCount(length, maskRatio);
        var phases = lattice
            ? new Func<int, int, bool>[] { (i, j) => i % 2 == 0 && j % 2 == 0, (i, j) => i % 2 == 0 && j % 2 == 1, (i, j) => i % 2 == 1 && j % 2 == 0, (i, j) => i % 2 == 1 && j % 2 == 1 }
            : [(i, j) => (i + j) % 2 == 0, (i, j) => (i + j) % 2 == 1];
        var kept = phases.Select(phase => Enumerable.Range(0, length).Select(k => phase(k / gridWidth, k % gridWidth)).ToArray())
            .MinBy(p => Math.Abs(p.Count(x => x) - keep))!;
        int excess = kept.Count(x => x) - keep;
        // Even out the remainder: flip |excess| cells of the surplus kind, spread evenly over the raster order.
        var surplus = Enumerable.Range(0, length).Where(k => kept[k] == excess > 0).ToList();
        for (int n = 0; n < Math.Abs(excess); n++) kept[surplus[(int)((n + 0.5) * surplus.Count / Math.Abs(excess))]] = excess < 0;
        return tensor(kept.Select(k => k ? 0f : 1f).ToArray(), new long[] { gridHeight, gridWidth }, device: CPU);
    }

    /// <summary>
    /// Blockwise masks (<see cref="Blockwise"/>) trimmed to exactly ⌈ratio·L⌉ = L − <see cref="KeptCount"/> removed patches
    /// per image, for MAE's visible-only encoder (MAE Table 1f "block"): a draw that overshoots un-masks the surplus
    /// from its last block, so the region stays made of blocks. [B, L] float on the CPU, 1 = removed.
    /// </summary>
    public static Tensor BlockwiseExact(long batch, int gridHeight, int gridWidth, double maskRatio, System.Random random, int minBlock = 16)
    {
        int length = gridHeight * gridWidth, removed = length - KeptCount(length, maskRatio);
        var values = new float[batch * length];
        for (long b = 0; b < batch; b++)
        {
            var (mask, blocks) = Blockwise(gridHeight, gridWidth, maskRatio, random, minBlock);
            int count = 0;
            foreach (var m in mask) if (m) count++;
            for (int k = blocks.Count - 1; k >= 0 && count > removed; k--)
            {
                var block = blocks[k];
                var cells = new List<(int, int)>();
                for (int i = block.Top; i < block.Top + block.Height; i++)
                    for (int j = block.Left; j < block.Left + block.Width; j++)
                        if (mask[i, j]) cells.Add((i, j));
                var order = cells.ToArray();
                random.Shuffle(order);
                foreach (var (i, j) in order)
                {
                    if (count == removed) break;
                    mask[i, j] = false;
                    count--;
                }
            }
            for (int i = 0; i < gridHeight; i++)
                for (int j = 0; j < gridWidth; j++)
                    values[b * length + i * gridWidth + j] = mask[i, j] ? 1f : 0f;
        }
        return tensor(values, new[] { batch, (long)length }, device: CPU);
    }

    /// <summary>
    /// BEiT's blockwise masking (BEiT §2.5, Algorithm 1): add random rectangles of at least
    /// <paramref name="minBlock"/> patches with aspect ratio in [0.3, 1/0.3] until at least
    /// ⌈ratio·L⌉ patches are masked. A block's area is capped at max(remaining, 2·minBlock) — a square
    /// of area in [minBlock, 2·minBlock] always exists — so the count ends in [target, target + 2·minBlock − 1],
    /// and exactly at the target while the remainder is large. (BEiT's own code instead lets the last block
    /// shrink below minBlock; we keep every block ≥ minBlock and allow a small overshoot.)
    /// Returns the mask [gridHeight, gridWidth] (true = removed) and the blocks drawn.
    /// </summary>
    public static (bool[,] Mask, IReadOnlyList<MaskBlock> Blocks) Blockwise(
        int gridHeight, int gridWidth, double maskRatio, System.Random random, int minBlock = 16, double minAspect = 0.3)
    {
        int total = gridHeight * gridWidth;
        int target = (int)Math.Ceiling(maskRatio * total - 1e-9);
        if (minBlock > total) throw new ArgumentOutOfRangeException(nameof(minBlock), $"a block of {minBlock} patches does not fit a {gridHeight}×{gridWidth} grid");
        var mask = new bool[gridHeight, gridWidth];
        var blocks = new List<MaskBlock>();
        int masked = 0, failures = 0;
        double logMin = Math.Log(minAspect), logMax = Math.Log(1 / minAspect);
        while (masked < target)
        {
            if (++failures > 10_000) throw new InvalidOperationException("blockwise masking could not place a block; grid too small for minBlock?");
            int remaining = target - masked, cap = Math.Max(remaining, 2 * minBlock);
            double area = minBlock + random.NextDouble() * Math.Max(0, remaining - minBlock);
            double aspect = Math.Exp(logMin + random.NextDouble() * (logMax - logMin));
            int h = (int)Math.Round(Math.Sqrt(area * aspect)), w = (int)Math.Round(Math.Sqrt(area / aspect));
            if (h < 1 || w < 1 || h > gridHeight || w > gridWidth || h * w < minBlock || h * w > cap) continue;
            int top = random.Next(gridHeight - h + 1), left = random.Next(gridWidth - w + 1);
            int added = 0;
            for (int i = top; i < top + h; i++)
                for (int j = left; j < left + w; j++)
                    if (!mask[i, j]) added++;
            if (added == 0) continue;
            for (int i = top; i < top + h; i++)
                for (int j = left; j < left + w; j++)
                    mask[i, j] = true;
            masked += added;
            blocks.Add(new MaskBlock(top, left, h, w));
            failures = 0;
        }
        return (mask, blocks);
    }

    /// <summary>Blockwise masks for a batch as a [B, L] float tensor on the CPU (1 = removed).</summary>
    public static Tensor BlockwiseBatch(long batch, int gridHeight, int gridWidth, double maskRatio, System.Random random, int minBlock = 16)
    {
        var values = new float[batch * gridHeight * gridWidth];
        for (long b = 0; b < batch; b++)
        {
            var (mask, _) = Blockwise(gridHeight, gridWidth, maskRatio, random, minBlock);
            for (int i = 0; i < gridHeight; i++)
                for (int j = 0; j < gridWidth; j++)
                    values[(b * gridHeight + i) * gridWidth + j] = mask[i, j] ? 1f : 0f;
        }
        return tensor(values, new[] { batch, (long)gridHeight * gridWidth }, device: CPU);
    }

    /// <summary>
    /// Random masks with the same number of masked patches per row as <paramref name="mask"/> [B, L] (1 = removed), at
    /// uniformly random positions: the "without blockwise masking" ablation (BEiT Table 4) with the masked share held
    /// equal, so only the shape of the masked region differs.
    /// </summary>
    public static Tensor RandomLike(Tensor mask, System.Random random)
    {
        long batch = mask.shape[0], length = mask.shape[1];
        var counts = mask.sum(1).cpu().data<float>().ToArray();
        var values = new float[batch * length];
        var order = new int[length];
        for (long b = 0; b < batch; b++)
        {
            for (int i = 0; i < length; i++) order[i] = i;
            random.Shuffle(order);
            for (int i = 0; i < (int)Math.Round(counts[b]); i++) values[b * length + order[i]] = 1f;
        }
        return tensor(values, new[] { batch, length }, device: mask.device);
    }
}
