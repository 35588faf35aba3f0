using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using DataLoader = ResearchKit.Data.DataLoader;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Tests;

/// <summary>
/// A small adversarial pair shaped like a GAN with a replay buffer (SSGAN, JEM): a critic stepped every step with
/// AdamW, a generator stepped every second step with SGD, and a buffer of generated images plus a counter that must
/// survive a resume exactly.
/// </summary>
sealed class ToyAdversary : Module<Tensor, Tensor>, ITrainable, ICheckpointState
{
    public const int BufferSize = 12, Noise = 8;
    readonly Linear critic, generator;
    public Tensor Buffer { get; }
    public long Written { get; private set; }

    public ToyAdversary() : base(nameof(ToyAdversary))
    {
        critic = Linear(28 * 28, 1);
        generator = Linear(Noise, 28 * 28);
        RegisterComponents();
        Buffer = zeros(BufferSize, 28 * 28);   // method state, not a weight: checkpointed through ICheckpointState
    }

    public override Tensor forward(Tensor images) => critic.call(images.flatten(1));

    public nn.Module Module => this;
    public ICheckpointState State => this;

    Tensor Fake(long count, Generator g) => generator.call(randn(new[] { count, (long)Noise }, generator: g)).tanh();

    public IReadOnlyList<UpdatePhase> Phases() =>
    [
        new UpdatePhase("critic", (batch, g) =>
        {
            var fake = Fake(batch.Size, g).detach();
            var loss = functional.softplus(-forward(batch.Images)).mean() + functional.softplus(critic.call(cat(new[] { fake, Buffer }, 0))).mean();
            using (no_grad())
            {
                // Replay: the newest 4 fakes overwrite the oldest slots, as a persistent SGLD/replay buffer does.
                var slots = arange(Written, Written + 4, dtype: ScalarType.Int64).remainder(BufferSize);
                Buffer.index_copy_(0, slots, fake[..4]);
            }
            Written += 4;
            return loss;
        }, critic.named_parameters().Select(p => ("critic." + p.name, p.parameter)).ToList(), new OptimizerConfig(BaseLearningRate: 1e-2)),
        new UpdatePhase("generator", (batch, g) => functional.softplus(-critic.call(Fake(batch.Size, g))).mean(),
            generator.named_parameters().Select(p => ("generator." + p.name, p.parameter)).ToList(),
            new OptimizerConfig(OptimizerKind.Sgd, BaseLearningRate: 0.5, WeightDecay: 0, WarmupFraction: 0), Every: 2),
    ];

    public void Save(BinaryWriter writer)
    {
        TensorIO.Write(writer, Buffer);
        writer.Write(Written);
    }

    public void Load(BinaryReader reader)
    {
        using (no_grad()) Buffer.copy_(TensorIO.Read(reader));
        Written = reader.ReadInt64();
    }
}

public class GeneralTrainerTests
{
    static (ToyAdversary Model, DataLoader Loader) Setup(ImageDataset data, int initSeed = 0)
    {
        Compute.Seed(initSeed);
        return (new ToyAdversary(), new DataLoader(data, 16, Normalization.Of(data), seed: 2, device: CPU));
    }

    [Fact]
    public void Two_optimizers_alternate_and_their_curves_and_extra_state_survive_a_resume()
    {
        using var data = TestData.Random(96);
        var config = new TrainConfig(Epochs: 3, BatchSize: 16, Seed: 2, CheckpointEvery: 5, LogEvery: 1);
        var (model, loader) = Setup(data);
        var full = new Trainer(config).Fit(loader, model);
        Assert.Equal(18, full.PhaseLosses!["critic"].Count);
        Assert.Equal(9, full.PhaseLosses["generator"].Count);             // every second step: 0, 2, …, 16
        Assert.Equal(full.PhaseLosses["critic"], full.Losses);             // the first phase is the main loss
        Assert.Equal(18 * 4, model.Written);

        var dir = TestData.TempDir();
        var (first, loader1) = Setup(data);
        using var cancel = new CancellationTokenSource();
        Assert.Throws<OperationCanceledException>(() => new Trainer(config, dir).Fit(loader1, first,
            new CallbackProgress<TrainProgress>(p => { if (p.Step == 7) cancel.Cancel(); }), cancel.Token));
        var (second, loader2) = Setup(data, initSeed: 5);                  // other weights and an empty buffer: the checkpoint restores them
        var resumed = new Trainer(config, dir).Fit(loader2, second);

        Assert.True(resumed.Resumed);
        Assert.Equal(full.PhaseLosses["critic"], resumed.PhaseLosses!["critic"]);
        Assert.Equal(full.PhaseLosses["generator"], resumed.PhaseLosses["generator"]);
        Assert.Equal(model.Written, second.Written);
        Assert.True(model.Buffer.Same(second.Buffer), "the replay buffer after resuming differs from the uninterrupted run's");

        // Both phases' losses are logged, and each step once.
        var metrics = Trainer.ReadMetrics(dir);
        Assert.Equal(Enumerable.Range(1, 18).Select(i => (long)i), metrics.Select(m => m.Step));
        Assert.All(metrics, m => Assert.Equal(new[] { "critic", "generator" }, m.Losses!.Keys.Order()));
    }

    [Fact]
    public void A_two_phase_method_keeps_memory_flat()
    {
        using var data = TestData.Random(320);
        var (model, loader) = Setup(data);
        var counts = new List<long>();
        new Trainer(new TrainConfig(Epochs: 1, BatchSize: 16)).Fit(loader, model,
            new CallbackProgress<TrainProgress>(_ => counts.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount)));
        Assert.Equal(20, counts.Count);
        // Both optimizers have their state after step 2. Each phase's loss waits on the device until the losses are read
        // every LogEvery (10) steps, so the count rises within a window and falls at each read: at the reads it is equal.
        Assert.Equal(counts[9], counts[19]);
        Assert.True(counts.Skip(3).Max() <= counts[9] + 2 * 10, $"more live tensors than one window of losses: {string.Join(", ", counts)}");
    }

    [Fact]
    public void Callbacks_see_every_step_epoch_and_checkpoint()
    {
        using var data = TestData.Random(64);
        var (model, loader) = Setup(data);
        var trainer = new Trainer(new TrainConfig(Epochs: 2, BatchSize: 16, CheckpointEvery: 3), TestData.TempDir());
        var seen = new RecordingCallback();
        trainer.Callbacks.Add(seen);
        trainer.Fit(loader, model);
        Assert.Equal(Enumerable.Range(1, 8).Select(i => (long)i), seen.Steps);
        Assert.Equal(new[] { (0, 4L), (1, 8L) }, seen.Epochs);
        Assert.Equal(new long[] { 3, 4, 6, 8 }, seen.Checkpoints);        // every 3 steps and at each epoch's end
    }

    /// <summary>A module with a matrix, a bias and a token, to see which parameters an optimizer decays.</summary>
    sealed class Decayable : Module<Tensor, Tensor>
    {
        public readonly Linear layer = Linear(3, 2);
        public readonly Parameter clsToken = Parameter(ones(1, 1, 3));
        public Decayable() : base(nameof(Decayable)) => RegisterComponents();
        public override Tensor forward(Tensor x) => layer.call(x) * 0 + clsToken.sum() * 0;   // zero gradients: only decay moves weights
    }

    [Fact]
    public void AdamW_decays_matrices_and_tokens_but_not_one_dimensional_parameters_or_exempted_names()
    {
        double lr = 0.1, decay = 0.5;
        var optimizer = new OptimizerConfig(BaseLearningRate: lr, WeightDecay: decay, WarmupFraction: 0);
        foreach (var exemptToken in new[] { false, true })
        {
            manual_seed(0);
            var m = new Decayable();
            var (w, b, t) = (m.layer.weight!.detach().clone(), m.layer.bias!.detach().clone(), m.clsToken.detach().clone());
            var adamw = optimizer.Create(UpdatePhase.TrainableOf(m), 256, exemptToken ? n => n == "clsToken" : null);
            m.call(ones(1, 3)).sum().backward();
            adamw.Step();
            // Decoupled decay with zero gradient: p ← p − lr·wd·p (Loshchilov & Hutter, 2019), Adam's own step is 0.
            Assert.True(m.layer.weight!.allclose(w * (1 - lr * decay), atol: 1e-7), "a matrix is decayed");
            Assert.True(m.layer.bias!.Same(b), "a bias (1-D) is not decayed");
            Assert.True(m.clsToken.allclose(exemptToken ? t : t * (1 - lr * decay), atol: 1e-7), exemptToken ? "an exempted name is not decayed" : "a token is decayed by default");
        }
    }

    [Fact]
    public void Gradient_clipping_bounds_the_update()
    {
        using var data = TestData.Random(16);                               // one step of 16
        manual_seed(0);
        var m = new Decayable();
        var before = m.layer.weight!.detach().clone();
        var loader = new DataLoader(data, 16, Normalization.Of(data), shuffle: false, device: CPU);
        var sgd = new OptimizerConfig(OptimizerKind.Sgd, BaseLearningRate: 0.256, WeightDecay: 0, Momentum: 0, WarmupFraction: 0);
        // A huge gradient (1000 per weight: norm 1000·√6) clipped to norm 1; plain SGD then moves the weights by lr·1,
        // with lr = 0.256 · 16/256 = 0.016 at the first step.
        new Trainer(new TrainConfig(Epochs: 1, BatchSize: 16, sgd, ClipGradNorm: 1.0)).Fit(loader, m.layer, (_, _) => (m.layer.weight! * 1000).sum());
        Assert.Equal(0.016, (m.layer.weight!.detach() - before).norm().item<float>(), 5);
    }

    [Fact]
    public void A_non_finite_loss_in_any_phase_stops_training_naming_the_phase()
    {
        using var data = TestData.Random(32);
        var (model, loader) = Setup(data);
        var phases = model.Phases();
        var broken = new UpdatePhase("generator", (b, g) => phases[1].Loss(b, g) * float.PositiveInfinity, phases[1].Parameters);
        var trainable = new TwoPhases(model, [phases[0], broken]);
        var e = Assert.Throws<TrainingDivergedException>(() => new Trainer(new TrainConfig(Epochs: 1, BatchSize: 16)).Fit(loader, trainable));
        Assert.StartsWith("phase 'generator': loss became ∞ at step 0", e.Message.Replace("Infinity", "∞"));
        var duplicate = new TwoPhases(model, [phases[0], phases[0]]);
        Assert.Contains("distinct names", Assert.Throws<ResearchKitException>(() => new Trainer(new TrainConfig(Epochs: 1, BatchSize: 16)).Fit(loader, duplicate)).Message);
    }

    [Fact]
    public void A_phase_computes_no_gradients_for_the_parameters_only_other_phases_train_and_gives_them_back()
    {
        using var data = TestData.Random(32);
        var (model, loader) = Setup(data);
        var phases = model.Phases();
        var (critic, generator) = (phases[0].Parameters.Select(p => p.Parameter).ToList(), phases[1].Parameters.Select(p => p.Parameter).ToList());
        var seen = new List<(string Phase, bool CriticTracked, bool GeneratorTracked)>();
        UpdatePhase Watched(UpdatePhase phase) => phase with
        {
            Loss = (b, g) =>
            {
                seen.Add((phase.Name, critic.All(p => p.requires_grad), generator.All(p => p.requires_grad)));
                return phase.Loss(b, g);
            },
        };
        new Trainer(new TrainConfig(Epochs: 1, BatchSize: 16)).Fit(loader, new TwoPhases(model, [.. phases.Select(Watched)]));

        // 2 steps: the critic both times, the generator (every 2nd step) once; the loss passes through the critic.
        Assert.Equal([("critic", true, false), ("generator", false, true), ("critic", true, false)], seen);
        Assert.All(critic.Concat(generator), p => Assert.True(p.requires_grad));
    }

    /// <summary>
    /// One weight pulled to 1; its loss "diverges" from its <see cref="DivergesFrom"/>-th call on (× 10⁶, or NaN) until a
    /// restart sets a smaller scale — the shape of JEM's recovery (<see cref="IDivergenceRecovery"/>).
    /// </summary>
    sealed class Fragile : Module<Tensor, Tensor>, ITrainable, IDivergenceRecovery
    {
        readonly bool curable, stops;
        readonly double? bound;
        readonly int divergesFrom;

        public Fragile(bool curable, double? bound, int divergesFrom = DivergesFrom, bool stops = false) : base(nameof(Fragile))
        {
            (this.curable, this.bound, this.divergesFrom, this.stops) = (curable, bound, divergesFrom, stops);
            Weight = Parameter(zeros(1));
            RegisterComponents();   // the weight is checkpointed, so a restart really goes back to it
        }

        public bool StopsWhenExhausted => stops;
        public int CheckpointEvery { get; init; } = int.MaxValue;
        public const int DivergesFrom = 5;
        public readonly Parameter Weight;
        public int Calls;
        public double Scale = 1;
        public List<int> Restarts { get; } = [];
        public override Tensor forward(Tensor x) => Weight;
        public nn.Module Module => this;
        public IDivergenceRecovery Recovery => this;
        public int MaxRestarts => 1;
        public double LearningRateFactor => Scale;

        public string AfterRestarts(int restarts)
        {
            Restarts.Add(restarts);
            Scale = Math.Pow(0.5, restarts);
            return $"scale {Scale}";
        }

        public IReadOnlyList<UpdatePhase> Phases() => [new UpdatePhase("loss", (_, _) =>
        {
            var loss = (Weight - 1).square().sum() * Scale;
            bool broken = Calls++ >= divergesFrom && (Scale == 1 || !curable);
            return broken ? loss * (bound is null ? double.NaN : 1e6) + (bound is null ? 0 : 1e6) : loss;
        }, [("weight", Weight)], DivergesAbove: bound)];
    }

    [Fact]
    public void A_run_that_diverges_restarts_from_its_last_good_checkpoint_records_the_event_and_finishes()
    {
        using var data = TestData.Random(32);
        var loader = new DataLoader(data, 4, Normalization.Of(data), shuffle: false, device: CPU);
        var dir = TestData.TempDir();
        var model = new Fragile(curable: true, bound: 1e3);
        var config = new TrainConfig(Epochs: 1, BatchSize: 4, LogEvery: 1, CheckpointEvery: 4);
        var result = new Trainer(config, dir).Fit(loader, model);
        // Step 5's loss (beyond the bound of 10³) is caught when read; the checkpoint after 4 steps is the last good one.
        var events = DivergenceLog.Read(dir);
        var only = Assert.Single(events);
        Assert.Equal((Fragile.DivergesFrom, "loss", 4L, 1, "scale 0.5"), (only.Step, only.Phase, only.RestartedFrom, only.Restart, only.Action));
        Assert.True(only.Loss > 1e6, $"the recorded loss {only.Loss} is not the diverged one");
        Assert.Equal(events, result.Divergences);
        Assert.Equal(8, result.Steps);
        Assert.Equal(8, result.Losses.Count);
        Assert.All(result.Losses, l => Assert.True(l < 1e3, $"a loss {l} from before the restart stayed in the curve"));
        Assert.Equal([0, 1, 1], model.Restarts);   // at the start, for the event's record, and after reloading the checkpoint
        Assert.Equal(result.Losses, Trainer.ReadMetrics(dir).Select(m => m.Loss));   // the log holds one curve, not the abandoned one
        Assert.False(result.Resumed);
        // The restarted steps train at the scheduled rate times the method's factor (0.5 here), the steps before at the rate itself.
        var reference = TestData.TempDir();
        new Trainer(config, reference).Fit(loader, new Fragile(curable: true, bound: 1e3, divergesFrom: int.MaxValue));
        var expected = Trainer.ReadMetrics(reference).Select(m => m.Step <= 4 ? m.Lr : m.Lr * 0.5);
        Assert.Equal(expected, Trainer.ReadMetrics(dir).Select(m => m.Lr));
        // A later resume of the same folder starts with the restart's setting.
        var again = new Fragile(curable: true, bound: 1e3);
        new Trainer(config with { Epochs = 2 }, dir).Fit(loader, again);
        Assert.Equal(1, again.Restarts[0]);
        // A method may ask for checkpoints more often than the run's setting: it then restarts from the step it asked for.
        var often = TestData.TempDir();
        new Trainer(config with { CheckpointEvery = 1000 }, often).Fit(loader, new Fragile(curable: true, bound: 1e3) { CheckpointEvery = 3 });
        Assert.Equal(3L, Assert.Single(DivergenceLog.Read(often)).RestartedFrom);
        var rarely = TestData.TempDir();
        new Trainer(config with { CheckpointEvery = 1000 }, rarely).Fit(loader, new Fragile(curable: true, bound: 1e3));
        Assert.Equal(0L, Assert.Single(DivergenceLog.Read(rarely)).RestartedFrom);   // the step-0 checkpoint
    }

    [Fact]
    public void A_run_that_keeps_diverging_stops_after_its_restarts_and_without_recovery_or_a_folder_stops_at_once()
    {
        using var data = TestData.Random(32);
        var loader = new DataLoader(data, 4, Normalization.Of(data), shuffle: false, device: CPU);
        var config = new TrainConfig(Epochs: 1, BatchSize: 4, LogEvery: 1, CheckpointEvery: 4);
        var dir = TestData.TempDir();
        var e = Assert.Throws<TrainingDivergedException>(() => new Trainer(config, dir).Fit(loader, new Fragile(curable: false, bound: null)));
        // First at step 5; after the restart from the checkpoint of step 4 it diverges again at once, and that stops it.
        Assert.StartsWith("loss became NaN at step 4", e.Message);
        Assert.EndsWith($"it still diverged after 1 restart(s) ({Path.Combine(dir, DivergenceLog.FileName)})", e.Message);
        Assert.Single(DivergenceLog.Read(dir));
        Assert.Equal(4, CheckpointStore.SavedStep(Path.Combine(dir, Trainer.CheckpointFile)));   // the good checkpoint is kept
        // A method that stops when its restarts are spent ends at the last good checkpoint instead, and trains no further later.
        var stopDir = TestData.TempDir();
        var stopping = new Fragile(curable: false, bound: null, stops: true);
        var stopped = new Trainer(config, stopDir).Fit(loader, stopping);
        Assert.Equal((4L, 4), (stopped.Steps, stopped.Losses.Count));
        Assert.Equal([false, true], stopped.Divergences!.Select(d => d.Stopped));
        Assert.Equal("stopped: training ends at the last good checkpoint (step 4)", stopped.Divergences![^1].Action);
        Assert.Equal(stopped.Losses, Trainer.ReadMetrics(stopDir).Select(m => m.Loss));
        var weight = stopping.Weight.detach().clone();
        using (var saved = new Fragile(curable: false, bound: null, stops: true))
        {
            var again = new Trainer(config with { Epochs = 2 }, stopDir).Fit(loader, saved);
            Assert.Equal((4L, 0), (again.Steps, saved.Calls));                    // no step ran
            Assert.True(saved.Weight.detach().Same(weight), "the stopped run's weights are not the last good checkpoint's");
        }
        // In memory there is no checkpoint to go back to: the first divergence stops the run.
        var memory = new Fragile(curable: true, bound: null);
        Assert.Throws<TrainingDivergedException>(() => new Trainer(config).Fit(loader, memory));
        Assert.Empty(memory.Restarts);
    }

    sealed class TwoPhases(nn.Module module, IReadOnlyList<UpdatePhase> phases) : ITrainable
    {
        public nn.Module Module => module;
        public IReadOnlyList<UpdatePhase> Phases() => phases;
    }

    [Fact]
    public void Precise_batch_norm_replaces_the_running_statistics_by_the_plain_average_over_batches()
    {
        using var data = TestData.Random(64, size: 4);
        manual_seed(0);
        var norm = BatchNorm2d(1);
        var model = Sequential(norm);
        var loader = new DataLoader(data, 16, Normalization.Of(data), shuffle: false, device: CPU);
        PreciseBatchNorm.Recompute(model, loader);
        // Four equal batches: the running mean is the mean of their means (= the overall mean), the running variance
        // the mean of their unbiased variances (BatchNorm's running estimate), computed here by hand.
        var batches = Enumerable.Range(0, 4).Select(i => loader.Load(loader.Epoch(0).ElementAt(i)).Images).ToList();
        double mean = batches.Average(b => b.mean().item<float>());
        double variance = batches.Average(b => b.var().item<float>());
        Assert.Equal(mean, norm.running_mean!.item<float>(), 5);
        Assert.Equal(variance, norm.running_var!.item<float>(), 4);
        Assert.False(model.training);
    }

    [SkippableFact]
    public void The_thread_policy_sees_a_busy_process_and_never_goes_below_one_thread()
    {
        // The policy reads /proc/stat; elsewhere it keeps the fixed count, and this test reports itself skipped, not passed.
        Skip.IfNot(OperatingSystem.IsLinux() && File.Exists("/proc/stat"), "the adaptive thread policy reads /proc/stat (Linux only)");
        int before = get_num_threads();
        using var busy = System.Diagnostics.Process.Start("/bin/sh", ["-c", "while :; do :; done"])!;
        try
        {
            Thread.Sleep(300);
            var policy = new ThreadPolicy(adaptive: true);
            double load = policy.OthersLoad();
            Assert.InRange(load, 0.6, Environment.ProcessorCount);       // a busy loop uses about one core
            int chosen = policy.Choose();
            Assert.InRange(chosen, 1, before);
            Assert.Equal(chosen, get_num_threads());
        }
        finally
        {
            busy.Kill();
            set_num_threads(before);
        }
    }
}
