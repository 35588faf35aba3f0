using ResearchKit.Layers;
using ResearchKit.Models;
using ResearchKit.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

public class LayerTests
{
    const int Dim = 12, Heads = 3, HeadDim = Dim / Heads, T = 6;

    [Fact]
    public void A_narrow_convolution_has_finite_input_gradients_equal_to_the_transposed_convolution()
    {
        // libtorch's CPU backward gave wrong or NaN input gradients for 3 × 3 convolutions with < 16 filters in some calls;
        // Mixed.Conv pads the filters. dL/dx of y = conv(x, W) under L = Σ y·g is fold(Wᵀ g): im2col's adjoint, worked
        // independently of libtorch's convolution kernels (conv_transpose2d shares the bug).
        manual_seed(0);
        for (int trial = 0; trial < 40; trial++)
        {
            var conv = nn.Conv2d(16, 1 + trial % 8, 3, padding: 1);
            var x = randn(8, 16, 14, 14).requires_grad_(true);
            var y = Mixed.Conv(conv, x);
            Assert.True(y.allclose(conv.call(x.detach()), atol: 1e-5), "the same function");
            var g = randn_like(y);
            (y * g).sum().backward();
            Assert.True(x.grad!.isfinite().all().item<bool>(), $"trial {trial}: NaN in the input gradient");
            var columns = einsum("oc,bol->bcl", conv.weight.detach().reshape(conv.weight.shape[0], -1), g.flatten(2));   // B, C·9, H·W
            var byHand = nn.functional.fold(columns, (14, 14), (3, 3), padding: (1, 1));
            Assert.True(x.grad!.allclose(byHand, rtol: 1e-4, atol: 1e-4), $"trial {trial}: input gradient differs by {(x.grad! - byHand).abs().max().item<float>()}");
            Assert.Equal(conv.weight.shape, conv.weight.grad!.shape);
        }
    }

    [Fact]
    public void Causal_attention_output_at_t_ignores_later_tokens()
    {
        manual_seed(0);
        var causal = new SelfAttention(Dim, Heads, causal: true);
        manual_seed(0);
        var full = new SelfAttention(Dim, Heads);   // same weights, no mask: the control
        var x = randn(2, T, Dim);
        var changed = x.clone();
        changed[.., 3] = x[.., 3] + 1;              // change token 3 only

        using var _ = no_grad();
        var (before, after) = (causal.call(x), causal.call(changed));
        Assert.True(after[.., ..3].allclose(before[.., ..3], rtol: 0, atol: 1e-6), "an earlier output changed");
        for (int t = 3; t < T; t++)
            Assert.True((after[.., t] - before[.., t]).abs().max().item<float>() > 1e-3, $"output {t} did not change");
        // Without the mask the same change reaches the earlier outputs, so the check above can fail.
        Assert.False(full.call(changed)[.., ..3].allclose(full.call(x)[.., ..3], rtol: 0, atol: 1e-3));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Attention_weights_reproduce_the_forward_pass(bool isCausal)
    {
        manual_seed(1);
        var attention = new SelfAttention(Dim, Heads, isCausal);
        var x = randn(2, T, Dim);
        using var _ = no_grad();
        var p = attention.named_parameters().ToDictionary(np => np.name, np => (Tensor)np.parameter);
        Assert.Equal(new[] { "proj.bias", "proj.weight", "qkv.bias", "qkv.weight" }, p.Keys.Order());
        var (wQkv, bQkv) = (p["qkv.weight"], p["qkv.bias"]);   // [3D, D], [3D]: rows are (q | k | v), each split into heads
        // Rows of the fused projection for part s (0 = q, 1 = k, 2 = v) of head h.
        Tensor Project(int s, int h)
        {
            int from = s * Dim + h * HeadDim;
            return x.matmul(wQkv[from..(from + HeadDim)].t()) + bQkv[from..(from + HeadDim)];   // B, T, Dh
        }

        var weights = attention.Weights(x);
        Assert.Equal(new long[] { 2, Heads, T, T }, weights.shape);
        var future = ones(T, T, dtype: ScalarType.Bool).triu(1);   // key s > query t
        var heads = new List<Tensor>();
        for (int h = 0; h < Heads; h++)
        {
            // Scaled dot-product attention by hand: softmax(q·kᵀ / √Dh), future keys at −∞ when causal.
            var scores = Project(0, h).matmul(Project(1, h).transpose(1, 2)) / Math.Sqrt(HeadDim);   // B, T, T
            if (isCausal) scores = scores.masked_fill(future, double.NegativeInfinity);
            Assert.True(weights[.., h].allclose(scores.softmax(-1), rtol: 1e-5, atol: 1e-6), $"head {h} weights");
            heads.Add(weights[.., h].matmul(Project(2, h)));                                         // B, T, Dh
        }
        var expected = cat(heads, dim: -1).matmul(p["proj.weight"].t()) + p["proj.bias"];           // B, T, D
        Assert.True(attention.call(x).allclose(expected, rtol: 1e-5, atol: 1e-5));

        Assert.True(weights.sum(-1).allclose(ones(2, Heads, T), rtol: 0, atol: 1e-5), "weights do not sum to 1 over keys");
        var pastAndPresent = future.logical_not().expand(2, Heads, T, T);
        Assert.True(weights[pastAndPresent].gt(0).all().item<bool>());
        if (isCausal)
            Assert.True(weights[future.expand(2, Heads, T, T)].eq(0).all().item<bool>(), "causal weights above the diagonal");
        else
            Assert.True(weights.gt(0).all().item<bool>());
    }

    [Fact]
    public void Blockwise_batch_stacks_one_seeded_blockwise_mask_per_row_in_raster_order()
    {
        // A non-square grid (6 rows, 10 columns) so a transposed layout would show.
        const int B = 8, H = 6, W = 10, MinBlock = 4;
        const double Ratio = 0.4;
        int target = (int)Math.Ceiling(Ratio * H * W - 1e-9);   // 24
        var masks = Masking.BlockwiseBatch(B, H, W, Ratio, new Random(11), MinBlock);
        Assert.Equal(new long[] { B, H * W }, masks.shape);
        Assert.Equal(ScalarType.Float32, masks.dtype);
        Assert.True(masks.eq(0).logical_or(masks.eq(1)).all().item<bool>());
        var counts = masks.sum(1).data<float>().ToArray();
        Assert.All(counts, c => Assert.InRange(c, target, target + 2 * MinBlock - 1));
        for (int a = 0; a < B; a++)
            for (int b = a + 1; b < B; b++)
                Assert.False(masks[a].Same(masks[b]), $"rows {a} and {b} are the same mask");

        // Deterministic for a seed, different for another.
        Assert.True(masks.Same(Masking.BlockwiseBatch(B, H, W, Ratio, new Random(11), MinBlock)));
        Assert.False(masks.Same(Masking.BlockwiseBatch(B, H, W, Ratio, new Random(12), MinBlock)));

        // Row b is the b-th mask drawn from the same Random, flattened row by row: index i·W + j.
        var draws = new Random(11);
        var values = masks.data<float>().ToArray();
        for (int b = 0; b < B; b++)
        {
            var (mask, _) = Masking.Blockwise(H, W, Ratio, draws, MinBlock);
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++)
                    Assert.Equal(mask[i, j] ? 1f : 0f, values[b * H * W + i * W + j]);
        }
    }

    [Fact]
    public void Freeze_all_but_k_leaves_only_the_last_k_blocks_and_the_final_norm_trainable()
    {
        const int depth = 3;
        var vit = new VisionTransformer(ViTConfig.Tiny(8, 1) with { Dim = 16, Depth = depth, Heads = 2 });
        var names = vit.named_parameters().Select(np => np.name).ToArray();
        // Guard the naming the expectation relies on: every parameter is a block's, the final norm's, or the stem's.
        Assert.Equal(new[] { "clsToken", "norm.bias", "norm.weight", "patchEmbed.bias", "patchEmbed.weight" },
            names.Where(n => !n.StartsWith("blocks.")).Order());
        for (int i = 0; i < depth; i++) Assert.Contains(names, n => n.StartsWith($"blocks.{i}."));

        // Calls in sequence, so a stale flag from the previous call would show.
        foreach (int k in new[] { depth + 2, 0, 1, depth, 1, 0 })
        {
            vit.FreezeAllBut(k);
            foreach (var (name, parameter) in vit.named_parameters())
            {
                // MAE §4.3 / Fig. 9: k = 0 is linear probing (all frozen); k ≥ depth is full fine-tuning (all trainable,
                // as FreezeAllBut documents); otherwise blocks depth−k … depth−1 and the final norm.
                bool expected = k >= depth
                    || (name.StartsWith("blocks.") && int.Parse(name.Split('.')[1]) >= depth - k)
                    || (name.StartsWith("norm.") && k > 0);
                Assert.True(expected == parameter.requires_grad, $"k = {k}: {name} requires_grad = {parameter.requires_grad}");
            }
        }
    }
}
