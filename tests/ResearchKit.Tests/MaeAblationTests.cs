using ResearchKit.Methods;
using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Layers;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Tokenizers;
using ResearchKit.Training;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>MAE's Table 1 pieces: reconstruction targets, mask sampling at exact counts, augmentations, partial fine-tuning, snapshots, FLOPs.</summary>
public class MaeAblationTests
{
    static MaeConfig Small(MaeTarget target = MaeTarget.Pixel) =>
        MaeConfig.Tiny(28, 1) with { Encoder = ViTConfig.Tiny(28, 1) with { Dim = 32, Depth = 2, Heads = 2 }, DecoderDim = 16, DecoderDepth = 1, DecoderHeads = 2, Target = target };

    /// <summary>An untrained VQ tokenizer in memory (one 16-code token per 4×4 patch): enough to test what MAE does with tokens.</summary>
    static LoadedTokenizer MemoryTokenizer(int codes = 16)
    {
        Compute.Seed(0);
        var config = TokenizerConfig.Tiny() with { Codes = codes };
        var tokenizer = config.Build();
        tokenizer.Module.eval();
        return new LoadedTokenizer("(memory)", new TokenizerManifest(config, new TokenizerTrainOptions(), new Normalization([0f], [1f])), tokenizer);
    }

    // ---- targets ----------------------------------------------------------------------------------------------

    [Fact]
    public void Pca_with_every_component_round_trips_patches_and_its_basis_is_orthonormal()
    {
        manual_seed(1);
        var patches = randn(500, 16).matmul(randn(16, 16)) + 3;   // correlated, off-centre
        var pca = new PatchPca(16, 16);
        pca.Fit(patches);
        Assert.True(pca.Decode(pca.Encode(patches)).allclose(patches, rtol: 0, atol: 1e-4));
        var coefficients = pca.Encode(patches);
        // Orthonormal basis: coefficients are uncorrelated, with variances descending.
        var covariance = coefficients.t().mm(coefficients) / (patches.shape[0] - 1);
        var variances = covariance.diag().data<float>().ToArray();
        Assert.True((covariance - covariance.diag().diag()).abs().max().item<float>() < 1e-3 * variances[0]);
        for (int i = 1; i < 16; i++) Assert.True(variances[i] <= variances[i - 1] * (1 + 1e-4), $"variance {i} > variance {i - 1}");
        Assert.Equal(1.0, pca.ExplainedVariance, 5);
    }

    [Fact]
    public void Pca_finds_the_direction_of_data_on_a_line_and_keeps_its_variance()
    {
        // Points t·(1, 2)/√5 + small noise: the first component is ±(1, 2)/√5 with variance var(t); worked by hand.
        manual_seed(2);
        var t = randn(2000) * 3;
        var direction = tensor(new[] { 1f, 2f }) / MathF.Sqrt(5);
        var points = t.unsqueeze(1) * direction + randn(2000, 2) * 0.01;
        var pca = new PatchPca(2, 1);
        pca.Fit(points);
        var first = pca.Decode(tensor(new[] { 1f }).unsqueeze(0)) - pca.Decode(tensor(new[] { 0f }).unsqueeze(0));
        Assert.True(first.abs().allclose(direction.unsqueeze(0), atol: 1e-3), $"first direction {string.Join(", ", first.data<float>().ToArray())}");
        Assert.True(pca.ExplainedVariance > 0.9999);
        var reconstruction = pca.Decode(pca.Encode(points));
        Assert.True((reconstruction - points).square().mean().item<float>() < 2e-4);   // only the noise across the line is lost
    }

    [Fact]
    public void The_pca_target_is_fitted_on_the_first_batch_saved_with_the_weights_and_decoded_back_to_pixels()
    {
        Compute.Seed(0);
        var mae = new MaskedAutoencoder(Small(MaeTarget.Pca) with { PcaComponents = 16 });
        Assert.False(mae.Pca!.IsFitted);
        var images = randn(8, 1, 28, 28);
        using var g = new Generator(0);
        var output = mae.call(images, g);
        Assert.True(mae.Pca.IsFitted);
        Assert.Equal(new long[] { 8, 49, 16 }, output.Prediction.shape);
        // With every component, PCA coefficients are an orthonormal change of basis: decoded targets are the patches.
        var patches = Patches.Patchify(images, 4);
        Assert.True(mae.ToPixels(mae.Targets(images), images).allclose(patches, rtol: 0, atol: 1e-4));
        Assert.Contains(mae.state_dict().Keys, k => k == "pca.basis");
        var copy = new MaskedAutoencoder(Small(MaeTarget.Pca) with { PcaComponents = 16 });
        copy.load_state_dict(mae.state_dict());
        Assert.True(copy.Pca!.IsFitted);
        Assert.True(copy.Targets(images).allclose(mae.Targets(images)));
    }

    [Fact]
    public void The_token_target_is_a_cross_entropy_over_the_codebook_at_removed_patches_only()
    {
        var tokenizer = MemoryTokenizer(codes: 16);
        Compute.Seed(0);
        var config = Small(MaeTarget.Token) with { Tokenizer = "(memory)", Codes = 16 };
        var mae = new MaskedAutoencoder(config, BuildContext.Pixels(config) with { Dependencies = new Dependencies().Use("(memory)", tokenizer) });
        var images = randn(3, 1, 28, 28);
        var targets = mae.Targets(images);
        Assert.Equal(new long[] { 3, 49 }, targets.shape);
        Assert.Equal(ScalarType.Int64, targets.dtype);
        Assert.True(targets.Same(tokenizer.Tokenizer.Encode(images).reshape(3, 49)));

        var logits = randn(3, 49, 16);
        var mask = zeros(3, 49);
        mask[0, 3] = 1; mask[1, 10] = 1; mask[2, 48] = 1; mask[2, 0] = 1;
        double loss = mae.ForwardLoss(images, logits, mask).item<float>();
        var logp = logits.log_softmax(-1);
        double byHand = 0;
        foreach (var (b, l) in new[] { (0, 3), (1, 10), (2, 48), (2, 0) }) byHand -= logp[b, l, targets[b, l]].item<float>();
        Assert.Equal(byHand / 4, loss, 5);
        // Any change at kept positions leaves the loss as it is.
        var changed = logits + (1 - mask).unsqueeze(-1) * randn(3, 49, 16) * 5;
        Assert.Equal(loss, mae.ForwardLoss(images, changed, mask).item<float>(), 5);

        // Reconstructions of a token MAE are pixels: the argmax tokens through the tokenizer's decoder.
        var pixels = mae.ToPixels(logits, images);
        Assert.Equal(new long[] { 3, 49, 16 }, pixels.shape);
        Assert.True(pixels.allclose(Patches.Patchify(tokenizer.Tokenizer.Decode(logits.argmax(-1).reshape(3, 7, 7)), 4), atol: 1e-5));
        var metrics = TestData.Measure(mae.Config, mae, new Normalization([0.5f], [0.25f]), images, new Generator(0));
        // The masked-token accuracy counted by hand: the same draw (generator seed 0) through the model, argmax tokens
        // against the tokenizer's at removed patches only.
        using (no_grad())
        {
            var output = mae.call(images, new Generator(0));
            var hits = output.Prediction.argmax(-1).eq(targets).to_type(ScalarType.Float32) * output.Mask;
            Assert.Equal(hits.sum().item<float>() / output.Mask.sum().item<float>(), metrics["masked_token_accuracy"], 5);
        }
        Assert.True(double.IsFinite(metrics["reconstruction_psnr"]));
    }

    [Fact]
    public void Bad_target_options_are_one_line_errors_naming_the_option()
    {
        var noTokenizer = Assert.Throws<ResearchKitException>(() => Small(MaeTarget.Token).ForInput(28, 1));
        Assert.Contains("--tokenizer", noTokenizer.Message);
        Assert.DoesNotContain("\n", noTokenizer.Message);
        var tooMany = Assert.Throws<ResearchKitException>(() => new MaskedAutoencoder(Small(MaeTarget.Pca) with { PcaComponents = 17 }));
        Assert.Contains("--pca-components", tooMany.Message);
        Assert.Contains("16", tooMany.Message);
        var missing = Assert.Throws<ResearchKitException>(() => (Small(MaeTarget.Token) with { Tokenizer = Path.Combine(TestData.TempDir(), "none") }).ForInput(28, 1));
        Assert.Contains("tokenizer folder not found", missing.Message);
        var grid = Assert.Throws<ResearchKitException>(() => new MaskedAutoencoder(Small() with { Sampling = MaskSampling.Grid, MaskRatio = 0.6 }));
        Assert.Contains("--mask-ratio", grid.Message);
    }

    [Fact]
    public void A_tokenizer_built_for_another_patch_size_is_refused_before_anything_is_written()
    {
        var dir = Path.Combine(TestData.TempDir(), "tokenizer");
        var loaded = MemoryTokenizer();
        // A manifest for 2×2 patches: write only the manifest; the shape check must come before the checkpoint is needed.
        Directory.CreateDirectory(dir);
        var manifest = loaded.Manifest with { Tokenizer = loaded.Manifest.Tokenizer with { PatchSize = 2 } };
        File.WriteAllText(Path.Combine(dir, TokenizerRun.ManifestFile), System.Text.Json.JsonSerializer.Serialize(manifest, Methods.MethodRegistry.Json));
        var runFolder = Path.Combine(TestData.TempDir(), "run");
        var e = Assert.Throws<DataFormatException>(() => Pretraining.Configure(Small(MaeTarget.Token) with { Tokenizer = dir },
            new PretrainOptions(), TestData.Random(64)));
        Assert.Contains(TokenizerRun.ManifestFile, e.Message);
        Assert.Contains("2×2", e.Message);
        Assert.Contains("4×4", e.Message);
        Assert.False(Directory.Exists(runFolder));
    }

    // ---- mask sampling ----------------------------------------------------------------------------------------

    [Theory]
    [InlineData(7, 0.75)]
    [InlineData(7, 0.5)]
    [InlineData(8, 0.75)]
    [InlineData(8, 0.5)]
    [InlineData(14, 0.75)]
    [InlineData(5, 0.5)]
    public void Grid_and_block_masks_in_the_mae_path_remove_exactly_the_count_random_masking_removes(int grid, double ratio)
    {
        int length = grid * grid, removed = length - Masking.KeptCount(length, ratio);
        foreach (var sampling in new[] { MaskSampling.Random, MaskSampling.Block, MaskSampling.Grid })
        {
            var config = Small() with { Encoder = ViTConfig.Tiny(grid * 4, 1) with { Dim = 32, Depth = 1, Heads = 2 }, Sampling = sampling, MaskRatio = ratio, MinBlock = 4 };
            var mae = new MaskedAutoencoder(config);
            using var g = new Generator(3);
            var mask = mae.SampleMask(16, g, CPU);
            var perImage = mask.Mask.sum(1).data<float>().ToArray();
            Assert.All(perImage, r => Assert.Equal(removed, (int)r));
            Assert.Equal(new long[] { 16, length - removed }, mask.Keep.shape);
            // Keep indices are exactly the unmasked positions.
            var gathered = mask.Mask.gather(1, mask.Keep);
            Assert.Equal(0f, gathered.sum().item<float>());
        }
    }

    [Fact]
    public void Grid_masks_are_regular_and_block_masks_come_in_blocks()
    {
        // 7×7 at 75%: the kept patches are a stride-2 lattice (12 of 49); at 50% a checkerboard (24 of 49).
        var lattice = Masking.GridExact(7, 7, 0.75);
        var kept = Enumerable.Range(0, 49).Where(k => lattice[k / 7, k % 7].item<float>() == 0).ToList();
        Assert.Equal(12, kept.Count);
        Assert.All(kept, k => Assert.True((k / 7) % 2 == 0 && (k % 7) % 2 == 1, $"kept patch ({k / 7}, {k % 7}) off the lattice"));
        var checkerboard = Masking.GridExact(7, 7, 0.5);
        for (int i = 0; i < 7; i++)
            for (int j = 0; j < 7; j++)
                Assert.Equal((i + j) % 2 == 1 ? 0f : 1f, checkerboard[i, j].item<float>());
        // Block masks: removed patches have more removed neighbours than random masks of the same count do.
        static double Neighbours(Tensor mask)
        {
            var m = mask.reshape(-1, 7, 7).data<float>().ToArray();
            int images = m.Length / 49, pairs = 0, removed = 0;
            for (int b = 0; b < images; b++)
                for (int i = 0; i < 7; i++)
                    for (int j = 0; j < 7; j++)
                    {
                        if (m[b * 49 + i * 7 + j] == 0) continue;
                        removed++;
                        if (j < 6 && m[b * 49 + i * 7 + j + 1] == 1) pairs++;
                        if (i < 6 && m[b * 49 + (i + 1) * 7 + j] == 1) pairs++;
                    }
            return (double)pairs / removed;
        }
        var block = Masking.BlockwiseExact(64, 7, 7, 0.5, new Random(0), minBlock: 4);
        var random = Masking.Random(64, 49, 0.5, new Generator(0)).Mask;
        Assert.True(Neighbours(block) > Neighbours(random) + 0.2, $"block {Neighbours(block):F2} vs random {Neighbours(random):F2} removed neighbours per removed patch");
    }

    // ---- augmentation -----------------------------------------------------------------------------------------

    [Fact]
    public void The_fixed_crop_is_a_square_of_seven_eighths_of_the_side_at_a_random_position()
    {
        const int S = 64, B = 12;
        var ramp = arange(S).to_type(ScalarType.Float32) / S;   // column index / S, in [0, 1)
        var images = ramp.reshape(1, 1, 1, S).expand(B, 1, S, S).contiguous();
        var output = Augmentation.Of(AugmentKind.FixedCrop).Apply(images, new Random(5));
        var centres = new List<double>();
        for (int b = 0; b < B; b++)
        {
            var row = output[b, 0, 0].data<float>().ToArray();
            // Bilinear sampling of a ramp is exact: first and last output pixels are (S − 1)·side input pixels apart.
            double span = Math.Abs(row[^1] - row[0]) * S / (S - 1);
            Assert.InRange(span, 0.875 - 0.02, 0.875 + 0.02);
            centres.Add((row[^1] + row[0]) / 2);
        }
        Assert.True(centres.Max() - centres.Min() > 0.02, "the crop's position is drawn");
        Assert.True(Augmentation.Of(AugmentKind.None).Apply(images, new Random(0)).Same(images));
    }

    [Fact]
    public void Colour_jitter_scales_brightness_and_contrast_within_their_ranges_and_keeps_pixels_in_range()
    {
        // Constant grey images: contrast leaves a constant image alone, so the output is brightness·value exactly.
        var images = full(new long[] { 200, 1, 8, 8 }, 0.5f);
        var jitter = Augmentation.None with { Brightness = 0.4 };
        var output = jitter.Apply(images, new Random(1));
        var factors = (output[.., 0, 0, 0] / 0.5f).data<float>().ToArray();
        Assert.All(factors, f => Assert.InRange(f, 0.6 - 1e-5, 1.4 + 1e-5));
        Assert.True(factors.Max() - factors.Min() > 0.6, "brightness factors spread over their range");
        // Contrast around the mean: a two-level image keeps its mean and scales its spread by a factor in [0.6, 1.4].
        var twoLevel = cat(new[] { full(new long[] { 200, 1, 4, 8 }, 0.25f), full(new long[] { 200, 1, 4, 8 }, 0.75f) }, 2);
        var contrasted = (Augmentation.None with { Contrast = 0.4 }).Apply(twoLevel, new Random(2));
        Assert.True(contrasted.mean(new long[] { 1, 2, 3 }).allclose(full(new long[] { 200 }, 0.5f), atol: 1e-5));
        var spread = ((contrasted[.., 0, 7, 0] - contrasted[.., 0, 0, 0]) / 0.5f).data<float>().ToArray();
        Assert.All(spread, f => Assert.InRange(f, 0.6 - 1e-5, 1.4 + 1e-5));
        var jittered = Augmentation.Of(AugmentKind.CropJitter).Apply(rand(16, 1, 28, 28), new Random(3));
        Assert.InRange(jittered.min().item<float>(), 0, 1);
        Assert.InRange(jittered.max().item<float>(), 0, 1);
    }

    // ---- partial fine-tuning, training length --------------------------------------------------------------------

    [Fact]
    public void Partial_fine_tuning_changes_exactly_the_last_blocks_and_the_final_norm()
    {
        using var data = TestData.FashionMnist(512, 256);
        Compute.Seed(0);
        var vit = new VisionTransformer(ViTConfig.Tiny(28, 1) with { Dim = 32, Depth = 3, Heads = 2 });
        var before = vit.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        var result = FineTuning.Run(vit, data, Normalization.Of(data.Train), new FineTuneConfig(Epochs: 1, Blocks: 1, BatchSize: 128));
        foreach (var (name, value) in vit.state_dict())
        {
            bool trainable = name.StartsWith("blocks.2.") || name.StartsWith("norm.");
            bool unchanged = value.Same(before[name]);
            Assert.True(trainable != unchanged, $"{name}: {(unchanged ? "unchanged" : "changed")} but {(trainable ? "trainable" : "frozen")}");
        }
        long expected = vit.named_parameters().Where(p => p.name.StartsWith("blocks.2.") || p.name.StartsWith("norm.")).Sum(p => p.parameter.numel())
            + 32 * 10 + 10;   // the new linear head (its BatchNorm has no affine parameters)
        Assert.Equal(expected, result.TrainableParameters);
    }

    [Fact]
    public void A_run_evaluated_along_training_keeps_epoch_snapshots_and_fine_tunes_from_its_folder()
    {
        var work = TestData.TempDir();
        var method = Small();
        var experiment = new Experiment(method, new PretrainOptions(Epochs: 2, TrainLimit: 512, BatchSize: 128),
            new EvaluationOptions(ProbeTrain: 256, ProbeTest: 256, FineTuneEpochs: 0, PretextImages: 64));
        var results = Experiments.RunAlongTraining(experiment, [0, 1, 2], work);
        Assert.Equal(new[] { 0, 1, 2 }, results.Select(r => r.Epoch));
        var folder = Experiments.PretrainFolder(work);
        Assert.True(File.Exists(EpochSnapshots.PathOf(folder, 1)));
        Assert.True(File.Exists(EpochSnapshots.PathOf(folder, 2)));
        // The last snapshot is the final model; the first differs from it; epoch 0 is this run's initialisation.
        var final = Pretraining.Build(Pretraining.ReadConfig(folder).Method, 0);
        Trainer.LoadWeights(final.Module, Path.Combine(folder, Trainer.CheckpointFile));
        var last = Pretraining.Build(Pretraining.ReadConfig(folder).Method, 0);
        Trainer.LoadWeights(last.Module, EpochSnapshots.PathOf(folder, 2));
        var first = Pretraining.Build(Pretraining.ReadConfig(folder).Method, 0);
        Trainer.LoadWeights(first.Module, EpochSnapshots.PathOf(folder, 1));
        Assert.All(final.Module.state_dict(), kv => Assert.True(kv.Value.Same(last.Module.state_dict()[kv.Key]), kv.Key));
        Assert.Contains(final.Module.state_dict(), kv => !kv.Value.Same(first.Module.state_dict()[kv.Key]));
        var untrained = Experiments.Run(experiment with { Pretrain = experiment.Pretrain with { Epochs = 0 } }, TestData.TempDir());
        Assert.Equal(untrained.ProbeByLayer, results[0].Result.ProbeByLayer);
        Assert.True(double.IsNaN(results[0].TrainLoss));
        Assert.True(results[2].TrainLoss < results[1].TrainLoss, $"loss after 2 epochs {results[2].TrainLoss} vs 1 epoch {results[1].TrainLoss}");
        Assert.Throws<ResearchKitException>(() => Experiments.RunAlongTraining(experiment, [3], work));
        // Each snapshot's evaluations are kept in the run folder under its epoch.
        Assert.Equal(results[1].Result.Pretext["reconstruction_psnr"], MethodEvaluations.ReadScalars(folder, "epoch-1")["reconstruction_psnr"]);
        Assert.Equal(results[2].Result.Pretext["reconstruction_psnr"], MethodEvaluations.ReadScalars(folder, "epoch-2")["reconstruction_psnr"]);

        // Partial fine-tuning reads the same pre-trained run (no second pre-training: the folder's checkpoint is complete).
        var stamp = File.GetLastWriteTimeUtc(Path.Combine(folder, Trainer.CheckpointFile));
        var outcome = Experiments.FineTune(new FineTuneExperiment(experiment, Blocks: 1, Epochs: 1, TrainLimit: 512, TestLimit: 256), work);
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(Path.Combine(folder, Trainer.CheckpointFile)));
        Assert.InRange(outcome.Accuracy, 0.2, 1);   // 4 steps of the last block + head on 512 images; chance is 0.1
        Assert.True(outcome.TrainableParameters < final.Module.parameters().Sum(p => p.numel()));
    }

    // ---- the ablation study ------------------------------------------------------------------------------------

    [Fact]
    public void An_ablation_study_runs_each_variant_per_seed_shares_identical_runs_and_counts_the_papers_orderings()
    {
        var folder = TestData.TempDir();
        var method = Small();
        var settings = new AblationSettings("fashion-mnist", 1, 256, [0, 1], new EvaluationOptions(ProbeTrain: 256, ProbeTest: 256, FineTuneEpochs: 0, PretextImages: 32), Floor: method);
        var variants = new[]
        {
            new AblationVariant("pixel", method, PaperLinear: 73.5),
            new AblationVariant("norm-pixel", method with { Target = MaeTarget.NormPixel }, PaperLinear: 73.9),
            new AblationVariant("extra", method with { MaskRatio = 0.5 }),   // no paper number: left out of the orderings
        };
        var study = AblationStudy.Run("targets", "paper", variants, settings, folder);
        Assert.Equal(3, study.Groups.Count);
        Assert.All(study.Groups.Append(study.RandomInit), g => Assert.Equal(new[] { 0, 1 }, g.Runs.Select(r => r.Config.Pretrain.Seed)));
        Assert.Equal(0, study.RandomInit.Config.Pretrain.Epochs);
        Assert.InRange(study.RawPixels, 0.5, 1);
        Assert.Equal(5, study.Table().RowCount);   // three variants and two floors
        Assert.Contains("Of the 1 pairs the paper orders", study.Verdict("pixel"));
        Assert.Throws<ResearchKitException>(() => study.Verdict("nope"));

        // A second study with an identical variant reads its cached runs instead of training again.
        int files = Directory.GetFiles(folder, "*.json").Length;
        var again = AblationStudy.Run("again", "paper", [new AblationVariant("same pixel", method)], settings, folder);
        Assert.Equal(files, Directory.GetFiles(folder, "*.json").Length);
        Assert.Equal(study["pixel"].Runs.Select(r => r.Result.BestProbe), again.Groups[0].Runs.Select(r => r.Result.BestProbe));
        Assert.Equal(study.WorkFolder("pixel"), again.WorkFolder("same pixel"));
    }

    // ---- FLOPs ------------------------------------------------------------------------------------------------

    [Fact]
    public void Flops_follow_the_formula_worked_by_hand()
    {
        // One block, T = 3 tokens, D = 4, MLP ratio 4: projections 2·3·4·16 = 384, MLP 2·3·2·16·4 = 768, attention 4·9·4 = 144.
        Assert.Equal(384 + 768 + 144, TransformerBlock.Flops(3, 4));
        var config = Small();
        var visible = config.Flops();
        var withTokens = (config with { MaskTokenInEncoder = true }).Flops();
        Assert.Equal(1 + 12, visible.EncoderTokens);
        Assert.Equal(1 + 49, withTokens.EncoderTokens);
        // The encoder with mask tokens runs each block on 50 tokens instead of 13; the patch embedding is the same.
        double embed = 2.0 * 49 * 16 * 32;
        Assert.Equal(2 * TransformerBlock.Flops(13, 32) + embed, visible.Encoder, 3);
        Assert.Equal(2 * TransformerBlock.Flops(50, 32) + embed, withTokens.Encoder, 3);
        Assert.True(withTokens.Total / visible.Total > 2.5);
    }
}
