using ResearchKit.Data;
using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using DataLoader = ResearchKit.Data.DataLoader;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Tests;

/// <summary>
/// Two stages in sequence, shaped like Go-Wide-Then-Narrow: a wide regressor trained in the first half of the run with
/// a step schedule, then a narrow one in the second half with a constant, unscaled rate (a GAN-style recipe).
/// </summary>
sealed class TwoStages : Module<Tensor, Tensor>, ITrainable
{
    public readonly Linear wide, narrow;
    public int Begins;   // how often the narrow stage's Begin ran in this process

    public TwoStages() : base(nameof(TwoStages))
    {
        wide = Linear(28 * 28, 10);
        narrow = Linear(28 * 28, 10);
        RegisterComponents();
    }

    public override Tensor forward(Tensor images) => narrow.call(images.flatten(1));

    public nn.Module Module => this;

    static Tensor Loss(Linear layer, Batch batch) => functional.cross_entropy(layer.call(batch.Images.flatten(1)), batch.Labels);

    public IReadOnlyList<UpdatePhase> Phases() =>
    [
        new UpdatePhase("wide", (b, _) => Loss(wide, b), UpdatePhase.TrainableOf(wide),
            new OptimizerConfig(OptimizerKind.Sgd, BaseLearningRate: 0.4, WeightDecay: 0, WarmupFraction: 0.2) { Schedule = ScheduleConfig.Step(0.5, 0.5) },
            Window: StepWindow.Fraction(0, 0.5)),
        new UpdatePhase("narrow", (b, _) => Loss(narrow, b), UpdatePhase.TrainableOf(narrow),
            new OptimizerConfig(BaseLearningRate: 1e-3, WarmupFraction: 0) { Schedule = ScheduleConfig.Constant, AbsoluteLearningRate = true },
            Window: StepWindow.Steps(10, 20), Begin: StartFromWide),
    ];

    /// <summary>The narrow stage starts from what the wide one trained, as GWTN's fine-tuning starts from its folded maps.</summary>
    void StartFromWide()
    {
        Begins++;
        using var _ = no_grad();
        narrow.weight!.copy_(wide.weight!);
        narrow.bias!.copy_(wide.bias!);
    }
}

public class ScheduleTests
{
    [Fact]
    public void Constant_and_step_schedules_follow_their_definitions_after_the_same_warmup()
    {
        // Warmup: (step + 1)/warmup of the peak, whatever the schedule.
        Assert.Equal(0.1, LearningRateSchedule.At(ScheduleConfig.Constant, 0, 100, 10, 1.0), 12);
        Assert.Equal(1.0, LearningRateSchedule.At(ScheduleConfig.Constant, 9, 100, 10, 1.0), 12);
        Assert.Equal(1.0, LearningRateSchedule.At(ScheduleConfig.Constant, 99, 100, 10, 1.0), 12);
        // Step: ×0.1 at 30% and again at 60% of the steps (RotNet's recipe shape), counted from the phase's start.
        var step = ScheduleConfig.Step(0.1, 0.3, 0.6);
        Assert.Equal(2.0, LearningRateSchedule.At(step, 29, 100, 0, 2.0), 12);
        Assert.Equal(0.2, LearningRateSchedule.At(step, 30, 100, 0, 2.0), 12);
        Assert.Equal(0.2, LearningRateSchedule.At(step, 59, 100, 0, 2.0), 12);
        Assert.Equal(0.02, LearningRateSchedule.At(step, 60, 100, 0, 2.0), 12);
        // null is warmup-cosine, exactly the schedule every run used before schedules could be chosen.
        foreach (long s in new long[] { 0, 5, 40, 99 })
            Assert.Equal(LearningRateSchedule.WarmupCosine(s, 100, 10, 1.0), LearningRateSchedule.At(null, s, 100, 10, 1.0));
    }

    [Fact]
    public void A_phase_runs_in_its_window_and_warms_up_at_its_own_start()
    {
        var run = new OptimizerConfig();
        var late = new UpdatePhase("late", (_, _) => zeros(1), [], new OptimizerConfig(BaseLearningRate: 1, WarmupFraction: 0.1),
            Window: StepWindow.Fraction(0.5, 1));
        // A run of 120 steps: the phase has steps 60…119, warms up over 10% of them (6), then decays over 54.
        Assert.Null(late.LearningRateAt(59, 120, run, 256));
        Assert.Equal(1.0 / 6, late.LearningRateAt(60, 120, run, 256)!.Value, 12);
        Assert.Equal(1.0, late.LearningRateAt(66, 120, run, 256)!.Value, 12);
        Assert.Equal(0.5, late.LearningRateAt(66 + 27, 120, run, 256)!.Value, 12);   // halfway through its decay: cos(π/2) = 0
        // Every counts from the window's start; a window in steps is cut at the run's end.
        var every = new UpdatePhase("every", (_, _) => zeros(1), [], Every: 2, Window: StepWindow.Steps(3, 500));
        Assert.Equal([3L, 5, 7, 9], Enumerable.Range(0, 10).Where(s => every.LearningRateAt(s, 10, run, 256) is not null).Select(s => (long)s));
        Assert.Equal((3L, 10L), every.StepsIn(10));
    }

    [Fact]
    public void Bad_schedules_and_windows_are_one_line_errors_naming_the_phase()
    {
        using var data = TestData.Random(64);
        var loader = new DataLoader(data, 16, Normalization.Of(data), seed: 0, device: CPU);
        var model = Linear(28 * 28, 10);
        Tensor Loss(Batch b, Generator _) => functional.cross_entropy(model.call(b.Images.flatten(1)), b.Labels);
        string Error(params UpdatePhase[] phases) => Assert.Throws<ResearchKitException>(() =>
            new Trainer(new TrainConfig(Epochs: 2, BatchSize: 16)).Fit(loader, new Phases(model, phases))).Message;
        var parameters = UpdatePhase.TrainableOf(model);

        Assert.Equal("no phase trains at step 3 of 8: the phases' windows (a [0, 3), b [4, 8)) leave a gap",
            Error(new("a", Loss, parameters, Window: StepWindow.Steps(0, 3)), new("b", Loss, parameters, Window: StepWindow.Fraction(0.5, 1))));
        Assert.Equal("phase 'a': its window must be fractions with 0 ≤ from < until ≤ 1; got [0.5, 1.5)",
            Error(new UpdatePhase("a", Loss, parameters, Window: StepWindow.Fraction(0.5, 1.5))));
        Assert.Equal("phase 'a': step milestones must increase within (0, 1) (fractions of the phase's steps); got 0.6, 0.3",
            Error(new UpdatePhase("a", Loss, parameters, new OptimizerConfig { Schedule = ScheduleConfig.Step(0.1, 0.6, 0.3) })));
        Assert.Equal("phase 'a': step factor must be in (0, 1]; got 2",
            Error(new UpdatePhase("a", Loss, parameters, new OptimizerConfig { Schedule = ScheduleConfig.Step(2, 0.5) })));
        Assert.Equal("phase 'a': a step schedule needs at least one milestone",
            Error(new UpdatePhase("a", Loss, parameters, new OptimizerConfig { Schedule = new ScheduleConfig(ScheduleKind.Step) })));
    }

    sealed class Phases(nn.Module module, UpdatePhase[] phases) : ITrainable
    {
        public nn.Module Module => module;
        IReadOnlyList<UpdatePhase> ITrainable.Phases() => phases;
    }

    static (TwoStages Model, DataLoader Loader) Setup(ImageDataset data, int initSeed = 0)
    {
        Compute.Seed(initSeed);
        return (new TwoStages(), new DataLoader(data, 16, Normalization.Of(data), seed: 1, device: CPU));
    }

    [Fact]
    public void Stages_in_sequence_train_only_in_their_windows_and_survive_a_resume()
    {
        using var data = TestData.Random(160, seed: 3);                  // 10 steps an epoch, 20 in all
        var config = new TrainConfig(Epochs: 2, BatchSize: 16, Seed: 4, CheckpointEvery: 4, LogEvery: 3);
        var (model, loader) = Setup(data);
        var initialNarrow = model.narrow.weight!.detach().clone();
        Tensor? wideAtHalf = null, narrowAtHalf = null;
        var rates = new List<double>();
        var full = new Trainer(config).Fit(loader, model, new CallbackProgress<TrainProgress>(p =>
        {
            rates.Add(p.LearningRate);
            if (p.Step == 10) (wideAtHalf, narrowAtHalf) = (model.wide.weight!.detach().clone(), model.narrow.weight!.detach().clone());
        }));
        Assert.Equal(10, full.PhaseLosses!["wide"].Count);
        Assert.Equal(10, full.PhaseLosses["narrow"].Count);
        Assert.True(narrowAtHalf!.Same(initialNarrow), "the narrow stage trained before its window");
        Assert.True(model.wide.weight!.Same(wideAtHalf!), "the wide stage trained after its window");
        Assert.False(model.narrow.weight!.Same(initialNarrow));
        // The rate shown is the training stage's: SGD 0.4 × 16/256 = 0.025 warmed up over 2 steps, halved at step 5;
        // then Adam's unscaled, constant 1e-3.
        double peak = 0.4 * 16 / 256;
        Assert.Equal([peak / 2, peak, peak, peak, peak, peak / 2, peak / 2, peak / 2, peak / 2, peak / 2], rates.Take(10));
        Assert.All(rates.Skip(10), r => Assert.Equal(1e-3, r));

        // Stopped inside the first stage and resumed: the same curves and weights as without the stop.
        var dir = TestData.TempDir();
        var (first, loader1) = Setup(data);
        using var cancel = new CancellationTokenSource();
        Assert.Throws<OperationCanceledException>(() => new Trainer(config, dir).Fit(loader1, first,
            new CallbackProgress<TrainProgress>(p => { if (p.Step == 7) cancel.Cancel(); }), cancel.Token));
        var (second, loader2) = Setup(data, initSeed: 9);
        var resumed = new Trainer(config, dir).Fit(loader2, second);
        Assert.True(resumed.Resumed);
        Assert.Equal(full.PhaseLosses["wide"], resumed.PhaseLosses!["wide"]);
        Assert.Equal(full.PhaseLosses["narrow"], resumed.PhaseLosses["narrow"]);
        Assert.True(model.narrow.weight!.Same(second.narrow.weight!));
        // Begin ran once, when the narrow stage opened; the run's loss is the last stage's.
        Assert.Equal((1, 1), (model.Begins, second.Begins));
        Assert.Equal(full.PhaseLosses["narrow"], full.Losses);

        // Stopped inside the second stage: the resumed run does not begin it again (its checkpoint holds what Begin did).
        var late = TestData.TempDir();
        var (third, loader3) = Setup(data);
        using var cancelLate = new CancellationTokenSource();
        Assert.Throws<OperationCanceledException>(() => new Trainer(config, late).Fit(loader3, third,
            new CallbackProgress<TrainProgress>(p => { if (p.Step == 13) cancelLate.Cancel(); }), cancelLate.Token));
        var (fourth, loader4) = Setup(data, initSeed: 9);
        new Trainer(config, late).Fit(loader4, fourth);
        Assert.Equal((1, 0), (third.Begins, fourth.Begins));
        Assert.True(model.narrow.weight!.Same(fourth.narrow.weight!));
    }

    [Fact]
    public void Step_snapshots_keep_the_weights_after_every_nth_step_whatever_the_checkpoint_interval()
    {
        using var data = TestData.Random(128);                           // 8 steps
        var loader = new DataLoader(data, 16, Normalization.Of(data), seed: 0, device: CPU);
        Linear Model() { Compute.Seed(0); return Linear(28 * 28, 10); }
        var model = Model();
        var dir = TestData.TempDir();
        var trainer = new Trainer(new TrainConfig(Epochs: 1, BatchSize: 16, CheckpointEvery: 100), dir);
        trainer.Callbacks.Add(new StepSnapshots(dir, 3));
        var afterStep = new Dictionary<long, Tensor>();
        trainer.Fit(loader, model, (b, _) => functional.cross_entropy(model.call(b.Images.flatten(1)), b.Labels),
            new CallbackProgress<TrainProgress>(p => afterStep[p.Step] = model.weight!.detach().clone()));
        Assert.Equal([3L, 6], StepSnapshots.Kept(dir));
        foreach (long step in new long[] { 3, 6 })
        {
            var other = Model();
            Trainer.LoadWeights(other, StepSnapshots.PathOf(dir, step));
            Assert.True(other.weight!.Same(afterStep[step]), $"the snapshot after step {step} holds other weights");
            Assert.False(other.weight!.Same(afterStep[step + 1]));
        }
        Assert.Contains("at least 1 step", Assert.Throws<ResearchKitException>(() => new StepSnapshots(dir, 0)).Message);
    }
}
