using ResearchKit.Models;
using ResearchKit.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

public class ModelTests
{
    static MaeConfig Small(int channels = 1) => MaeConfig.Tiny(28, channels) with { Encoder = ViTConfig.Tiny(28, channels) with { Dim = 32, Depth = 2, Heads = 2 }, DecoderDim = 16, DecoderDepth = 1, DecoderHeads = 2 };

    [Fact]
    public void ViT_returns_tokens_and_per_layer_features_without_NaN()
    {
        manual_seed(0);
        var vit = new VisionTransformer(ViTConfig.Tiny(32, 3));
        var x = randn(2, 3, 32, 32);
        var tokens = vit.Tokens(x);
        Assert.Equal(new long[] { 2, 1 + 64, 128 }, tokens.shape);
        // The backbone contract's pooled features: mean of the normed patch tokens, or [CLS].
        Assert.True(vit.call(x).allclose(tokens[.., 1..].mean(new long[] { 1 }), atol: 1e-6));
        manual_seed(0);
        var clsPooled = new VisionTransformer(ViTConfig.Tiny(32, 3) with { Pooling = Pooling.Cls });
        Assert.True(clsPooled.Features(x).allclose(tokens[.., 0], atol: 1e-6));           // same seed, same weights
        Assert.False(tokens.isnan().any().item<bool>());
        var layers = vit.LayerFeatures(x);
        Assert.Equal(6, layers.Length);
        Assert.All(layers, l => Assert.Equal(new long[] { 2, 128 }, l.shape));
        Assert.Equal(new long[] { 2, 4, 65, 65 }, vit.AttentionMaps(x, 3).shape);
    }

    [Fact]
    public void Tiny_presets_match_the_reference_model_size()
    {
        // PLATFORM.md's reference tiny MAE: 1.3 M parameters.
        var mae = new MaskedAutoencoder(MaeConfig.Tiny(28, 1));
        long parameters = mae.parameters().Sum(p => p.numel());
        Assert.InRange(parameters, 1_250_000, 1_350_000);
        Assert.Equal(0.75, MaeConfig.ViTLarge.MaskRatio);
        Assert.Equal((8, 512), (MaeConfig.ViTLarge.DecoderDepth, MaeConfig.ViTLarge.DecoderDim));
    }

    [Fact]
    public void MAE_forward_gives_loss_prediction_and_mask_of_the_right_shape()
    {
        manual_seed(0);
        var mae = new MaskedAutoencoder(Small());
        using var g = new Generator(1);
        var output = mae.call(randn(3, 1, 28, 28), g);
        Assert.Equal(new long[] { 3, 49, 16 }, output.Prediction.shape);
        Assert.Equal(new long[] { 3, 49 }, output.Mask.shape);
        Assert.True(output.Mask.sum(1).eq(49 - 12).all().item<bool>());
        Assert.True(double.IsFinite(output.Loss.item<float>()));
    }

    [Fact]
    public void MAE_loss_is_the_mean_squared_error_over_removed_patches_only()
    {
        manual_seed(0);
        var mae = new MaskedAutoencoder(Small());
        var images = randn(2, 1, 28, 28);
        using var g = new Generator(5);
        var output = mae.call(images, g);
        // Independent computation: select removed patches with a boolean index, average all their squared errors.
        var target = Patches.Patchify(images, 4);
        var removed = output.Mask.to_type(ScalarType.Bool);
        var expected = (output.Prediction[removed] - target[removed]).square().mean().item<float>();
        Assert.Equal(expected, output.Loss.item<float>(), 5);
    }

    [Fact]
    public void MAE_encoder_sees_only_the_kept_patches()
    {
        manual_seed(0);
        var mae = new MaskedAutoencoder(Small());
        mae.eval();
        var images = randn(1, 1, 28, 28);
        using var g = new Generator(2);
        var mask = mae.SampleMask(1, g, CPU);
        var latent = mae.ForwardEncoder(images, mask);
        Assert.Equal(new long[] { 1, 1 + 12, 32 }, latent.shape);
        // Changing every removed patch must not change the encoder's output.
        var patches = Patches.Patchify(images, 4);
        var changed = Patches.Unpatchify(patches + 5 * mask.Mask.unsqueeze(-1), 4, 1, 7, 7);
        Assert.True(mae.ForwardEncoder(changed, mask).allclose(latent, atol: 1e-6));
        // …while changing a kept patch does.
        var keptChange = Patches.Unpatchify(patches + 5 * (1 - mask.Mask).unsqueeze(-1), 4, 1, 7, 7);
        Assert.False(mae.ForwardEncoder(keptChange, mask).allclose(latent, atol: 1e-3));
    }

    [Fact]
    public void Mask_tokens_in_the_encoder_variant_encodes_every_position()
    {
        manual_seed(0);
        var mae = new MaskedAutoencoder(Small() with { MaskTokenInEncoder = true });
        using var g = new Generator(1);
        var images = randn(2, 1, 28, 28);
        var mask = mae.SampleMask(2, g, CPU);
        Assert.Equal(new long[] { 2, 50, 32 }, mae.ForwardEncoder(images, mask).shape);
        var output = mae.call(images, g);
        Assert.Equal(new long[] { 2, 49, 16 }, output.Prediction.shape);
        Assert.True(double.IsFinite(output.Loss.item<float>()));
    }

    [Fact]
    public void Norm_pix_targets_have_zero_mean_and_unit_variance_per_patch()
    {
        var mae = new MaskedAutoencoder(Small(3) with { Target = MaeTarget.NormPixel });
        var targets = mae.Targets(rand(2, 3, 28, 28));
        Assert.True(targets.mean(new long[] { -1 }).abs().max().item<float>() < 1e-4);
        Assert.True((targets.var(-1) - 1).abs().max().item<float>() < 1e-3);
    }

    [Fact]
    public void Grid_sampling_removes_three_of_four_patches_the_same_way_for_every_image()
    {
        var mae = new MaskedAutoencoder(Small() with { Encoder = ViTConfig.Tiny(32, 1) with { Dim = 32, Depth = 1, Heads = 2 }, Sampling = MaskSampling.Grid });
        var mask = mae.SampleMask(3, null, CPU).Mask;
        Assert.Equal(3 * 48f, mask.sum().item<float>());
        Assert.True(mask[0].Same(mask[2]));
        Assert.Throws<ResearchKitException>(() => new MaskedAutoencoder(Small() with { Sampling = MaskSampling.Grid, MaskRatio = 0.6 }));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Reconstruct_pastes_kept_patches_back_exactly_and_predictions_into_removed_ones(bool normPixLoss)
    {
        manual_seed(0);
        var mae = new MaskedAutoencoder(Small() with { Target = normPixLoss ? MaeTarget.NormPixel : MaeTarget.Pixel });
        var images = randn(2, 1, 28, 28) * 3 + 2;
        using var g = new Generator(4);
        var (masked, reconstruction, pasted, removed) = mae.Reconstruct(images, g);
        Assert.Equal(new long[] { 2, 1, 28, 28 }, removed.shape);
        Assert.Equal(images.shape, masked.shape);
        Assert.Equal(images.shape, reconstruction.shape);
        Assert.Equal(images.shape, pasted.shape);

        // Removed is the sampled patch mask (same generator seed) spread over each 4×4 patch of the 7×7 grid.
        using var twin = new Generator(4);
        var patchMask = mae.SampleMask(2, twin, CPU).Mask.data<float>().ToArray();   // B, L
        var expectedRemoved = new float[2 * 28 * 28];
        for (int b = 0; b < 2; b++)
            for (int r = 0; r < 28; r++)
                for (int c = 0; c < 28; c++)
                    expectedRemoved[(b * 28 + r) * 28 + c] = patchMask[b * 49 + (r / 4) * 7 + c / 4];
        Assert.Equal(expectedRemoved, removed.data<float>().ToArray());
        Assert.Equal(2 * 37 * 16f, removed.sum().item<float>());   // 49 − 12 kept = 37 removed patches per image

        var isRemoved = removed.to_type(ScalarType.Bool);
        var isKept = isRemoved.logical_not();
        Assert.True(pasted[isKept].Same(images[isKept]));                  // kept pixels: the input, exactly
        Assert.True(pasted[isRemoved].Same(reconstruction[isRemoved]));    // removed pixels: the reconstruction
        Assert.True(masked.eq(0).Same(isRemoved));                         // masked input is zero exactly where removed
        Assert.True(masked[isKept].Same(images[isKept]));
        Assert.False(reconstruction[isRemoved].allclose(images[isRemoved], atol: 1e-2));   // the paste is visible
    }

    [Fact]
    public void Reconstruct_with_norm_pix_loss_unnormalises_the_prediction_with_each_true_patchs_statistics()
    {
        manual_seed(0);
        var mae = new MaskedAutoencoder(Small(3) with { Target = MaeTarget.NormPixel });
        var images = randn(2, 3, 28, 28) * 3 + 2;   // far from zero mean and unit variance, so un-normalising matters
        using var g = new Generator(6);
        var (_, reconstruction, _, _) = mae.Reconstruct(images, g);
        using var twin = new Generator(6);
        Tensor prediction;
        using (no_grad()) prediction = mae.call(images, twin).Prediction;   // same mask, so the same prediction

        // Independently: each true patch's mean and unbiased variance (+1e-6), as Targets normalises; expected = p·std + mean.
        var patches = Patches.Patchify(images, 4).data<float>().ToArray();   // B, L, 48
        var predicted = prediction.data<float>().ToArray();
        const int P = 4 * 4 * 3;
        var expected = new float[patches.Length];
        for (int start = 0; start < patches.Length; start += P)
        {
            double mean = 0, squares = 0;
            for (int k = 0; k < P; k++) mean += patches[start + k];
            mean /= P;
            for (int k = 0; k < P; k++) squares += (patches[start + k] - mean) * (patches[start + k] - mean);
            double std = Math.Sqrt(squares / (P - 1) + 1e-6);
            for (int k = 0; k < P; k++) expected[start + k] = (float)(predicted[start + k] * std + mean);
        }
        var actual = Patches.Patchify(reconstruction, 4);
        Assert.True(actual.allclose(tensor(expected, actual.shape), rtol: 1e-5, atol: 1e-5));
        Assert.False(actual.allclose(prediction, atol: 1e-2));   // the prediction alone would not pass
    }
}
