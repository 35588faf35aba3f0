using System.Text.Json;
using ResearchKit.Data;

namespace ResearchKit.Training;

/// <summary>
/// One time training diverged and was restarted (<see cref="IDivergenceRecovery"/>).
/// </summary>
/// <param name="Step">The step whose loss gave it away (0-based).</param>
/// <param name="Loss">That loss: non-finite, or beyond the phase's <see cref="UpdatePhase.DivergesAbove"/>.</param>
/// <param name="RestartedFrom">The step of the last good checkpoint training went back to.</param>
/// <param name="Restart">1 for the first restart of the run, 2 for the second…</param>
/// <param name="Action">What the method changed for the restart, in words ("learning rate × 0.5"), or that training stopped.</param>
/// <param name="Stopped">True for the event that ended training at <paramref name="RestartedFrom"/> instead of restarting
/// (<see cref="IDivergenceRecovery.StopsWhenExhausted"/>): the run's weights are that checkpoint's.</param>
public sealed record DivergenceEvent(long Step, string Phase, double Loss, long RestartedFrom, int Restart, string Action, bool Stopped = false);

/// <summary>
/// A run folder's divergence.json: every divergence event of the run, in order. It is the record the notebooks and the CLI
/// report, and the count a resumed run hands to <see cref="IDivergenceRecovery.AfterRestarts"/>, so a run resumed after a
/// restart keeps the changed settings. Rewritten whole (atomically) at each event; absent when training never diverged.
/// </summary>
public static class DivergenceLog
{
    public const string FileName = "divergence.json";

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>The events of a run folder (empty when it never diverged).</summary>
    public static List<DivergenceEvent> Read(string directory)
    {
        var path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) return [];
        try { return JsonSerializer.Deserialize<List<DivergenceEvent>>(File.ReadAllText(path), Json) ?? throw new JsonException("null"); }
        catch (JsonException e) { throw new DataFormatException(path, $"not a divergence log ({e.Message.Split('\n')[0]})"); }
    }

    /// <summary>How many restarts <paramref name="events"/> record (a stop is not one).</summary>
    public static int Restarts(IEnumerable<DivergenceEvent> events) => events.Count(d => !d.Stopped);

    public static void Write(string directory, IReadOnlyList<DivergenceEvent> events) =>
        AtomicFile.WriteAllText(Path.Combine(directory, FileName), JsonSerializer.Serialize(events, Json));
}
