using System.Text.Json;
using ResearchKit.Data;

namespace ResearchKit.Training;

/// <summary>One logged step (a line of metrics.jsonl). <paramref name="Losses"/>: every phase's loss, for multi-phase methods.</summary>
public sealed record StepMetrics(int Epoch, long Step, double Loss, double Lr, double ImagesPerS, IReadOnlyDictionary<string, double>? Losses = null);

/// <summary>A run folder's metrics.jsonl: one JSON object per logged step, appended as training goes.</summary>
public sealed class MetricsLog(string directory)
{
    public const string FileName = "metrics.jsonl";

    static readonly JsonSerializerOptions Line = new() { DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull };

    public string Path => System.IO.Path.Combine(directory, FileName);

    public void Append(StepMetrics m)
    {
        var line = JsonSerializer.Serialize(new { epoch = m.Epoch, step = m.Step, loss = m.Loss, lr = m.Lr, images_per_s = m.ImagesPerS, losses = m.Losses }, Line);
        File.AppendAllText(Path, line + "\n");
    }

    /// <summary>After a resume, drop lines logged after the checkpoint's step so the file holds one curve.</summary>
    public void TrimTo(long step)
    {
        if (!File.Exists(Path)) return;
        var kept = File.ReadAllLines(Path).Where(line =>
        {
            try { return JsonDocument.Parse(line).RootElement.GetProperty("step").GetInt64() <= step; }
            catch (Exception e) when (e is JsonException or KeyNotFoundException) { return false; }   // a line cut by a crash
        });
        AtomicFile.WriteAllText(Path, string.Concat(kept.Select(l => l + "\n")));
    }

    /// <summary>The logged steps of a run folder, in order.</summary>
    public static List<StepMetrics> Read(string directory)
    {
        var path = System.IO.Path.Combine(directory, FileName);
        if (!File.Exists(path)) throw new ResearchKitException($"{path}: not found (no training logged in {directory})");
        return File.ReadAllLines(path).Where(l => l.Length > 0).Select((line, i) =>
        {
            try
            {
                var o = JsonDocument.Parse(line).RootElement;
                Dictionary<string, double>? losses = o.TryGetProperty("losses", out var l) ? l.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble()) : null;
                return new StepMetrics(o.GetProperty("epoch").GetInt32(), o.GetProperty("step").GetInt64(), o.GetProperty("loss").GetDouble(),
                    o.GetProperty("lr").GetDouble(), o.TryGetProperty("images_per_s", out var ips) ? ips.GetDouble() : double.NaN, losses);
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new DataFormatException(path, $"line {i + 1} is not a metrics record: {e.Message}");
            }
        }).ToList();
    }
}
