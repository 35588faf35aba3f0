using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Methods;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Tokenizers;
using ResearchKit.Training;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>BEiT: the corrupted input, the MIM loss, masks, attention maps, tokenizer folders, and a run on real data.</summary>
public class BeitTests
{
    /// <summary>A VQ tokenizer trained for a few steps on Fashion-MNIST: enough for shapes and a pipeline, not for quality.</summary>
    static string QuickTokenizer(long images = 512, int codes = 64)
    {
        var dir = Path.Combine(TestData.TempDir(), "tokenizer");
        TokenizerRun.Train(TokenizerConfig.Tiny() with { Codes = codes }, new TokenizerTrainOptions(Epochs: 1, TrainLimit: images, BatchSize: 64, ReportImages: 128), dir);
        return dir;
    }

    static Beit PixelBeit(bool predictAll = false)
    {
        Compute.Seed(0);
        return new Beit(BeitConfig.Tiny() with { Target = BeitTarget.Pixels, PredictAll = predictAll });
    }

    [Fact]
    public void The_mask_embedding_replaces_exactly_the_masked_patch_embeddings()
    {
        var beit = PixelBeit();
        var images = randn(3, 1, 28, 28);
        var mask = zeros(3, 49);
        mask[0, 0] = 1; mask[0, 48] = 1; mask[2, 10] = 1;
        using var _ = no_grad();
        var corrupted = beit.EmbedMasked(images, mask);
        var clean = beit.Encoder.EmbedPatches(images);
        var maskToken = beit.named_parameters().Single(p => p.name == "maskToken").parameter;
        var expectedMasked = (maskToken + beit.Encoder.PatchPositions).expand(3, -1, -1);   // e[M] plus the position, no patch content
        var kept = mask.eq(0).unsqueeze(-1);
        Assert.True(corrupted.masked_select(kept).allclose(clean.masked_select(kept), atol: 1e-6));
        Assert.True(corrupted.masked_select(kept.logical_not()).allclose(expectedMasked.masked_select(kept.logical_not()), atol: 1e-6));
        Assert.Equal(3 * 49 - 3, (int)corrupted.sub(clean).abs().sum(-1).lt(1e-6).sum().item<long>());
    }

    [Fact]
    public void The_mim_loss_ignores_unmasked_targets_unless_predicting_all()
    {
        Compute.Seed(0);
        var beit = new Beit(BeitConfig.Tiny() with { Tokenizer = "unused", Codes = 16 });
        var logits = randn(2, 49, 16);
        var targets = randint(0, 16, new long[] { 2, 49 });
        var mask = zeros(2, 49);
        mask[0, 5] = 1; mask[1, 7] = 1; mask[1, 8] = 1;
        double loss = beit.MimLoss(logits, targets, mask).item<float>();
        // By hand: mean over the three masked positions of −log softmax(logits)[target].
        var logp = logits.log_softmax(-1);
        double byHand = -(logp[0, 5, targets[0, 5]].item<float>() + logp[1, 7, targets[1, 7]].item<float>() + logp[1, 8, targets[1, 8]].item<float>()) / 3;
        Assert.Equal(byHand, loss, 5);

        var changedUnmasked = targets.clone();
        changedUnmasked[0, 6] = (changedUnmasked[0, 6] + 1) % 16;
        Assert.Equal(loss, beit.MimLoss(logits, changedUnmasked, mask).item<float>(), 6);
        var changedMasked = targets.clone();
        changedMasked[0, 5] = (changedMasked[0, 5] + 1) % 16;
        Assert.NotEqual(loss, beit.MimLoss(logits, changedMasked, mask).item<float>(), 4);

        // Predict-all counts every one of the 98 positions, so an unmasked target changes the loss too.
        var all = new Beit(BeitConfig.Tiny() with { Tokenizer = "unused", Codes = 16, PredictAll = true });
        double allLoss = all.MimLoss(logits, targets, mask).item<float>();
        Assert.Equal(-logp.gather(-1, targets.unsqueeze(-1)).mean().item<float>(), allLoss, 5);
        Assert.NotEqual(allLoss, all.MimLoss(logits, changedUnmasked, mask).item<float>(), 4);

        // Pixel regression: squared error per patch, over masked positions only.
        var pixels = PixelBeit();
        var prediction = randn(2, 49, 16);
        var patches = randn(2, 49, 16);
        double pixelLoss = pixels.MimLoss(prediction, patches, mask).item<float>();
        var perPatch = (prediction - patches).square().mean(new long[] { -1 });
        Assert.Equal((perPatch[0, 5] + perPatch[1, 7] + perPatch[1, 8]).item<float>() / 3, pixelLoss, 5);
        var moved = patches.clone();
        moved[1, 0] += 5;
        Assert.Equal(pixelLoss, pixels.MimLoss(prediction, moved, mask).item<float>(), 6);
    }

    [Fact]
    public void Masks_are_blockwise_near_forty_percent_random_masks_match_their_counts_and_both_repeat_for_a_seed()
    {
        var blockwise = PixelBeit();
        var random = new Beit(BeitConfig.Tiny() with { Target = BeitTarget.Pixels, Masking = BeitMasking.Random });
        Tensor Draw(Beit b, ulong seed) { using var g = new Generator(seed); return b.SampleMask(64, g, CPU); }
        var a = Draw(blockwise, 5);
        var counts = a.sum(1);
        // ⌈0.4 · 49⌉ = 20 at least; every block has ≥ 4 patches and the overshoot is below 2 · 4.
        Assert.True(counts.min().item<float>() >= 20 && counts.max().item<float>() <= 27, $"{counts.min().item<float>()}–{counts.max().item<float>()}");
        Assert.True(a.Same(Draw(blockwise, 5)));
        Assert.False(a.Same(Draw(blockwise, 6)));
        var r = Draw(random, 5);
        Assert.True(r.sum(1).Same(counts));             // same number masked per image as the blockwise draw…
        Assert.False(r.Same(a));                        // …at other positions
        // Blockwise masks are clumped: more masked 4-neighbours per masked patch than random ones.
        static double Neighbours(Tensor m)
        {
            var grid = m.reshape(-1, 7, 7);
            var right = (grid[.., .., 1..] * grid[.., .., ..^1]).sum();
            var down = (grid[.., 1..] * grid[.., ..^1]).sum();
            return ((right + down) * 2 / grid.sum()).item<float>();
        }
        Assert.True(Neighbours(a) > Neighbours(r) + 0.5, $"blockwise {Neighbours(a):F2} vs random {Neighbours(r):F2}");
    }

    [Fact]
    public void Cls_attention_sums_to_one_over_keys_and_upsamples_to_the_image()
    {
        var beit = PixelBeit();
        beit.eval();
        var images = randn(2, 1, 28, 28);
        var attention = AttentionMaps.ClsAttention(beit.Encoder, images, layer: 2);
        Assert.Equal(new long[] { 2, 4, 50 }, attention.shape);
        Assert.True(attention.sum(-1).allclose(ones(2, 4), atol: 1e-5));
        Assert.True(attention.min().item<float>() >= 0);
        var oneHead = AttentionMaps.ClsAttention(beit.Encoder, images, layer: 2, head: 3);
        Assert.True(oneHead[.., 0].allclose(attention[.., 3]));
        var map = AttentionMaps.Upsampled(beit.Encoder, images, layer: 5);
        Assert.Equal(new long[] { 2, 1, 28, 28 }, map.shape);
        Assert.Equal(0.0, map.amin(new long[] { 1, 2, 3 })[0].item<float>(), 5);
        Assert.Equal(1.0, map.amax(new long[] { 1, 2, 3 })[1].item<float>(), 5);
        Assert.Throws<ArgumentOutOfRangeException>(() => AttentionMaps.ClsAttention(beit.Encoder, images, layer: 6));
        var grid = AttentionMaps.Grid(beit.Encoder, images, images.sigmoid(), [0, 5]);
        Assert.Equal(["image", "layer 0", "layer 5"], grid.RowLabels);
    }

    [Fact]
    public void Bad_tokenizer_folders_give_one_line_errors_naming_the_file_and_the_mismatch()
    {
        var missing = Path.Combine(TestData.TempDir(), "nope");
        var config = BeitConfig.Tiny() with { Tokenizer = missing };
        var e = Assert.Throws<ResearchKitException>(() => config.ForInput(28, 1));
        Assert.Equal($"{missing}: tokenizer folder not found; train one with `researchkit tokenizer train --out {missing}`", e.Message);

        var empty = TestData.TempDir();
        e = Assert.Throws<ResearchKitException>(() => (config with { Tokenizer = empty }).ForInput(28, 1));
        Assert.Contains($"{Path.Combine(empty, "tokenizer.json")}: not found", e.Message);

        var dir = QuickTokenizer(images: 128, codes: 32);
        var sized = (BeitConfig)(config with { Tokenizer = dir }).ForInput(28, 1);
        Assert.Equal(32, sized.Codes);

        // Built for 28×28 in 4×4 patches: a 32×32 data set, or a ViT with 7×7 patches, is refused before anything runs.
        e = Assert.Throws<DataFormatException>(() => (config with { Tokenizer = dir }).ForInput(32, 1));
        Assert.Contains(Path.Combine(dir, "tokenizer.json"), e.Message);
        Assert.Contains("built for 28×28×1 images in 4×4 patches; this BEiT needs 32×32×1 images in 4×4 patches", e.Message);
        e = Assert.Throws<DataFormatException>(() => (config with { Tokenizer = dir, Encoder = config.Encoder with { PatchSize = 7 } }).ForInput(28, 1));
        Assert.Contains("in 7×7 patches", e.Message);
        e = Assert.Throws<DataFormatException>(() => TokenizerRun.Load(dir, imageSize: 28, patchSize: 2));
        Assert.Contains("this model needs 28×28×1 images in 2×2 patches", e.Message);

        // A checkpoint of another codebook size is blamed on the manifest that describes the tokenizer, not on a
        // config.json the folder does not have (issue 22, item 14).
        var checkpoint = Path.Combine(dir, "checkpoint.bin");
        var bytes = File.ReadAllBytes(checkpoint);
        File.Copy(Path.Combine(QuickTokenizer(images: 128, codes: 16), "checkpoint.bin"), checkpoint, overwrite: true);
        e = Assert.Throws<DataFormatException>(() => TokenizerRun.Load(dir));
        Assert.StartsWith($"{checkpoint}: weights do not fit the model in tokenizer.json", e.Message);

        // A damaged checkpoint is named by its file; so is a manifest that is not JSON.
        File.WriteAllBytes(checkpoint, bytes[..(bytes.Length / 5)]);   // cut inside the weights (the optimizer state follows them)
        e = Assert.Throws<DataFormatException>(() => TokenizerRun.Load(dir));
        Assert.StartsWith(checkpoint, e.Message);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), "{ not json");
        e = Assert.Throws<DataFormatException>(() => TokenizerRun.Load(dir));
        Assert.StartsWith($"{Path.Combine(dir, "tokenizer.json")}: not a valid tokenizer manifest", e.Message);
        Assert.DoesNotContain('\n', e.Message);

        e = Assert.Throws<ResearchKitException>(() => (BeitConfig.Tiny() with { Tokenizer = null }).ForInput(28, 1));
        Assert.Contains("--tokenizer DIR", e.Message);
    }

    [Fact]
    public void A_tiny_beit_pretrains_on_fashion_mnist_with_token_targets_and_its_loss_falls()
    {
        var tokenizerDir = QuickTokenizer(images: 1024, codes: 64);
        var dir = Path.Combine(TestData.TempDir(), "beit");
        var method = BeitConfig.Tiny() with { Tokenizer = tokenizerDir };
        var run = Pretraining.Run(method, new PretrainOptions(Epochs: 2, TrainLimit: 2048, BatchSize: 64), dir);
        var losses = run.Result.Losses;
        Assert.Equal(64, losses.Count);
        // Chance is ln 64 ≈ 4.16 nats; the first steps start near it and the last ones are well below.
        Assert.True(losses.Take(5).Average() > 3.5, $"first losses {losses.Take(5).Average():F2}");
        Assert.True(losses.TakeLast(10).Average() < losses.Take(5).Average() - 0.5, $"loss {losses.Take(5).Average():F2} → {losses.TakeLast(10).Average():F2}");

        // The run folder reloads without its tokenizer: evaluating a backbone does not need it.
        var (config, model) = Pretraining.Load(dir);
        Assert.Equal(64, ((BeitConfig)config.Method).Codes);
        using var data = TestData.FashionMnist(16, 256);
        var images = config.Normalization.Apply(data.Test.Images, CPU);
        using var g = new Generator(0);
        var metrics = TestData.Measure(config.Method, model, config.Normalization, images, g);
        Assert.True(metrics["masked_token_accuracy"] > 3.0 / 64, $"masked-token accuracy {metrics["masked_token_accuracy"]:P1} (chance 1.6%)");
    }
}
