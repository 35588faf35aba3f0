using System.Diagnostics;
using System.Text;
using System.Text.Json;
using ResearchKit.Methods;
using ResearchKit.Reporting;
using ResearchKit.Training;

namespace ResearchKit.Runs;

/// <summary>
/// Where a sweep's missing results are computed. <see cref="Local"/> (the default) runs them in this process, one after
/// the other, as <see cref="Sweep.Run{TConfig, TResult}"/> always has. Any other executor receives them as a
/// <see cref="SweepManifest"/>: <see cref="SlurmExecutor"/> sends it to a cluster as one job array, <see cref="ManifestOnly"/>
/// only writes it. A notebook picks one with its <c>Executor</c> parameter (<see cref="Parse"/>).
/// </summary>
public abstract class SweepExecutor
{
    public static SweepExecutor Local { get; } = new LocalExecutor();

    /// <summary>Writes the manifest and stops the cell, saying how to run it (`researchkit sweep run`).</summary>
    public static SweepExecutor ManifestOnly { get; } = new ManifestWriter();

    /// <summary>Whether results are computed by the caller's own function in this process (the local executor).</summary>
    public virtual bool InProcess => false;

    /// <summary>
    /// Computes every task of <paramref name="manifest"/> whose result is missing, and returns when all are in the cache;
    /// or throws: <see cref="SweepSubmittedException"/> when it returns before the results exist (by request), a one-line
    /// error when tasks failed.
    /// </summary>
    public abstract void Execute(SweepManifest manifest, IProgress<SweepProgress>? progress, CancellationToken cancel);

    /// <summary>
    /// A notebook's <c>Executor</c> parameter: "local", "manifest", "slurm" (submit and wait, with progress) or
    /// "slurm:submit" (submit and stop the cell). Slurm's resources come from the file RESEARCHKIT_SLURM_CONFIG names
    /// (<see cref="SlurmOptions.Load"/>), or the defaults.
    /// </summary>
    public static SweepExecutor Parse(string name) => name switch
    {
        "local" => Local,
        "manifest" => ManifestOnly,
        "slurm" => new SlurmExecutor(SlurmOptions.FromEnvironment()),
        "slurm:submit" => new SlurmExecutor(SlurmOptions.FromEnvironment() with { Wait = false }),
        _ => throw new ResearchKitException($"Executor: expected \"local\", \"manifest\", \"slurm\" or \"slurm:submit\"; got \"{name}\""),
    };

    sealed class LocalExecutor : SweepExecutor
    {
        public override bool InProcess => true;

        public override void Execute(SweepManifest manifest, IProgress<SweepProgress>? progress, CancellationToken cancel)
        {
            foreach (var status in SweepTaskStatus.Of(manifest).Where(s => s.State != "done"))
            {
                progress?.Report(new SweepProgress(status.Task.Index, manifest.Tasks.Count, status.Task.Key, false, status.Task.Description));
                Action<string>? said = null;
                if (progress is IProgress<string> text) said = text.Report;
                SweepTasks.Run(manifest, status.Task.Index, progress as IProgress<TrainProgress>, said, cancel);
            }
        }
    }

    sealed class ManifestWriter : SweepExecutor
    {
        public override void Execute(SweepManifest manifest, IProgress<SweepProgress>? progress, CancellationToken cancel) =>
            throw new SweepSubmittedException($"wrote {manifest.Tasks.Count} tasks to {manifest.Path}; run them with `researchkit sweep run {manifest.Path} " +
                "--executor slurm` (or local), then rerun this notebook: it reads their results from the cache");
    }
}

/// <summary>Thrown when a sweep's tasks were handed elsewhere and its results are not there yet: the message says how
/// to collect them. A notebook shows it as the cell's one-line error.</summary>
public sealed class SweepSubmittedException(string message) : ResearchKitException(message);

/// <summary>
/// Slurm resources and behaviour for a sweep's job array, from a small JSON file (camelCase names of these properties),
/// from `sweep run`'s options, or the defaults.
/// </summary>
/// <param name="Partition">sbatch --partition (null: the cluster's default).</param>
/// <param name="Time">sbatch --time per task (HH:MM:SS or D-HH:MM:SS).</param>
/// <param name="CpusPerTask">sbatch --cpus-per-task; each task runs libtorch with as many threads (RESEARCHKIT_THREADS).</param>
/// <param name="Memory">sbatch --mem per task (e.g. "8G"; null: the cluster's default).</param>
/// <param name="Gpus">GPUs per task (sbatch --gres=gpu:N); 0: none.</param>
/// <param name="MaxParallel">At most this many tasks at once (the array's %K); 0: as many as Slurm gives.</param>
/// <param name="Account">sbatch --account (null: the user's default).</param>
/// <param name="ExtraArguments">Further sbatch arguments, verbatim (e.g. "--qos=short").</param>
/// <param name="Command">How a node runs the kit (null: `dotnet` with this installation's ResearchKit.Cli.dll, which needs a
/// file system shared with the nodes).</param>
/// <param name="Wait">Wait for the array with progress (true), or return at once after submitting.</param>
/// <param name="PollSeconds">How often the wait looks at the cache and the queue.</param>
/// <param name="CancelOnInterrupt">Whether interrupting the waiting notebook also cancels the array (scancel).</param>
public sealed record SlurmOptions(string? Partition = null, string Time = "01:00:00", int CpusPerTask = 1, string? Memory = null,
    int Gpus = 0, int MaxParallel = 0, string? Account = null, IReadOnlyList<string>? ExtraArguments = null, string? Command = null,
    bool Wait = true, double PollSeconds = 5, bool CancelOnInterrupt = false)
{
    public const string ConfigVariable = "RESEARCHKIT_SLURM_CONFIG";

    /// <summary>The file RESEARCHKIT_SLURM_CONFIG names, or the defaults when it is unset.</summary>
    public static SlurmOptions FromEnvironment() =>
        Environment.GetEnvironmentVariable(ConfigVariable) is { Length: > 0 } path ? Load(path) : new SlurmOptions();

    /// <summary>Reads options from a JSON file; an unknown field or a bad value is a one-line error naming it.</summary>
    public static SlurmOptions Load(string path)
    {
        if (!File.Exists(path)) throw new ResearchKitException($"{path}: no such Slurm options file");
        SlurmOptions? options;
        try
        {
            options = JsonSerializer.Deserialize<SlurmOptions>(File.ReadAllText(path),
                new JsonSerializerOptions(MethodRegistry.Json) { UnmappedMemberHandling = System.Text.Json.Serialization.JsonUnmappedMemberHandling.Disallow });
        }
        catch (JsonException e) { throw new Data.DataFormatException(path, $"not valid Slurm options ({JsonErrors.Plain(e)})"); }
        return (options ?? throw new Data.DataFormatException(path, "empty")).Validated(path);
    }

    public SlurmOptions Validated(string source = "slurm options")
    {
        if (CpusPerTask < 1) throw new ResearchKitException($"{source}: cpusPerTask must be at least 1; got {CpusPerTask}");
        if (Gpus < 0) throw new ResearchKitException($"{source}: gpus must be 0 or more; got {Gpus}");
        if (MaxParallel < 0) throw new ResearchKitException($"{source}: maxParallel must be 0 (no limit) or more; got {MaxParallel}");
        if (!System.Text.RegularExpressions.Regex.IsMatch(Time, @"^(\d+-)?\d{1,2}(:\d{2}){0,2}$"))
            throw new ResearchKitException($"{source}: time must be Slurm's [D-]HH:MM:SS; got '{Time}'");
        if (PollSeconds is < 0.1 or > 3600) throw new ResearchKitException($"{source}: pollSeconds must be 0.1–3600; got {PollSeconds}");
        return this;
    }
}

/// <summary>
/// A sweep as one Slurm job array: `sbatch --array=I,J,…%K` over the tasks without a result (pending, failed, or stopped),
/// each running `researchkit sweep task MANIFEST --index $SLURM_ARRAY_TASK_ID` with its log in the manifest's folder. Slurm
/// warns a task 60 s before its time limit (--signal=B:TERM@60); the task checkpoints, and the job script requeues it,
/// so it continues where it stopped. Waiting reads the cache (tasks done / total) and the queue, and reports failed
/// tasks with the last lines of their logs.
/// </summary>
public sealed class SlurmExecutor(SlurmOptions options) : SweepExecutor
{
    public SlurmOptions Options { get; } = options.Validated();

    public override void Execute(SweepManifest manifest, IProgress<SweepProgress>? progress, CancellationToken cancel)
    {
        var job = Submit(manifest);
        if (job is null) return;   // nothing left to run
        if (!Options.Wait)
            throw new SweepSubmittedException($"submitted {job.Value.Tasks} tasks as Slurm job {job.Value.Id}; follow them with `researchkit sweep status " +
                $"{manifest.Path}` and rerun this notebook when they are done");
        Wait(manifest, job.Value.Id, progress, cancel);
    }

    /// <summary>Submits the tasks without a result and not running; null when there are none. Returns the array's job id.</summary>
    public (string Id, int Tasks)? Submit(SweepManifest manifest)
    {
        var todo = SweepTaskStatus.Of(manifest).Where(s => s.State is "pending" or "failed").Select(s => s.Task.Index).ToList();
        if (todo.Count == 0) return null;
        Directory.CreateDirectory(manifest.Folder);
        var script = Path.Combine(manifest.Folder, "job.sh");
        AtomicFile.WriteAllText(script, Script(manifest, todo));
        var (code, output, error) = Slurm.Run("sbatch", "--parsable", script);
        if (code != 0) throw new ResearchKitException($"sbatch refused {script}: {Slurm.FirstLine(error, output)}");
        var id = output.Trim().Split(';')[0];
        File.AppendAllText(Path.Combine(manifest.Folder, "jobs.txt"), $"{DateTime.UtcNow:O} {id} {string.Join(",", todo)}\n");
        return (id, todo.Count);
    }

    /// <summary>The job script: resources, the array of <paramref name="indices"/>, the signal forwarding and the requeue.</summary>
    public string Script(SweepManifest manifest, IReadOnlyList<int> indices)
    {
        string Quote(string s) => "'" + s.Replace("'", "'\\''") + "'";
        var lines = new List<string>
        {
            "#!/bin/bash",
            $"#SBATCH --job-name=rk-{Path.GetFileNameWithoutExtension(manifest.Path)}",
            $"#SBATCH --array={string.Join(",", indices)}{(Options.MaxParallel > 0 ? $"%{Options.MaxParallel}" : "")}",
            $"#SBATCH --output={Path.Combine(manifest.Folder, "task-%a.log")}",
            "#SBATCH --open-mode=append",          // a requeued task continues its log
            $"#SBATCH --cpus-per-task={Options.CpusPerTask}",
            $"#SBATCH --time={Options.Time}",
            "#SBATCH --signal=B:TERM@60",          // to this script, which passes it to the task: it checkpoints
            "#SBATCH --requeue",
        };
        if (Options.Partition is { } partition) lines.Add($"#SBATCH --partition={partition}");
        if (Options.Memory is { } memory) lines.Add($"#SBATCH --mem={memory}");
        if (Options.Gpus > 0) lines.Add($"#SBATCH --gres=gpu:{Options.Gpus}");
        if (Options.Account is { } account) lines.Add($"#SBATCH --account={account}");
        lines.AddRange((Options.ExtraArguments ?? []).Select(a => $"#SBATCH {a}"));
        lines.AddRange(
        [
            "export RESEARCHKIT_THREADS=${SLURM_CPUS_PER_TASK:-1}",
            $"cd {Quote(manifest.WorkingDirectory)}",
            "echo \"[$(date -u +%FT%TZ)] task $SLURM_ARRAY_TASK_ID on $(hostname), job ${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID, " +
                "restart ${SLURM_RESTART_COUNT:-0}, $RESEARCHKIT_THREADS threads\"",
            // A job step, so that `scancel --signal=TERM JOB` reaches the task itself.
            $"srun {Options.Command ?? DefaultCommand()} sweep task {Quote(manifest.Path)} --index \"$SLURM_ARRAY_TASK_ID\" &",
            "child=$!",
            // Slurm's warning before the time limit comes to this shell (B:); pass it to the step.
            "trap 'echo \"[$(date -u +%FT%TZ)] SIGTERM: asking the task to checkpoint\"; scancel --signal=TERM \"$SLURM_JOB_ID\"' TERM",
            "while true; do wait $child; code=$?; kill -0 $child 2>/dev/null || break; done",
            // 143: the task saved a checkpoint on SIGTERM. Back in the queue; it resumes from that checkpoint.
            "if [ $code -eq 143 ]; then echo \"[$(date -u +%FT%TZ)] stopped at a checkpoint; requeueing\"; " +
                "scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"; fi",
            "exit $code",
        ]);
        return string.Join("\n", lines) + "\n";
    }

    /// <summary>`dotnet …/ResearchKit.Cli.dll` beside this library (a shared installation), else `researchkit` on PATH.</summary>
    static string DefaultCommand()
    {
        var cli = Path.Combine(AppContext.BaseDirectory, "ResearchKit.Cli.dll");
        return File.Exists(cli) ? $"dotnet '{cli}'" : "researchkit";
    }

    /// <summary>Waits until every task of <paramref name="manifest"/> has a result, or array <paramref name="job"/> has left the queue
    /// without them (a one-line error naming the failed tasks and their logs).</summary>
    public void Wait(SweepManifest manifest, string job, IProgress<SweepProgress>? progress, CancellationToken cancel)
    {
        int total = manifest.Tasks.Count;
        while (true)
        {
            int done = manifest.Tasks.Count(t => File.Exists(manifest.ResultPath(t)));
            bool queued = Slurm.Queued(job);
            progress?.Report(new SweepProgress(Math.Min(done, total - 1), total, job, false,
                $"Slurm job {job}: {done}/{total} tasks done{(queued ? "" : ", the array has left the queue")}"));
            if (done == total) return;
            if (!queued)
            {
                // Re-read after the queue emptied: a result written in the last moments counts.
                var missing = SweepTaskStatus.Of(manifest).Where(s => s.State != "done").ToList();
                if (missing.Count == 0) return;
                throw new ResearchKitException($"Slurm job {job}: {missing.Count} of {total} tasks ended without a result — " +
                    string.Join("; ", missing.Take(3).Select(s => $"task {s.Task.Index} ({s.Task.Description}): {s.Detail ?? s.State}")) +
                    $"; `researchkit sweep status {manifest.Path}` lists them and `sweep run` resubmits only those");
            }
            try { Task.Delay(TimeSpan.FromSeconds(Options.PollSeconds), cancel).Wait(cancel); }
            catch (OperationCanceledException)
            {
                if (Options.CancelOnInterrupt) Slurm.Run("scancel", job);
                Console.Error.WriteLine(Options.CancelOnInterrupt ? $"cancelled Slurm job {job}"
                    : $"stopped waiting; Slurm job {job} goes on (`researchkit sweep status {manifest.Path}`; `scancel {job}` stops it)");
                throw;
            }
        }
    }
}

/// <summary>The Slurm commands the executor calls, with one-line errors when they are missing.</summary>
static class Slurm
{
    public static (int Code, string Output, string Error) Run(string command, params string[] arguments)
    {
        var start = new ProcessStartInfo(command) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in arguments) start.ArgumentList.Add(a);
        try
        {
            using var process = Process.Start(start)!;
            var output = process.StandardOutput.ReadToEndAsync();
            var error = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromMinutes(2)))
            {
                process.Kill(true);
                throw new ResearchKitException($"{command} did not answer in 2 minutes: is slurmctld reachable?");
            }
            return (process.ExitCode, output.Result, error.Result);
        }
        catch (System.ComponentModel.Win32Exception)
        {
            throw new ResearchKitException($"{command} not found: the slurm executor needs Slurm's client commands (sbatch, squeue, scontrol) on PATH");
        }
    }

    /// <summary>Whether any task of array <paramref name="job"/> is still pending or running (requeued ones included).</summary>
    public static bool Queued(string job)
    {
        var (code, output, error) = Run("squeue", "--noheader", "--array", "--jobs", job, "--format=%i %T");
        // squeue fails for a job id it no longer knows: the array is over.
        if (code != 0)
        {
            if (error.Contains("Invalid job id", StringComparison.OrdinalIgnoreCase)) return false;
            throw new ResearchKitException($"squeue: {FirstLine(error, output)}");
        }
        return output.Split('\n').Any(l => l.Trim().Length > 0);
    }

    public static string FirstLine(params string[] texts) =>
        texts.SelectMany(t => t.Split('\n')).Select(l => l.Trim()).FirstOrDefault(l => l.Length > 0) ?? "(no output)";
}
