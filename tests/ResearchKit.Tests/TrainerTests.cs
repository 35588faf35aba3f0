using ResearchKit.Data;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

public class TrainerTests
{
    static MaeConfig Small => MaeConfig.Tiny(28, 1) with { Encoder = ViTConfig.Tiny(28, 1) with { Dim = 32, Depth = 2, Heads = 2 }, DecoderDim = 16, DecoderDepth = 1, DecoderHeads = 2 };

    static (MaskedAutoencoder Model, DataLoader Loader) Setup(ImageDataset data, int seed = 0, int batch = 16, int? initSeed = null)
    {
        Compute.Seed(initSeed ?? seed);
        var model = new MaskedAutoencoder(Small);
        var loader = new DataLoader(data, batch, Normalization.Of(data), shuffle: true, seed: seed, device: CPU);
        return (model, loader);
    }

    static Func<Batch, Generator, Tensor> Loss(MaskedAutoencoder m) => (b, g) => m.call(b.Images, g).Loss;

    static OptimizerConfig Lr(double baseLr) => new(BaseLearningRate: baseLr);

    [Fact]
    public void Warmup_cosine_schedule_matches_hand_values()
    {
        // 10 warmup steps to peak 1, then cosine to 0 over 90 steps.
        Assert.Equal(0.1, LearningRateSchedule.WarmupCosine(0, 100, 10, 1.0), 12);
        Assert.Equal(1.0, LearningRateSchedule.WarmupCosine(9, 100, 10, 1.0), 12);
        Assert.Equal(1.0, LearningRateSchedule.WarmupCosine(10, 100, 10, 1.0), 12);
        Assert.Equal(0.5, LearningRateSchedule.WarmupCosine(55, 100, 10, 1.0), 12);      // halfway: cos(π/2) = 0
        Assert.Equal(0.5 * (1 + Math.Cos(Math.PI / 3)), LearningRateSchedule.WarmupCosine(40, 100, 10, 1.0), 12);
        Assert.Equal(0.0, LearningRateSchedule.WarmupCosine(100, 100, 10, 1.0), 12);
    }

    [Fact]
    public void Live_tensor_count_stays_flat_over_20_steps()
    {
        using var data = TestData.Random(320);
        var (model, loader) = Setup(data);
        var counts = new List<long>();
        var trainer = new Trainer(new TrainConfig(Epochs: 1, BatchSize: 16, Lr(1e-3)));
        trainer.Fit(loader, model, Loss(model), new CallbackProgress<TrainProgress>(_ => counts.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount)));
        Assert.Equal(20, counts.Count);
        // Losses wait on the device until they are read every LogEvery (10) steps, so the count rises within a logging
        // window and falls at each read; at the reads (steps 10 and 20) it is the same: nothing accumulates.
        Assert.Equal(counts[9], counts[19]);
        Assert.True(counts.Skip(2).Max() <= counts[9] + 10, $"more live tensors than one window of losses: {string.Join(", ", counts)}");
    }

    [Fact]
    public void Training_is_deterministic_for_a_seed()
    {
        using var data = TestData.Random(96);
        double[] Run()
        {
            var (model, loader) = Setup(data, seed: 3);
            return new Trainer(new TrainConfig(Epochs: 2, BatchSize: 16, Lr(1e-3), Seed: 3)).Fit(loader, model, Loss(model)).Losses.ToArray();
        }
        Assert.Equal(Run(), Run());
    }

    [Fact]
    public void Resume_reproduces_the_uninterrupted_loss_curve()
    {
        using var data = TestData.Random(96);
        var config = new TrainConfig(Epochs: 3, BatchSize: 16, Lr(1e-3), Seed: 1, CheckpointEvery: 4);

        var (model, loader) = Setup(data, seed: 1);
        var full = new Trainer(config).Fit(loader, model, Loss(model)).Losses;

        // Interrupted run: stop (by cancellation) after 10 of 18 steps, then resume in a fresh model.
        var dir = TestData.TempDir();
        var (first, loader1) = Setup(data, seed: 1);
        using var cancel = new CancellationTokenSource();
        var interrupted = new Trainer(config, dir);
        var saved = new RecordingCallback();
        interrupted.Callbacks.Add(saved);
        Assert.Throws<OperationCanceledException>(() => interrupted.Fit(loader1, first, Loss(first),
            new CallbackProgress<TrainProgress>(p => { if (p.Step == 10) cancel.Cancel(); }), cancel.Token));
        // Checkpoints every 4 steps and at the epoch end (6), then one where cancellation stopped it (10): no step is lost.
        Assert.Equal(new long[] { 4, 6, 8, 10 }, saved.Checkpoints);
        var (second, loader2) = Setup(data, seed: 1, initSeed: 99);   // different init: the checkpoint must overwrite it
        var resumed = new Trainer(config, dir).Fit(loader2, second, Loss(second));

        Assert.True(resumed.Resumed);
        Assert.Equal(full.Count, resumed.Losses.Count);
        for (int i = 0; i < full.Count; i++) Assert.Equal(full[i], resumed.Losses[i], 6);
        // metrics.jsonl holds one curve: no step logged twice.
        var steps = File.ReadAllLines(Path.Combine(dir, Trainer.MetricsFile)).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64()).ToList();
        Assert.Equal(steps.Distinct().Count(), steps.Count);
        Assert.Equal(18, steps[^1]);
    }

    [Fact]
    public void A_run_folder_refuses_other_settings_naming_the_setting_and_resumes_with_more_epochs()
    {
        using var data = TestData.Random(64);
        var dir = TestData.TempDir();
        var options = new PretrainOptions(Epochs: 1, BatchSize: 16);
        Pretraining.Run(Small, options, data, dir);
        var e = Assert.Throws<ResearchKitException>(() => Pretraining.Run(Small with { MaskRatio = 0.5 }, options, data, dir));
        Assert.Contains("holds a run with other settings (method.maskRatio: 0.75 before, 0.5 now)", e.Message);
        e = Assert.Throws<ResearchKitException>(() => Pretraining.Run(Small, options with { Seed = 3 }, data, dir));
        Assert.Contains("train.seed: 0 before, 3 now", e.Message);
        Assert.Equal(0.75, ((MaeConfig)Pretraining.ReadConfig(dir).Method).MaskRatio);   // the refused settings were not written
        var more = Pretraining.Run(Small, options with { Epochs = 2 }, data, dir);
        Assert.True(more.Result.Resumed);
        Assert.Equal(8, more.Result.Losses.Count);

        // Fewer epochs than are done: refused, and config.json keeps the settings the checkpoint was trained with.
        e = Assert.Throws<ResearchKitException>(() => Pretraining.Run(Small, options, data, dir));
        Assert.Contains("holds 8 trained steps, more than the 4 of --epochs 1", e.Message);
        Assert.Equal(2, Pretraining.ReadConfig(dir).Train.Epochs);

        // A run killed before its first checkpoint left metrics: other settings are refused all the same.
        File.Delete(Path.Combine(dir, Trainer.CheckpointFile));
        e = Assert.Throws<ResearchKitException>(() => Pretraining.Run(Small with { MaskRatio = 0.5 }, options with { Epochs = 2 }, data, dir));
        Assert.Contains("method.maskRatio: 0.75 before, 0.5 now", e.Message);
    }

    [Fact]
    public void One_process_trains_in_a_run_folder_and_orphaned_temporary_files_are_removed()
    {
        using var data = TestData.Random(32);
        var dir = TestData.TempDir();
        var orphan = Path.Combine(dir, ".checkpoint.bin.2147483000.0123456789abcdef.tmp");   // what a write killed mid-way leaves (no such PID)
        File.WriteAllText(orphan, "half a checkpoint");
        var live = Path.Combine(dir, $".metrics.jsonl.{Environment.ProcessId}.0123456789abcdef.tmp");   // a write in progress in a live process
        File.WriteAllText(live, "");
        using (var held = RunLock.Acquire(dir))
        {
            Assert.False(File.Exists(orphan));
            Assert.True(File.Exists(live));
            File.Delete(live);
            var e = Assert.Throws<ResearchKitException>(() => Pretraining.Run(Small, new PretrainOptions(Epochs: 1, BatchSize: 16), data, dir));
            Assert.Contains("another process is training in this folder", e.Message);
            Assert.False(File.Exists(Path.Combine(dir, Pretraining.ConfigFile)));
        }
        Assert.Equal(2, Pretraining.Run(Small, new PretrainOptions(Epochs: 1, BatchSize: 16), data, dir).Result.Steps);   // free again
    }

    [Fact]
    public void Metrics_of_a_run_killed_before_its_first_checkpoint_are_not_mixed_into_the_rerun()
    {
        using var data = TestData.Random(64);
        var dir = TestData.TempDir();
        // What a run killed after logging step 1 but before any checkpoint leaves behind.
        File.WriteAllText(Path.Combine(dir, Trainer.MetricsFile), "{\"epoch\":0,\"step\":1,\"loss\":9.9,\"lr\":0.1}\n{\"epoch\":0,\"step\":2,\"lo");
        var (model, loader) = Setup(data);
        new Trainer(new TrainConfig(Epochs: 1, BatchSize: 16, Lr(1e-3), LogEvery: 1), dir).Fit(loader, model, Loss(model));
        var metrics = Trainer.ReadMetrics(dir);
        Assert.Equal(new long[] { 1, 2, 3, 4 }, metrics.Select(m => m.Step));
        Assert.DoesNotContain(metrics, m => m.Loss == 9.9);
    }

    [Fact]
    public void Checkpoint_round_trip_gives_identical_outputs()
    {
        using var data = TestData.Random(64);
        var dir = TestData.TempDir();
        var (model, loader) = Setup(data);
        new Trainer(new TrainConfig(Epochs: 1, BatchSize: 16, Lr(1e-3)), dir).Fit(loader, model, Loss(model));
        Assert.False(Directory.GetFiles(dir, "*.tmp").Any());

        Compute.Seed(42);
        var restored = new MaskedAutoencoder(Small);
        Trainer.LoadWeights(restored, Path.Combine(dir, Trainer.CheckpointFile));
        model.eval(); restored.eval();
        var x = randn(2, 1, 28, 28);
        using var g1 = new Generator(8);
        using var g2 = new Generator(8);
        Assert.True(model.call(x, g1).Prediction.Same(restored.call(x, g2).Prediction));
    }

    [Fact]
    public void A_non_finite_loss_stops_training_with_a_clear_message()
    {
        using var data = TestData.Random(64);
        var (model, loader) = Setup(data);
        var e = Assert.Throws<TrainingDivergedException>(() =>
            new Trainer(new TrainConfig(Epochs: 1, BatchSize: 16)).Fit(loader, model, (b, g) => model.call(b.Images, g).Loss * float.NaN));
        Assert.Contains("NaN at step 0", e.Message);
        Assert.Contains("learning rate", e.Message);
    }

    [Fact]
    public void Damaged_truncated_or_non_finite_checkpoints_are_refused_naming_the_file_and_the_tensor()
    {
        using var data = TestData.Random(64);
        var dir = TestData.TempDir();
        var (model, loader) = Setup(data);
        var config = new TrainConfig(Epochs: 1, BatchSize: 16, Lr(1e-3));
        new Trainer(config, dir).Fit(loader, model, Loss(model));
        var path = Path.Combine(dir, Trainer.CheckpointFile);
        var intact = File.ReadAllBytes(path);
        long weightsStart;
        using (var reader = new BinaryReader(new MemoryStream(intact))) { reader.ReadString(); reader.ReadString(); weightsStart = reader.BaseStream.Position; }

        // 4,000 bytes overwritten inside the weights (the probe once scored chance on such a file, exit 0): refused.
        var damaged = (byte[])intact.Clone();
        for (long i = weightsStart + 2000; i < weightsStart + 6000; i++) damaged[i] ^= 0x5A;
        File.WriteAllBytes(path, damaged);
        var e = Assert.Throws<DataFormatException>(() => Trainer.LoadWeights(new MaskedAutoencoder(Small), path));
        Assert.Contains(path, e.Message);
        // A few bytes in the middle of the weights' values: the error names the tensor.
        long weightBytes = model.state_dict().Values.Sum(t => t.numel() * 4);
        damaged = (byte[])intact.Clone();
        for (long i = weightsStart + weightBytes / 2; i < weightsStart + weightBytes / 2 + 16; i++) damaged[i] ^= 0x5A;
        File.WriteAllBytes(path, damaged);
        e = Assert.Throws<DataFormatException>(() => Trainer.LoadWeights(new MaskedAutoencoder(Small), path));
        Assert.True(System.Text.RegularExpressions.Regex.IsMatch(e.Message, "weight tensor '[a-zA-Z0-9_.]+' is damaged"), e.Message);

        File.WriteAllBytes(path, intact[..(int)(weightsStart + 1000)]);
        e = Assert.Throws<DataFormatException>(() => Trainer.LoadWeights(new MaskedAutoencoder(Small), path));
        Assert.Contains("truncated", e.Message);

        // Damage after the weights (optimizer state): probing may use the intact weights; resuming is refused.
        damaged = (byte[])intact.Clone();
        damaged[^100] ^= 0x5A;
        File.WriteAllBytes(path, damaged);
        Trainer.LoadWeights(new MaskedAutoencoder(Small), path);
        var (resumed, loader2) = Setup(data);
        e = Assert.Throws<DataFormatException>(() => new Trainer(config with { Epochs = 2 }, dir).Fit(loader2, resumed, Loss(resumed)));
        Assert.Contains("optimizer or method state", e.Message);

        // A checkpoint whose weights are not finite (checksums match: it was saved so).
        Compute.Seed(0);
        var broken = new MaskedAutoencoder(Small);
        using (no_grad()) broken.parameters().First().fill_(float.NaN);
        var store = new CheckpointStore(TestData.TempDir());
        store.Save(1, config, broken, new SingleLoss(broken, Loss(broken)).Phases(), [], null, new() { ["loss"] = [1.0] });
        e = Assert.Throws<DataFormatException>(() => Trainer.LoadWeights(new MaskedAutoencoder(Small), store.Path));
        Assert.Contains("holds NaN or infinite values", e.Message);
    }

    [Fact]
    public void A_corrupt_checkpoint_is_reported_with_its_path()
    {
        var dir = TestData.TempDir();
        var path = Path.Combine(dir, Trainer.CheckpointFile);
        File.WriteAllBytes(path, [1, 2, 3]);
        var e = Assert.Throws<DataFormatException>(() => Trainer.LoadWeights(new MaskedAutoencoder(Small), path));
        Assert.Contains(path, e.Message);
    }
}

/// <summary>Records what the trainer's callbacks saw.</summary>
sealed class RecordingCallback : ITrainerCallback
{
    public List<long> Checkpoints { get; } = [];
    public List<(int Epoch, long Step)> Epochs { get; } = [];
    public List<long> Steps { get; } = [];
    public void OnCheckpoint(long step, string path) => Checkpoints.Add(step);
    public void OnEpochEnd(int epoch, long step) => Epochs.Add((epoch, step));
    public void OnStepEnd(TrainProgress progress) => Steps.Add(progress.Step);
}
