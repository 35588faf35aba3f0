using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Deedle;
using ResearchKit.Runs;

namespace ResearchKit.Reporting;

/// <summary>One finished configuration of a sweep, as stored in its result file.</summary>
public sealed record SweepEntry<TConfig, TResult>(string Key, TConfig Config, TResult Result, double Seconds, DateTime FinishedUtc);

/// <summary>Progress of a sweep: which configuration is running, and how many are done or cached.</summary>
public sealed record SweepProgress(int Index, int Count, string Key, bool Cached, string Description);

/// <summary>
/// A grid of configurations, each run once. A finished run's result is cached in FOLDER/KEY.json where
/// KEY hashes the configuration's JSON, so a rerun skips finished runs, an interrupted sweep resumes
/// (the running configuration gets FOLDER/KEY/ as its work folder, where its checkpoints live), and a
/// result file is written atomically — never half-written.
/// </summary>
public static class Sweep
{
    static readonly JsonSerializerOptions Json = Pretraining.Json;

    /// <summary>The cache key of a configuration: the first 16 hex digits of the SHA-256 of its JSON.</summary>
    public static string Key<TConfig>(TConfig config) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(config, Json))))[..16];

    /// <summary>Runs (or loads) every configuration in order and returns all entries.</summary>
    public static List<SweepEntry<TConfig, TResult>> Run<TConfig, TResult>(string folder, IEnumerable<TConfig> configs,
        Func<TConfig, string, TResult> run, IProgress<SweepProgress>? progress = null, Func<TConfig, string>? describe = null)
    {
        Directory.CreateDirectory(folder);
        var all = configs.ToList();
        var entries = new List<SweepEntry<TConfig, TResult>>();
        for (int i = 0; i < all.Count; i++)
        {
            var config = all[i];
            var key = Key(config);
            var path = Path.Combine(folder, key + ".json");
            var description = describe?.Invoke(config) ?? config!.ToString()!;
            if (File.Exists(path))
            {
                progress?.Report(new SweepProgress(i, all.Count, key, true, description));
                entries.Add(Read<TConfig, TResult>(path));
                continue;
            }
            progress?.Report(new SweepProgress(i, all.Count, key, false, description));
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var result = run(config, Path.Combine(folder, key));
            var entry = new SweepEntry<TConfig, TResult>(key, config, result, Math.Round(clock.Elapsed.TotalSeconds, 1), DateTime.UtcNow);
            AtomicFile.WriteAllText(path, JsonSerializer.Serialize(entry, Json));
            entries.Add(entry);
        }
        return entries;
    }

    static SweepEntry<TConfig, TResult> Read<TConfig, TResult>(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<SweepEntry<TConfig, TResult>>(File.ReadAllText(path), Json)
                ?? throw new Data.DataFormatException(path, "empty sweep result");
        }
        catch (JsonException e)
        {
            throw new Data.DataFormatException(path, $"not a result of this sweep ({e.Message}); delete it to rerun that configuration");
        }
    }

    /// <summary>
    /// A frame with one row per entry and one column per scalar field of the configuration and the result,
    /// named by JSON path (nested records joined with '.', arrays indexed as name[i]); numbers as double.
    /// </summary>
    public static Frame<int, string> ToFrame<TConfig, TResult>(IEnumerable<SweepEntry<TConfig, TResult>> entries)
    {
        var rows = entries.Select(e =>
        {
            var row = new Dictionary<string, object>();
            Flatten(JsonSerializer.SerializeToNode(e.Config, Json), "", row);
            Flatten(JsonSerializer.SerializeToNode(e.Result, Json), "", row);
            row["seconds"] = e.Seconds;
            return row;
        }).ToList();
        return Tables.FromDictionaries(rows);
    }

    static void Flatten(JsonNode? node, string prefix, Dictionary<string, object> row)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (name, child) in o) Flatten(child, prefix.Length == 0 ? name : $"{prefix}.{name}", row);
                break;
            case JsonArray a:
                for (int i = 0; i < a.Count; i++) Flatten(a[i], $"{prefix}[{i}]", row);
                break;
            case JsonValue v when v.TryGetValue<double>(out var d):
                row[prefix] = d;
                break;
            case JsonValue v:
                row[prefix] = v.ToString();
                break;
        }
    }
}
