using ResearchKit.Data;
using ResearchKit.Tokenizers;
using ResearchKit.Training;
using Xunit.Abstractions;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Tests;

/// <summary>The visual tokenizers (BEiT's token targets): shapes, gradients through the discrete bottleneck, training on real data, folders.</summary>
public class TokenizerTests(ITestOutputHelper output)
{
    public static TheoryData<TokenizerKind> Kinds => [TokenizerKind.Vq, TokenizerKind.Dvae];

    [Theory, MemberData(nameof(Kinds))]
    public void A_tokenizer_gives_one_code_per_patch_and_decodes_a_grid_back_to_images(TokenizerKind kind)
    {
        Compute.Seed(0);
        var tokenizer = TokenizerConfig.Tiny(kind).Build();
        var images = randn(4, 1, 28, 28);
        tokenizer.train();
        var step = tokenizer.call(images, new Generator(0));   // VQ: the first step starts the codes from encoder outputs
        Assert.Equal(new long[] { 4, 1, 28, 28 }, step.Reconstruction.shape);
        Assert.Equal(new long[] { 256 }, step.Usage.shape);
        Assert.Equal(1.0, step.Usage.sum().item<float>(), 4);
        tokenizer.eval();
        var codes = tokenizer.Encode(images);
        Assert.Equal(new long[] { 4, 7, 7 }, codes.shape);
        Assert.Equal(ScalarType.Int64, codes.dtype);
        Assert.True(codes.min().item<long>() >= 0 && codes.max().item<long>() < 256);
        var decoded = tokenizer.Decode(codes);
        Assert.Equal(new long[] { 4, 1, 28, 28 }, decoded.shape);
        // In eval mode the forward pass reconstructs through the same hard codes that Encode/Decode use.
        using (no_grad()) Assert.True(decoded.allclose(tokenizer.call(images, null).Reconstruction, atol: 1e-5));
        var wrongSize = Assert.Throws<ArgumentException>(() => tokenizer.Encode(randn(2, 1, 32, 32)));
        Assert.Contains("[B, 1, 28, 28]", wrongSize.Message);
        Assert.Throws<ResearchKitException>(() => (TokenizerConfig.Tiny(kind) with { PatchSize = 5 }).Build());
    }

    [Theory, MemberData(nameof(Kinds))]
    public void The_reconstruction_gradient_reaches_the_encoder_through_the_discrete_bottleneck(TokenizerKind kind)
    {
        // VQ: argmin has no gradient, the straight-through estimator copies the decoder's to the encoder.
        // dVAE: the Gumbel-softmax relaxation is differentiable in the logits.
        Compute.Seed(1);
        var tokenizer = TokenizerConfig.Tiny(kind).Build();
        tokenizer.train();
        var images = randn(8, 1, 28, 28);
        var result = tokenizer.call(images, new Generator(3));
        functional.mse_loss(result.Reconstruction, images).backward();   // the reconstruction term alone: no commitment or KL term
        var first = tokenizer.named_parameters().First(p => p.name.StartsWith("encoder.0")).parameter;
        Assert.NotNull(first.grad);
        Assert.True(first.grad!.abs().sum().item<float>() > 0, "no gradient reached the encoder's first convolution");
    }

    [Fact]
    public void The_dvae_anneals_its_temperature_and_kl_weight_and_keeps_the_step_in_its_weights()
    {
        var config = TokenizerConfig.Tiny(TokenizerKind.Dvae) with { AnnealSteps = 100 };
        var dvae = (DiscreteVae)config.Build();
        Assert.Equal(1.0, dvae.Temperature(0), 9);
        Assert.Equal(0.25, dvae.Temperature(50), 9);            // geometric: √(1 · 1/16)
        Assert.Equal(1.0 / 16, dvae.Temperature(100), 9);
        Assert.Equal(1.0 / 16, dvae.Temperature(1000), 9);
        Assert.Equal(0.0, dvae.KlWeightAt(0));
        Assert.Equal(3.3, dvae.KlWeightAt(50), 9);
        dvae.train();
        dvae.call(randn(2, 1, 28, 28), new Generator(0));
        dvae.call(randn(2, 1, 28, 28), new Generator(1));
        Assert.Equal(2, dvae.Steps);
        Assert.Contains(dvae.state_dict().Keys, k => k == "steps");
    }

    [Theory, MemberData(nameof(Kinds))]
    public void Training_on_Fashion_MNIST_improves_reconstruction_and_uses_the_codebook(TokenizerKind kind)
    {
        var dir = TestData.TempDir();
        var options = new TokenizerTrainOptions(Epochs: kind == TokenizerKind.Dvae ? 3 : 1, TrainLimit: 8192, BatchSize: 64, ReportEvery: 32, ReportImages: 1024);
        var reports = new List<TokenizerReport>();
        // VQ: 128 steps. The dVAE learns more slowly (measured: 15.8 dB and 144 codes after 512 steps, where VQ has 17.4 dB
        // after 128), so it gets 384 steps with its temperature and KL weight annealed over the first 300.
        var config = TokenizerConfig.Tiny(kind) with { AnnealSteps = 300 };
        var (manifest, tokenizer) = TokenizerRun.Train(config, options, dir, report: reports.Add);
        foreach (var r in reports) output.WriteLine(r.ToString());
        Assert.True(reports.Count >= 4);
        Assert.True(reports[^1].Psnr > reports[0].Psnr + 1.5, $"PSNR {reports[0].Psnr} → {reports[^1].Psnr} dB");
        // Predicting every pixel as the data mean scores about 9 dB on Fashion-MNIST (pixel std ≈ 0.35).
        Assert.True(reports[^1].Psnr > 15, $"final PSNR {reports[^1].Psnr} dB");
        Assert.False(reports[^1].Collapsed, reports[^1].ToString());
        Assert.True(reports[^1].Perplexity > 10, reports[^1].ToString());   // effective codes; a collapsed codebook has a handful
        Assert.Equal(reports[^1], manifest.Report);
        Assert.Equal(reports, TokenizerRun.Reports(dir));

        // The folder loads back to the same tokenizer.
        using var data = TestData.FashionMnist(16, 64);
        var images = manifest.Normalization.Apply(data.Test.Images, CPU);
        var loaded = TokenizerRun.Load(dir, imageSize: 28, patchSize: 4);
        Assert.True(loaded.Tokenizer.Encode(images).Same(tokenizer.Encode(images)));
        Assert.Equal(manifest.Report, TokenizerRun.ReadManifest(dir).Report);
    }
}
