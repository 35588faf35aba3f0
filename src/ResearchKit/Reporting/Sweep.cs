using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Deedle;
using ResearchKit.Methods;
using ResearchKit.Runs;

namespace ResearchKit.Reporting;

/// <summary>One finished configuration of a sweep, as stored in its result file.</summary>
/// <param name="Schema">The result-file format; a file without one predates verification and is refused.</param>
public sealed record SweepEntry<TConfig, TResult>(string Key, TConfig Config, TResult Result, double Seconds, DateTime FinishedUtc, int Schema = 0);

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
    static readonly JsonSerializerOptions Json = MethodRegistry.Json;

    /// <summary>The cache key of a configuration: the first 16 hex digits of the SHA-256 of its JSON.</summary>
    public static string Key<TConfig>(TConfig config) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(config, Json))))[..16];

    /// <summary>The work folder of a configuration (its checkpoints and run folders): FOLDER/KEY.</summary>
    public static string WorkFolder(string folder, string key) => Path.Combine(folder, key);

    /// <summary>The result file of a configuration: FOLDER/KEY.json.</summary>
    public static string ResultPath(string folder, string key) => Path.Combine(folder, key + ".json");

    /// <summary>Where missing results are computed: in this process (<see cref="SweepExecutor.Local"/>, the default), or
    /// elsewhere from a manifest (a Slurm job array). Set with <see cref="Use"/>; process-wide, like the notebook it serves.</summary>
    public static SweepExecutor Executor { get; private set; } = SweepExecutor.Local;
    static CancellationToken executorCancel;

    /// <summary>Sends the missing results of every later sweep to <paramref name="executor"/>; <paramref name="cancel"/>
    /// stops waiting for them (a notebook's interrupt).</summary>
    public static void Use(SweepExecutor executor, CancellationToken cancel = default) => (Executor, executorCancel) = (executor, cancel);

    /// <summary>
    /// Runs (or loads) every configuration in order and returns all entries. With an executor other than the local one,
    /// the configurations without a result are first written as a <see cref="SweepManifest"/> and computed there (their
    /// <paramref name="run"/> is then the library's runner for their kind, <see cref="SweepTasks"/>); the results are
    /// read back from the cache.
    /// </summary>
    public static List<SweepEntry<TConfig, TResult>> Run<TConfig, TResult>(string folder, IEnumerable<TConfig> configs,
        Func<TConfig, string, TResult> run, IProgress<SweepProgress>? progress = null, Func<TConfig, string>? describe = null)
    {
        Directory.CreateDirectory(folder);
        AtomicFile.RemoveOrphans(folder);   // result files half-written by a killed process
        var all = configs.ToList();
        var keys = all.Select(c => Key(c)).ToList();
        if (!Executor.InProcess && all.Where((_, i) => !File.Exists(ResultPath(folder, keys[i]))).ToList() is { Count: > 0 } missing)
            Executor.Execute(SweepManifest.Create(folder, missing, describe, typeof(TResult)), progress, executorCancel);
        var entries = new List<SweepEntry<TConfig, TResult>>();
        for (int i = 0; i < all.Count; i++)
        {
            var config = all[i];
            var key = keys[i];
            var path = ResultPath(folder, key);
            var description = describe?.Invoke(config) ?? config!.ToString()!;
            bool Cached()
            {
                if (!File.Exists(path)) return false;
                progress?.Report(new SweepProgress(i, all.Count, key, true, description));
                entries.Add(Read<TConfig, TResult>(path, key));
                return true;
            }
            if (Cached()) continue;
            // One process per configuration: another one running it (a second notebook on the same results folder)
            // holds its work folder's lock; wait for it, then use its result instead of training the same thing twice.
            using var writer = AcquireOrWait(WorkFolder(folder, key), () =>
                progress?.Report(new SweepProgress(i, all.Count, key, false, description + " (waiting: another process is running it)")));
            if (Cached()) continue;
            progress?.Report(new SweepProgress(i, all.Count, key, false, description));
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var result = run(config, WorkFolder(folder, key));
            var entry = new SweepEntry<TConfig, TResult>(key, config, result, Math.Round(clock.Elapsed.TotalSeconds, 1), DateTime.UtcNow, Schema);
            AtomicFile.WriteAllText(path, JsonSerializer.Serialize(entry, Json));
            entries.Add(entry);
        }
        return entries;
    }

    /// <summary>
    /// Runs every configuration once per seed (<paramref name="withSeed"/> sets the seed in a configuration) and groups
    /// the entries by configuration, in order: the input of <see cref="SeedStats"/>, error bars and verdicts.
    /// <paramref name="describe"/> receives the seeded configuration.
    /// </summary>
    public static List<SeedGroup<TConfig, TResult>> RunSeeds<TConfig, TResult>(string folder, IEnumerable<TConfig> configs, IReadOnlyList<int> seeds,
        Func<TConfig, int, TConfig> withSeed, Func<TConfig, string, TResult> run, IProgress<SweepProgress>? progress = null, Func<TConfig, string>? describe = null)
    {
        if (seeds.Count == 0) throw new ResearchKitException("a sweep needs at least one seed");
        var all = configs.ToList();
        var entries = Run(folder, all.SelectMany(c => seeds.Select(s => withSeed(c, s))), run, progress, describe);
        return all.Select((c, i) => new SeedGroup<TConfig, TResult>(c, entries.Skip(i * seeds.Count).Take(seeds.Count).ToList())).ToList();
    }

    static Runs.RunLock AcquireOrWait(string workFolder, Action waiting)
    {
        bool told = false;
        while (true)
        {
            if (Runs.RunLock.TryAcquire(workFolder) is { } acquired) return acquired;
            if (!told) { waiting(); told = true; }
            Thread.Sleep(1000);
        }
    }

    /// <summary>The result-file format written now (2: results carry their schema and are verified on read).</summary>
    public const int Schema = 2;

    /// <summary>
    /// Reads a cached result and trusts it only when it is whole, of this format, and of the configuration asked for:
    /// the key is recomputed from the stored configuration and must match both the file name and
    /// <paramref name="expectedKey"/>. Anything else is an error naming the file — never silently used.
    /// </summary>
    static SweepEntry<TConfig, TResult> Read<TConfig, TResult>(string path, string expectedKey)
    {
        const string advice = "delete it to rerun that configuration";
        SweepEntry<TConfig, TResult>? entry;
        try
        {
            entry = JsonSerializer.Deserialize<SweepEntry<TConfig, TResult>>(File.ReadAllText(path), Json);
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or InvalidOperationException)
        {
            var problem = JsonErrors.Plain(e);
            throw new Data.DataFormatException(path, (JsonErrors.IsMissingField(e) ? $"incomplete sweep result ({problem})" : $"not a readable sweep result ({problem})") + $"; {advice}");
        }
        if (entry is null || entry.Config is null || entry.Result is null || entry.Key is null)
            throw new Data.DataFormatException(path, $"an incomplete sweep result (no key, configuration or result); {advice}");
        if (entry.Schema != Schema)
            throw new Data.DataFormatException(path, $"a sweep result of format {entry.Schema}, this version reads {Schema}; {advice}");
        var stored = Key(entry.Config);
        if (stored != entry.Key || stored != Path.GetFileNameWithoutExtension(path))
            throw new Data.DataFormatException(path, $"holds the result of another configuration (its configuration hashes to {stored}, the file is named {Path.GetFileNameWithoutExtension(path)}); {advice}");
        if (stored != expectedKey)
            throw new Data.DataFormatException(path, $"holds configuration {stored}, not the one asked for ({expectedKey}); {advice}");
        return entry;
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

/// <summary>One configuration run over several seeds.</summary>
public sealed record SeedGroup<TConfig, TResult>(TConfig Config, IReadOnlyList<SweepEntry<TConfig, TResult>> Runs)
{
    /// <summary>Statistics of one measured value over the seeds.</summary>
    public SeedStats Stats(Func<TResult, double> value) => SeedStats.Of(Runs.Select(r => value(r.Result)));
}

/// <summary>
/// A value measured over seeds: mean and sample standard deviation. Two results count as different only when their
/// means differ by more than the seed spread (the sum of the two standard deviations); with one seed there is no
/// spread to judge by, so nothing counts as different.
/// </summary>
public sealed record SeedStats(double Mean, double Std, int Count, IReadOnlyList<double> Values)
{
    public static SeedStats Of(IEnumerable<double> values)
    {
        var v = values.ToList();
        if (v.Count == 0) throw new ResearchKitException("no values to summarise");
        double mean = v.Average();
        double std = v.Count > 1 ? Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Count - 1)) : 0;
        return new SeedStats(mean, std, v.Count, v);
    }

    /// <summary>The seed spread two results must exceed to differ.</summary>
    public double Spread(SeedStats other) => Std + other.Std;

    /// <summary>True when the means differ by more than the seed spread (and both have at least two seeds).</summary>
    public bool DiffersFrom(SeedStats other) => Count > 1 && other.Count > 1 && Math.Abs(Mean - other.Mean) > Spread(other);

    /// <summary>"83.2 ± 0.4" with the values scaled (100 for percentages).</summary>
    public string Format(double scale = 100, string format = "F1") =>
        Count > 1 ? $"{(Mean * scale).ToString(format)} ± {(Std * scale).ToString(format)}" : (Mean * scale).ToString(format);
}
