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
        var tokens = vit.call(x);
        Assert.Equal(new long[] { 2, 1 + 64, 128 }, tokens.shape);
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
        var mae = new MaskedAutoencoder(Small(3) with { NormPixLoss = true });
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
        Assert.Throws<ResearchKitException>(() => new MaskedAutoencoder(Small() with { Sampling = MaskSampling.Grid, MaskRatio = 0.5 }));
    }

    [Fact]
    public void Reconstruct_pastes_kept_patches_back_exactly()
    {
        manual_seed(0);
        var mae = new MaskedAutoencoder(Small() with { NormPixLoss = true });
        var images = randn(2, 1, 28, 28);
        using var g = new Generator(4);
        var (masked, reconstruction, pasted, removed) = mae.Reconstruct(images, g);
        Assert.Equal(images.shape, removed.shape);
        Assert.Equal(images.shape, reconstruction.shape);
        // Where the masked input is non-zero (kept), the pasted image equals the original.
        var kept = masked.ne(0);
        Assert.True(pasted[kept].allclose(images[kept], atol: 1e-5));
    }
}
