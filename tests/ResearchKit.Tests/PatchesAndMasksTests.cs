using ResearchKit.Tokenizers;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

public class PatchesAndMasksTests
{
    [Theory]
    [InlineData(1, 28, 4)]
    [InlineData(3, 32, 4)]
    [InlineData(3, 32, 8)]
    public void Unpatchify_inverts_patchify(int channels, int size, int patch)
    {
        var images = randn(2, channels, size, size);
        var patches = Patches.Patchify(images, patch);
        int grid = size / patch;
        Assert.Equal(new long[] { 2, grid * grid, patch * patch * channels }, patches.shape);
        var back = Patches.Unpatchify(patches, patch, channels, grid, grid);
        Assert.True(back.Same(images));
    }

    [Fact]
    public void Patch_layout_is_raster_order_with_pixels_as_p_p_C()
    {
        // 2×4 image, 2 channels, patch 2 → two patches; value encodes (channel, row, col).
        var values = new float[2 * 2 * 4];
        for (int c = 0; c < 2; c++) for (int r = 0; r < 2; r++) for (int q = 0; q < 4; q++) values[(c * 2 + r) * 4 + q] = 100 * c + 10 * r + q;
        var patches = Patches.Patchify(tensor(values, new long[] { 1, 2, 2, 4 }), 2);
        // Patch 1 is the right half (cols 2–3); flattened as (row, col, channel).
        var expected = new float[] { 2, 102, 3, 103, 12, 112, 13, 113 };
        Assert.Equal(expected, patches[0, 1].data<float>().ToArray());
    }

    [Fact]
    public void Patchify_rejects_sizes_not_divisible_by_the_patch()
    {
        var e = Assert.Throws<ArgumentException>(() => Patches.Patchify(zeros(1, 1, 30, 30), 4));
        Assert.Contains("30×30", e.Message);
    }

    [Theory]
    [InlineData(49, 0.75, 12)]
    [InlineData(49, 0.1, 44)]
    [InlineData(196, 0.75, 49)]
    [InlineData(64, 0.9, 6)]
    public void Random_masking_keeps_exactly_the_expected_count_and_indices_are_inverse(int length, double ratio, int kept)
    {
        using var g = new Generator(7);
        var m = Masking.Random(5, length, ratio, g);
        Assert.Equal(new long[] { 5, kept }, m.Keep.shape);
        Assert.Equal(kept, Masking.KeptCount(length, ratio));
        // Every row removes exactly L − K patches.
        Assert.True(m.Mask.sum(1).eq(length - kept).all().item<bool>());
        // Kept indices are exactly the zeros of the mask.
        Assert.True(m.Mask.gather(1, m.Keep).eq(0).all().item<bool>());
        // restore is the inverse permutation of the shuffle whose first K entries are keep.
        var shuffle = m.Restore.argsort(1);
        Assert.True(shuffle[.., ..kept].Same(m.Keep));
        Assert.True(shuffle.gather(1, m.Restore).Same(arange(length).expand(5, -1)));
    }

    [Fact]
    public void Random_masks_differ_per_sample_and_repeat_for_a_seed()
    {
        using var g1 = new Generator(3);
        using var g2 = new Generator(3);
        var a = Masking.Random(4, 49, 0.75, g1).Mask;
        var b = Masking.Random(4, 49, 0.75, g2).Mask;
        Assert.True(a.Same(b));
        Assert.False(a[0].Same(a[1]));
    }

    [Fact]
    public void Grid_masking_keeps_the_top_left_of_every_2x2_cell()
    {
        var mask = Masking.Grid(4, 4);
        Assert.Equal(12f, mask.sum().item<float>());
        Assert.Equal(0f, mask[0, 0].item<float>());
        Assert.Equal(0f, mask[2, 2].item<float>());
        Assert.Equal(1f, mask[0, 1].item<float>());
        var fromMask = Masking.FromMask(mask.reshape(1, -1).expand(3, -1));
        Assert.Equal(new long[] { 0, 2, 8, 10 }, fromMask.Keep[0].data<long>().ToArray());
    }

    [Fact]
    public void Grid_masking_refuses_a_stride_below_one()
    {
        // A zero slice step aborts the process inside TorchSharp's native indexing; the check throws first.
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Masking.Grid(4, 4, stride: 0));
        Assert.Equal("stride", e.ParamName);
    }

    [Theory]
    [InlineData(14, 14, 0.4, 16)]
    [InlineData(7, 7, 0.4, 4)]
    [InlineData(14, 14, 0.75, 16)]
    public void Blockwise_masks_reach_the_ratio_with_blocks_of_at_least_min_size(int h, int w, double ratio, int minBlock)
    {
        int target = (int)Math.Ceiling(ratio * h * w - 1e-9);
        for (int seed = 0; seed < 200; seed++)
        {
            var (mask, blocks) = Masking.Blockwise(h, w, ratio, new Random(seed), minBlock);
            int count = 0;
            foreach (var v in mask) if (v) count++;
            Assert.InRange(count, target, target + 2 * minBlock - 1);
            Assert.All(blocks, b => Assert.True(b.Area >= minBlock && b.Top + b.Height <= h && b.Left + b.Width <= w, $"block {b}"));
            // The mask is exactly the union of its blocks.
            var union = new bool[h, w];
            foreach (var b in blocks) for (int i = b.Top; i < b.Top + b.Height; i++) for (int j = b.Left; j < b.Left + b.Width; j++) union[i, j] = true;
            Assert.Equal(union.Cast<bool>(), mask.Cast<bool>());
        }
    }
}
