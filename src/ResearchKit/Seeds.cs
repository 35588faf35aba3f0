namespace ResearchKit;

/// <summary>
/// Deterministic seed derivation. (HashCode.Combine is randomised per process, so it must never
/// seed anything that has to repeat across runs — a resumed run, a regenerated data set.)
/// </summary>
public static class Seeds
{
    /// <summary>Mixes the parts with SplitMix64 into a non-negative int seed; the same parts give the same seed in any process.</summary>
    public static int Mix(params long[] parts)
    {
        ulong state = 0x9E3779B97F4A7C15;
        foreach (var part in parts)
        {
            state ^= (ulong)part;
            state += 0x9E3779B97F4A7C15;
            ulong z = state;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
            state = z ^ (z >> 31);
        }
        return (int)(state & 0x7FFFFFFF);
    }
}
