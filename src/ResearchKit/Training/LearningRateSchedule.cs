namespace ResearchKit.Training;

/// <summary>How a phase's learning rate moves over the steps it runs (after its warmup, which every kind has).</summary>
public enum ScheduleKind
{
    /// <summary>Half-cosine decay to 0 (MAE Appendix A.1; Loshchilov &amp; Hutter, 2017): the default.</summary>
    WarmupCosine,
    /// <summary>The peak rate throughout (GANs: DCGAN, SSGAN use fixed Adam rates).</summary>
    Constant,
    /// <summary>The peak rate multiplied by <see cref="ScheduleConfig.Factor"/> at each milestone (RotNet, ResNet recipes).</summary>
    Step,
}

/// <summary>A learning-rate schedule other than warmup-cosine (<see cref="OptimizerConfig.Schedule"/>).</summary>
/// <param name="Milestones">For <see cref="ScheduleKind.Step"/>: where the rate drops, as fractions of the phase's steps,
/// increasing, in (0, 1) — RotNet's 30, 60, 80 of 100 epochs are 0.3, 0.6, 0.8.</param>
/// <param name="Factor">For <see cref="ScheduleKind.Step"/>: what each milestone multiplies the rate by, in (0, 1].</param>
public sealed record ScheduleConfig(ScheduleKind Kind, double[]? Milestones = null, double Factor = 0.1)
{
    public static readonly ScheduleConfig Constant = new(ScheduleKind.Constant);

    public static ScheduleConfig Step(double factor, params double[] milestones) => new(ScheduleKind.Step, milestones, factor);

    // By value, milestones included (a record compares arrays by reference), so a configuration read back from
    // config.json equals the one written.
    public bool Equals(ScheduleConfig? other) => other is not null && Kind == other.Kind && Factor == other.Factor
        && (Milestones ?? []).SequenceEqual(other.Milestones ?? []);

    public override int GetHashCode() => HashCode.Combine(Kind, Factor, Milestones?.Length ?? 0);

    public void Validate(string owner)
    {
        if (!Enum.IsDefined(Kind)) throw new ResearchKitException($"{owner}: unknown schedule {Kind}; expected warmup-cosine, constant or step");
        if (Kind != ScheduleKind.Step) return;
        if (Milestones is not { Length: > 0 } m) throw new ResearchKitException($"{owner}: a step schedule needs at least one milestone");
        if (m.Any(x => !(x > 0 && x < 1)) || m.Zip(m.Skip(1), (a, b) => b > a).Contains(false))
            throw new ResearchKitException($"{owner}: step milestones must increase within (0, 1) (fractions of the phase's steps); got {string.Join(", ", m)}");
        if (!(Factor > 0 && Factor <= 1)) throw new ResearchKitException($"{owner}: step factor must be in (0, 1]; got {Factor}");
    }
}

/// <summary>Learning-rate schedules as pure functions of the step.</summary>
public static class LearningRateSchedule
{
    /// <summary>
    /// Linear warmup from 0 to <paramref name="peak"/> over <paramref name="warmupSteps"/>, then half-cosine
    /// decay to <paramref name="floor"/> at <paramref name="totalSteps"/> (MAE Appendix A.1; Loshchilov &amp; Hutter, 2017).
    /// Step is 0-based; the first step gets peak/warmupSteps so it is never 0.
    /// </summary>
    public static double WarmupCosine(long step, long totalSteps, long warmupSteps, double peak, double floor = 0)
    {
        if (totalSteps <= 0) throw new ArgumentOutOfRangeException(nameof(totalSteps), "total steps must be positive");
        if (step < warmupSteps) return Warmup(step, warmupSteps, peak);
        long decaySteps = Math.Max(1, totalSteps - warmupSteps);
        double progress = Math.Min(1.0, (double)(step - warmupSteps) / decaySteps);
        return floor + (peak - floor) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }

    /// <summary>
    /// The rate at 0-based <paramref name="step"/> of <paramref name="totalSteps"/> under <paramref name="schedule"/>
    /// (null: warmup-cosine), after the same linear warmup as <see cref="WarmupCosine"/>. A step schedule's milestones
    /// count from the start of the phase, warmup included: at fraction m of its steps the rate is multiplied by the factor.
    /// </summary>
    public static double At(ScheduleConfig? schedule, long step, long totalSteps, long warmupSteps, double peak)
    {
        if (schedule is null || schedule.Kind == ScheduleKind.WarmupCosine) return WarmupCosine(step, totalSteps, warmupSteps, peak);
        if (totalSteps <= 0) throw new ArgumentOutOfRangeException(nameof(totalSteps), "total steps must be positive");
        if (step < warmupSteps) return Warmup(step, warmupSteps, peak);
        if (schedule.Kind == ScheduleKind.Constant) return peak;
        int passed = schedule.Milestones!.Count(m => step >= (long)Math.Round(m * totalSteps));
        return peak * Math.Pow(schedule.Factor, passed);
    }

    static double Warmup(long step, long warmupSteps, double peak) => peak * (step + 1) / warmupSteps;
}
