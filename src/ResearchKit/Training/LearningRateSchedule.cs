namespace ResearchKit.Training;

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
        if (step < warmupSteps) return peak * (step + 1) / warmupSteps;
        long decaySteps = Math.Max(1, totalSteps - warmupSteps);
        double progress = Math.Min(1.0, (double)(step - warmupSteps) / decaySteps);
        return floor + (peak - floor) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}
