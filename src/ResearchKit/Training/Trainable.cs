using System.Text.Json.Serialization;
using TorchSharp;
using TorchSharp.Modules;
using ResearchKit.Data;
using static TorchSharp.torch;

namespace ResearchKit.Training;

/// <summary>Which update rule a phase uses.</summary>
public enum OptimizerKind { AdamW, Sgd }

/// <summary>
/// One optimizer's settings and schedule. Defaults are MAE's pre-training recipe (MAE Appendix A.1, Table 8):
/// AdamW β = (0.9, 0.95), weight decay 0.05, base lr 1.5e-4 scaled by batch/256, linear warmup then cosine decay.
/// For SGD, <see cref="Momentum"/> and <see cref="Nesterov"/> apply and the betas are unused.
/// </summary>
public sealed record OptimizerConfig(
    OptimizerKind Kind = OptimizerKind.AdamW, double BaseLearningRate = 1.5e-4, double WeightDecay = 0.05,
    double Beta1 = 0.9, double Beta2 = 0.95, double Momentum = 0.9, bool Nesterov = false, double WarmupFraction = 0.05)
{
    /// <summary>The schedule after warmup; null (the default, and every run before schedules existed): warmup-cosine.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ScheduleConfig? Schedule { get; init; }

    /// <summary>The base rate is the rate itself, not scaled by batch/256 (GAN recipes give fixed Adam rates).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public bool AbsoluteLearningRate { get; init; }

    /// <summary>Peak learning rate for a batch size: base × batch / 256 (the linear scaling rule MAE uses), or the base rate
    /// itself when <see cref="AbsoluteLearningRate"/>.</summary>
    public double PeakLearningRate(int batchSize) => AbsoluteLearningRate ? BaseLearningRate : BaseLearningRate * batchSize / 256;

    /// <summary>The rate at 0-based <paramref name="step"/> of a phase that runs <paramref name="steps"/> steps: warmup over
    /// <see cref="WarmupFraction"/> of them, then <see cref="Schedule"/>.</summary>
    public double LearningRateAt(long step, long steps, int batchSize) =>
        LearningRateSchedule.At(Schedule, step, steps, (long)Math.Round(steps * WarmupFraction), PeakLearningRate(batchSize));

    public void Validate(string owner = "optimizer")
    {
        if (!(BaseLearningRate > 0) || !double.IsFinite(BaseLearningRate))
            throw new ResearchKitException($"{owner}: learning rate (--lr) must be positive and finite; got {BaseLearningRate}");
        if (!(WeightDecay >= 0) || !double.IsFinite(WeightDecay)) throw new ResearchKitException($"{owner}: weight decay must be ≥ 0 and finite; got {WeightDecay}");
        if (WarmupFraction is < 0 or >= 1 || double.IsNaN(WarmupFraction)) throw new ResearchKitException($"{owner}: warmup fraction must be in [0, 1); got {WarmupFraction}");
        if (Beta1 is < 0 or >= 1 || Beta2 is < 0 or >= 1) throw new ResearchKitException($"{owner}: betas must be in [0, 1); got ({Beta1}, {Beta2})");
        if (Momentum is < 0 or >= 1) throw new ResearchKitException($"{owner}: momentum must be in [0, 1); got {Momentum}");
        Schedule?.Validate(owner);
    }

    /// <summary>
    /// Builds the optimizer over named parameters: two groups, with and without weight decay. By default 1-D
    /// parameters (biases, norm scales) are not decayed — timm's add_weight_decay, which MAE's pre-training uses
    /// (so its [CLS] and mask tokens are decayed); <paramref name="noDecay"/> adds names to exempt. The parameters are
    /// re-pointed into the optimizer's flat buffers (<see cref="FlatOptimizer"/>): build it after the model is on its device.
    /// </summary>
    public FlatOptimizer Create(IReadOnlyList<(string Name, Parameter Parameter)> parameters, int batchSize, Func<string, bool>? noDecay = null)
    {
        Validate();
        bool Exempt((string Name, Parameter Parameter) p) => p.Parameter.dim() <= 1 || (noDecay?.Invoke(p.Name) ?? false);
        var groups = new (IReadOnlyList<Parameter>, double)[]
        {
            (parameters.Where(p => !Exempt(p)).Select(p => p.Parameter).ToList(), WeightDecay),
            (parameters.Where(Exempt).Select(p => p.Parameter).ToList(), 0),
        };
        double lr = PeakLearningRate(batchSize);
        return Kind == OptimizerKind.AdamW ? new FlatAdamW(groups, lr, Beta1, Beta2) : new FlatSgd(groups, lr, Momentum, Nesterov);
    }
}

/// <summary>
/// The steps of a run in which a phase trains, [From, Until): fractions of the run's steps by default, or step numbers
/// (<see cref="Steps"/>). Phases with windows one after another are stages in sequence (Go-Wide-Then-Narrow trains
/// the wide network, then the narrow one); a phase's warmup and schedule run over its own window.
/// </summary>
public sealed record StepWindow(double From, double Until, bool InSteps = false)
{
    public static StepWindow Fraction(double from, double until) => new(from, until);
    public static StepWindow Steps(long from, long until) => new(from, until, InSteps: true);

    /// <summary>The window's first step and the step after its last, in a run of <paramref name="total"/> steps.</summary>
    public (long Start, long End) In(long total) => InSteps
        ? (Math.Min((long)From, total), Math.Min((long)Until, total))
        : ((long)Math.Round(From * total), (long)Math.Round(Until * total));

    public void Validate(string phase)
    {
        bool valid = InSteps ? From >= 0 && Until > From && From == Math.Floor(From) && Until == Math.Floor(Until)
                             : From >= 0 && Until > From && Until <= 1;
        if (!valid)
            throw new ResearchKitException($"phase '{phase}': its window must be " +
                (InSteps ? $"whole steps with 0 ≤ from < until; got [{From}, {Until})" : $"fractions with 0 ≤ from < until ≤ 1; got [{From}, {Until})"));
    }
}

/// <summary>
/// One update of a training step: a loss over a batch, the parameters it trains, and their optimizer.
/// A GAN has two (discriminator, then generator); most methods have one. <paramref name="Every"/> &gt; 1 runs
/// the phase only on every n-th step (e.g. a generator updated once per n discriminator steps).
/// </summary>
/// <param name="Optimizer">null: the run's <see cref="TrainConfig.Optimizer"/>. Its rate and schedule are this phase's.</param>
/// <param name="NoWeightDecay">Names (from <paramref name="Parameters"/>) exempt from weight decay besides 1-D parameters.</param>
/// <param name="Window">The steps in which the phase trains (null: all); <paramref name="Every"/> counts from its start.</param>
/// <param name="DivergesAbove">A loss whose magnitude exceeds this counts as diverged, as a non-finite one does (null: only
/// non-finite losses). Checked when losses are read back, so it costs no device sync.</param>
/// <param name="Begin">Called once when the phase's window opens, before its first step: a stage that starts from what an earlier
/// one trained (Go-Wide-Then-Narrow folds its imitation network into the student). A run resumed after that step does not
/// call it again: its checkpoint holds what it did.</param>
public sealed record UpdatePhase(
    string Name, Func<Batch, Generator, Tensor> Loss, IReadOnlyList<(string Name, Parameter Parameter)> Parameters,
    OptimizerConfig? Optimizer = null, int Every = 1, Func<string, bool>? NoWeightDecay = null, StepWindow? Window = null,
    double? DivergesAbove = null, Action? Begin = null)
{
    /// <summary>This phase's optimizer settings: its own, or the run's.</summary>
    public OptimizerConfig SettingsOr(OptimizerConfig run) => Optimizer ?? run;

    /// <summary>This phase's steps in a run of <paramref name="total"/>: [Start, End).</summary>
    public (long Start, long End) StepsIn(long total) => Window?.In(total) ?? (0, total);

    /// <summary>
    /// The phase's learning rate at 0-based run step <paramref name="step"/>, or null when it does not train then (outside
    /// its window, or not an <see cref="Every"/>-th step of it). The schedule runs over the window, so a later stage warms up
    /// at its own start.
    /// </summary>
    public double? LearningRateAt(long step, long total, OptimizerConfig run, int batchSize)
    {
        var (start, end) = StepsIn(total);
        if (step < start || step >= end || (step - start) % Every != 0) return null;
        return SettingsOr(run).LearningRateAt(step - start, end - start, batchSize);
    }

    /// <summary>This phase's optimizer over its parameters, with its weight-decay exemptions.</summary>
    public FlatOptimizer CreateOptimizer(OptimizerConfig run, int batchSize) => SettingsOr(run).Create(Parameters, batchSize, NoWeightDecay);

    /// <summary>The trainable (requires_grad) named parameters of a module.</summary>
    public static IReadOnlyList<(string Name, Parameter Parameter)> TrainableOf(nn.Module module) =>
        module.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)).ToList();
}

/// <summary>Method state beyond weights and optimizers that must survive a resume (a replay buffer, counters).</summary>
public interface ICheckpointState
{
    void Save(BinaryWriter writer);
    void Load(BinaryReader reader);
}

/// <summary>
/// A method that can go on after its training diverged. With a run folder, the trainer then restores the last good
/// checkpoint (one is written before the first step), records the event (<see cref="DivergenceLog"/>), calls
/// <see cref="AfterRestarts"/> and trains on from there. After <see cref="MaxRestarts"/> restarts a divergence is an error, or
/// with <see cref="StopsWhenExhausted"/> ends training at the last good checkpoint.
/// </summary>
public interface IDivergenceRecovery
{
    int MaxRestarts { get; }

    /// <summary>Sets the method up for a run that has restarted <paramref name="restarts"/> times (0: never), e.g. a smaller
    /// step; called before training starts or resumes, so a resumed run keeps what its restarts changed. Returns what it
    /// set, in words, for the record.</summary>
    string AfterRestarts(int restarts);

    /// <summary>What the trainer multiplies every phase's scheduled learning rate by, as set by <see cref="AfterRestarts"/>
    /// (1: unchanged).</summary>
    double LearningRateFactor => 1;

    /// <summary>True: when the restarts are spent, a divergence ends training at the last good checkpoint (its weights are the
    /// run's; recorded as a stopped event, and a later call on the folder trains no further) instead of failing the run.</summary>
    bool StopsWhenExhausted => false;

    /// <summary>Checkpoint at least this often (in steps), whatever <see cref="TrainConfig.CheckpointEvery"/> says, so that a
    /// restart replays few steps.</summary>
    int CheckpointEvery => int.MaxValue;
}

/// <summary>What the trainer trains: a module (all its weights are checkpointed), its update phases, optional extra state,
/// and optionally a way to recover from divergence.</summary>
public interface ITrainable
{
    nn.Module Module { get; }
    IReadOnlyList<UpdatePhase> Phases();
    ICheckpointState? State => null;
    IDivergenceRecovery? Recovery => null;
}

/// <summary>The plain case: one module, one loss, all trainable parameters.</summary>
public sealed class SingleLoss(nn.Module module, Func<Batch, Generator, Tensor> loss, Func<string, bool>? noWeightDecay = null) : ITrainable
{
    public nn.Module Module => module;
    public IReadOnlyList<UpdatePhase> Phases() => [new UpdatePhase("loss", loss, UpdatePhase.TrainableOf(module), NoWeightDecay: noWeightDecay)];
}

/// <summary>Tensors in checkpoint streams: dtype, shape, then the raw little-endian bytes.</summary>
public static class TensorIO
{
    public static void Write(BinaryWriter writer, Tensor tensor)
    {
        using var cpu = tensor.detach().cpu().contiguous();
        writer.Write((int)cpu.dtype);
        writer.Write(cpu.dim());
        foreach (var d in cpu.shape) writer.Write(d);
        var bytes = cpu.bytes;
        writer.Write(bytes.Length);
        writer.Write(bytes);
    }

    public static Tensor Read(BinaryReader reader)
    {
        var dtype = (ScalarType)reader.ReadInt32();
        var shape = new long[reader.ReadInt64()];
        for (int i = 0; i < shape.Length; i++) shape[i] = reader.ReadInt64();
        var bytes = reader.ReadBytes(reader.ReadInt32());
        var result = empty(shape, dtype, device: CPU);
        result.bytes = bytes;
        return result;
    }
}
