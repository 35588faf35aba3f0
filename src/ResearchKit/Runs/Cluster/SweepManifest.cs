using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Reporting;
using ResearchKit.Training;

namespace ResearchKit.Runs;

/// <summary>
/// One configuration of a sweep as data: its result key, the library task that computes it (<see cref="SweepTasks"/>: an
/// <see cref="Experiment"/>, a <see cref="RawPixelFloor"/>…), and the configuration as the notebook keyed it (which may
/// wrap the task: a notebook's own record with an arm name), so the result file a task writes is the one the notebook reads.
/// </summary>
public sealed record SweepTask(int Index, string Key, string Kind, JsonNode Task, JsonNode Config, string Description);

/// <summary>
/// A sweep written as data, one JSON line per task after a header line: what `researchkit sweep run/status/task` read,
/// and what <see cref="SweepExecutor"/>s run. Results land in <see cref="ResultsFolder"/>, the same verified cache
/// <see cref="Sweep.Run{TConfig, TResult}"/> reads, so a notebook rerun afterwards trains nothing. Paths inside the tasks
/// (a classifier run, a results folder) are relative to <see cref="WorkingDirectory"/>, where the notebook ran.
/// </summary>
public sealed class SweepManifest
{
    public const int Format = 1;
    const string FolderName = "sweeps";

    public string Path { get; }
    public string ResultsFolder { get; }
    public string WorkingDirectory { get; }
    public IReadOnlyList<SweepTask> Tasks { get; }

    SweepManifest(string path, string resultsFolder, string workingDirectory, IReadOnlyList<SweepTask> tasks) =>
        (Path, ResultsFolder, WorkingDirectory, Tasks) = (path, resultsFolder, workingDirectory, tasks);

    /// <summary>Per-task logs and states: the manifest's path without its extension.</summary>
    public string Folder => System.IO.Path.ChangeExtension(Path, null);
    public string LogPath(int index) => System.IO.Path.Combine(Folder, $"task-{index}.log");
    public string StatePath(int index) => System.IO.Path.Combine(Folder, $"task-{index}.state.json");
    public string ResultPath(SweepTask task) => Sweep.ResultPath(ResultsFolder, task.Key);
    public string WorkFolder(SweepTask task) => Sweep.WorkFolder(ResultsFolder, task.Key);

    /// <summary>
    /// The manifest of <paramref name="configs"/> in <paramref name="resultsFolder"/>/sweeps/, named by a hash of their keys
    /// (the same sweep always gets the same file), written atomically. Each configuration must be a library task or wrap
    /// exactly one (<see cref="SweepTasks.Find"/>); anything else is a one-line error naming its type.
    /// </summary>
    /// <param name="result">The sweep's result type, which each task's kind must give (null: not checked).</param>
    public static SweepManifest Create<TConfig>(string resultsFolder, IReadOnlyList<TConfig> configs, Func<TConfig, string>? describe = null,
        Type? result = null)
    {
        if (configs.Count == 0) throw new ResearchKitException("a sweep manifest needs at least one configuration");
        var tasks = configs.Select((config, i) =>
        {
            var (kind, task) = SweepTasks.Find(config!, result);
            return new SweepTask(i, Sweep.Key(config), kind.Name, JsonSerializer.SerializeToNode(task, kind.Type, MethodRegistry.Json)!,
                JsonSerializer.SerializeToNode(config, MethodRegistry.Json)!, describe?.Invoke(config) ?? config!.ToString()!);
        }).ToList();
        var name = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join(",", tasks.Select(t => t.Key)))))[..12];
        var path = System.IO.Path.GetFullPath(System.IO.Path.Combine(resultsFolder, FolderName, $"sweep-{name}.jsonl"));
        var manifest = new SweepManifest(path, System.IO.Path.GetFullPath(resultsFolder), Directory.GetCurrentDirectory(), tasks);
        manifest.Write();
        return manifest;
    }

    void Write()
    {
        var compact = new JsonSerializerOptions(MethodRegistry.Json) { WriteIndented = false };
        var header = new JsonObject
        {
            ["format"] = Format,
            ["resultsFolder"] = System.IO.Path.GetRelativePath(System.IO.Path.GetDirectoryName(Path)!, ResultsFolder),
            ["workingDirectory"] = WorkingDirectory,
            ["tasks"] = Tasks.Count,
        };
        var lines = Tasks.Select(t => new JsonObject
        {
            ["index"] = t.Index, ["key"] = t.Key, ["kind"] = t.Kind, ["description"] = t.Description,
            ["task"] = t.Task.DeepClone(), ["config"] = t.Config.DeepClone(),
        }.ToJsonString(compact));
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!);
        AtomicFile.WriteAllText(Path, string.Join("\n", lines.Prepend(header.ToJsonString(compact))) + "\n");
    }

    /// <summary>Reads a manifest; anything malformed is a one-line error naming the file and line.</summary>
    public static SweepManifest Read(string path)
    {
        if (!File.Exists(path)) throw new ResearchKitException($"{path}: no such sweep manifest (a notebook run with Executor = \"slurm\" or \"manifest\" writes one under RESULTS/sweeps/)");
        path = System.IO.Path.GetFullPath(path);
        var lines = File.ReadAllLines(path).Where(l => l.Length > 0).ToList();
        JsonObject Line(int i)
        {
            try { return JsonNode.Parse(lines[i]) as JsonObject ?? throw new JsonException("not a JSON object"); }
            catch (JsonException e) { throw new DataFormatException(path, $"line {i + 1} is not a JSON object ({JsonErrors.Plain(e)})"); }
        }
        T Field<T>(JsonObject o, string name, int line)
        {
            try { return o[name] is { } v ? v.GetValue<T>() : throw new InvalidOperationException(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new DataFormatException(path, $"line {line + 1}: field '{name}' is missing or not a {typeof(T).Name.ToLowerInvariant()}");
            }
        }
        if (lines.Count == 0) throw new DataFormatException(path, "empty: expected a header line and one line per task");
        var header = Line(0);
        if (Field<int>(header, "format", 0) != Format) throw new DataFormatException(path, $"manifest format {header["format"]}; this version reads {Format}");
        int count = Field<int>(header, "tasks", 0);
        if (lines.Count - 1 != count) throw new DataFormatException(path, $"the header announces {count} tasks but {lines.Count - 1} follow (a partial copy?)");
        var tasks = new List<SweepTask>();
        for (int i = 1; i < lines.Count; i++)
        {
            var o = Line(i);
            var task = new SweepTask(Field<int>(o, "index", i), Field<string>(o, "key", i), Field<string>(o, "kind", i),
                o["task"] ?? throw new DataFormatException(path, $"line {i + 1}: field 'task' is missing"),
                o["config"] ?? throw new DataFormatException(path, $"line {i + 1}: field 'config' is missing"), Field<string>(o, "description", i));
            if (task.Index != i - 1) throw new DataFormatException(path, $"line {i + 1}: task index {task.Index}, expected {i - 1}");
            // The key is what the notebook will look for: a configuration edited by hand would fill the wrong result.
            if (Sweep.Key(task.Config) is var hashed && hashed != task.Key)
                throw new DataFormatException(path, $"line {i + 1}: the configuration hashes to {hashed}, not its key {task.Key}");
            tasks.Add(task);
        }
        var results = System.IO.Path.GetFullPath(System.IO.Path.Combine(System.IO.Path.GetDirectoryName(path)!, Field<string>(header, "resultsFolder", 0)));
        return new SweepManifest(path, results, Field<string>(header, "workingDirectory", 0), tasks);
    }

    /// <summary>The task at <paramref name="index"/>, or a one-line error giving the range.</summary>
    public SweepTask Task(int index) => index >= 0 && index < Tasks.Count ? Tasks[index]
        : throw new ResearchKitException($"--index: {Path} has tasks 0–{Tasks.Count - 1}; got {index}");
}

/// <summary>
/// The library tasks a manifest can hold, by kind: how a process that is not the notebook (a Slurm array task) computes a
/// configuration's result. A configuration is a task itself, or a record that wraps exactly one (a notebook's arm with its
/// <see cref="Experiment"/>), in which case the wrapped task is run and the wrapper is the key. The runner for a kind is
/// the library's own (<see cref="Experiments.Run"/> for an experiment): a notebook sweep sent to a cluster must compute
/// its results the way the library does, which every notebook sweep of experiments does.
/// </summary>
public static class SweepTasks
{
    /// <summary>One kind: its name in manifests, the task's type, its result's type, and how to compute that result in a
    /// work folder.</summary>
    public sealed record Kind(string Name, Type Type, Type Result, Func<object, string, IProgress<TrainProgress>?, Action<string>?, CancellationToken, object> Run);

    static readonly List<Kind> kinds =
    [
        new("experiment", typeof(Experiment), typeof(ExperimentResult),
            (task, folder, progress, status, cancel) => Experiments.Run((Experiment)task, folder, progress, status, cancel)),
        new("raw-pixel-floor", typeof(RawPixelFloor), typeof(double), (task, _, _, _, _) => Experiments.RawPixelProbe((RawPixelFloor)task)),
    ];

    /// <summary>
    /// The kind and task of a configuration: itself, or the one property of a task type it has. With
    /// <paramref name="result"/> (the sweep's result type), the kind must give that type: a record that wraps an experiment
    /// but whose sweep computes something else (snapshots along training, a fine-tuning) is not that experiment.
    /// </summary>
    public static (Kind Kind, object Task) Find(object config, Type? result = null)
    {
        string Refusal(string why) => $"a {config.GetType().Name} is not a task a cluster can run ({why}): a sweep sent to an executor holds " +
            $"{string.Join(", ", kinds.Select(k => k.Type.Name))} configurations, or records that wrap exactly one, and computes their " +
            $"{string.Join(" or ", kinds.Select(k => k.Result.Name).Distinct())}; run this sweep locally";
        (Kind Kind, object Task)? found = null;
        if (kinds.FirstOrDefault(k => k.Type == config.GetType()) is { } direct) found = (direct, config);
        else
        {
            var wrapped = config.GetType().GetProperties()
                .Select(p => (Property: p, Kind: kinds.FirstOrDefault(k => k.Type == p.PropertyType)))
                .Where(p => p.Kind is not null).ToList();
            if (wrapped.Count == 1 && wrapped[0].Property.GetValue(config) is { } task) found = (wrapped[0].Kind!, task);
        }
        if (found is not { } hit) throw new ResearchKitException(Refusal("it is no task and wraps none"));
        if (result is not null && hit.Kind.Result != result)
            throw new ResearchKitException(Refusal($"its sweep computes {Readable(result)}, while the {hit.Kind.Name} task gives {hit.Kind.Result.Name}"));
        return hit;
    }

    static string Readable(Type type) => type.IsGenericType
        ? $"{type.Name[..type.Name.IndexOf('`')]}<{string.Join(", ", type.GetGenericArguments().Select(Readable))}>" : type.Name;

    public static Kind Of(string name) => kinds.FirstOrDefault(k => k.Name == name)
        ?? throw new ResearchKitException($"unknown sweep task kind '{name}'; this version runs {string.Join(", ", kinds.Select(k => k.Name))}");

    /// <summary>
    /// Runs task <paramref name="index"/> of <paramref name="manifest"/> to its result file, through the same cache, lock and
    /// atomic write as a notebook's sweep (a finished task is not run again; a killed one resumes from its checkpoint). Its
    /// state file says running, stopped, failed or done for `sweep status`.
    /// </summary>
    public static void Run(SweepManifest manifest, int index, IProgress<TrainProgress>? progress = null, Action<string>? status = null,
        CancellationToken cancel = default)
    {
        var task = manifest.Task(index);
        var kind = Of(task.Kind);
        object payload;
        try { payload = task.Task.Deserialize(kind.Type, MethodRegistry.Json)!; }
        catch (Exception e) when (e is JsonException or NotSupportedException or InvalidOperationException)
        {
            throw new DataFormatException(manifest.Path, $"task {index}: not a readable {kind.Name} ({JsonErrors.Plain(e)})");
        }
        // Relative paths in the task (a classifier run, a results folder) are the notebook's: resolve them where it ran.
        if (Directory.Exists(manifest.WorkingDirectory)) Directory.SetCurrentDirectory(manifest.WorkingDirectory);
        try
        {
            // "running" is written once Sweep.Run holds the work folder's lock: written before, `sweep status` read it
            // without a held lock while this process waited or started, and called the task failed.
            Sweep.Run<JsonNode, object>(manifest.ResultsFolder, [task.Config], (_, folder) =>
            {
                SweepTaskState.Write(manifest, index, "running");
                return kind.Run(payload, folder, progress, status, cancel);
            });
            SweepTaskState.Write(manifest, index, "done");
        }
        catch (OperationCanceledException)
        {
            SweepTaskState.Write(manifest, index, "stopped", "stopped by a signal after saving a checkpoint; it resumes when run again");
            throw;
        }
        catch (Exception e)
        {
            SweepTaskState.Write(manifest, index, "failed", e.Message.Split('\n')[0]);
            throw;
        }
    }
}

/// <summary>What a task last said about itself (running, stopped, failed, done), with when and where.</summary>
public sealed record SweepTaskState(string State, string? Message, string Host, DateTime UpdatedUtc, string? SlurmJob)
{
    public static void Write(SweepManifest manifest, int index, string state, string? message = null)
    {
        Directory.CreateDirectory(manifest.Folder);
        var job = Environment.GetEnvironmentVariable("SLURM_ARRAY_JOB_ID") is { } array
            ? $"{array}_{Environment.GetEnvironmentVariable("SLURM_ARRAY_TASK_ID")}" : Environment.GetEnvironmentVariable("SLURM_JOB_ID");
        AtomicFile.WriteAllText(manifest.StatePath(index),
            JsonSerializer.Serialize(new SweepTaskState(state, message, Environment.MachineName, DateTime.UtcNow, job), MethodRegistry.Json));
    }

    public static SweepTaskState? Read(SweepManifest manifest, int index)
    {
        var path = manifest.StatePath(index);
        if (!File.Exists(path)) return null;
        try { return JsonSerializer.Deserialize<SweepTaskState>(File.ReadAllText(path), MethodRegistry.Json); }
        catch (JsonException) { return null; }   // written atomically; a foreign file is as good as none
    }
}

/// <summary>Where one task stands: done (its result file), running (its work folder is locked), failed (its state and
/// the end of its log), or pending (not started, or stopped at a checkpoint and waiting to be run again).</summary>
public sealed record SweepTaskStatus(SweepTask Task, string State, string? Detail)
{
    public static IReadOnlyList<SweepTaskStatus> Of(SweepManifest manifest) => manifest.Tasks.Select(task =>
    {
        if (File.Exists(manifest.ResultPath(task))) return new SweepTaskStatus(task, "done", manifest.ResultPath(task));
        var work = manifest.WorkFolder(task);
        if (Directory.Exists(work) && File.Exists(System.IO.Path.Combine(work, RunLock.FileName)))
        {
            using var probe = RunLock.TryAcquire(work);
            if (probe is null) return new SweepTaskStatus(task, "running", work);
        }
        var state = SweepTaskState.Read(manifest, task.Index);
        return state?.State switch
        {
            "failed" or "running" => new SweepTaskStatus(task, "failed", $"{state.Message ?? "the process ended without a result"}; log {manifest.LogPath(task.Index)}: "
                + string.Join(" | ", LogTail(manifest.LogPath(task.Index), 3))),
            "stopped" => new SweepTaskStatus(task, "pending", "stopped at a checkpoint; resumes when run again"),
            _ => new SweepTaskStatus(task, "pending", null),
        };
    }).ToList();

    /// <summary>The last <paramref name="count"/> non-empty lines of a log (progress redraws split at carriage returns).</summary>
    public static IReadOnlyList<string> LogTail(string path, int count) => !File.Exists(path) ? ["(no log)"]
        : File.ReadAllText(path).Split('\n', '\r').Select(l => l.Trim()).Where(l => l.Length > 0).TakeLast(count).ToList();
}
