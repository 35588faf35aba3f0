using System.CommandLine;
using ResearchKit.Reporting;
using ResearchKit.Training;
using ResearchKit.Runs;

namespace ResearchKit.Cli;

/// <summary>
/// `sweep run|status|task MANIFEST`: a notebook's sweep written as a manifest (<see cref="SweepManifest"/>), run here or as
/// a Slurm job array, followed task by task, and computed one task at a time on a node. Results go to the notebook's cache.
/// </summary>
static class SweepCommand
{
    public static Command Create()
    {
        var command = new Command("sweep", "Run a notebook's sweep from its manifest, here or as a Slurm job array, and follow it");
        command.Subcommands.Add(RunCommand());
        command.Subcommands.Add(StatusCommand());
        command.Subcommands.Add(TaskCommand());
        return command;
    }

    static Argument<string> ManifestArgument() => new("manifest") { Description = "sweep manifest (RESULTS/sweeps/sweep-*.jsonl, written by a notebook run with Executor = \"manifest\" or \"slurm\")" };

    static Command RunCommand()
    {
        var manifest = ManifestArgument();
        var executor = new Option<string>("--executor") { Description = "local (one task after another in this process) or slurm (one job array)", DefaultValueFactory = _ => "local" };
        executor.AcceptOnlyFromAmong("local", "slurm");
        var config = new Option<string?>("--slurm-config") { Description = $"Slurm options file (JSON; default: ${SlurmOptions.ConfigVariable} or none)" };
        var partition = new Option<string?>("--partition") { Description = "sbatch --partition" };
        var time = new Option<string?>("--time") { Description = "time limit per task, [D-]HH:MM:SS (default 01:00:00)" };
        var cpus = new Option<int?>("--cpus") { Description = "CPUs per task, and libtorch threads (default 1)" };
        var memory = new Option<string?>("--mem") { Description = "memory per task, e.g. 8G" };
        var gpus = new Option<int?>("--gpus") { Description = "GPUs per task (--gres=gpu:N)" };
        var parallel = new Option<int?>("--max-parallel") { Description = "at most this many tasks at once (the array's %K)" };
        var noWait = new Option<bool>("--no-wait") { Description = "submit and return; follow with `sweep status`" };
        var device = Commands.DeviceOption();
        var command = new Command("run", "Compute every task of a manifest without a result (failed and missing ones only), here or on Slurm")
            { manifest, executor, config, partition, time, cpus, memory, gpus, parallel, noWait, device };
        command.SetAction(r => Commands.Run(r.GetValue(device)!, () =>
        {
            var sweep = SweepManifest.Read(r.GetValue(manifest)!);
            SweepExecutor chosen;
            if (r.GetValue(executor) == "slurm")
            {
                var options = r.GetValue(config) is { } file ? SlurmOptions.Load(file) : SlurmOptions.FromEnvironment();
                options = options with
                {
                    Partition = r.GetValue(partition) ?? options.Partition, Time = r.GetValue(time) ?? options.Time,
                    CpusPerTask = r.GetValue(cpus) ?? options.CpusPerTask, Memory = r.GetValue(memory) ?? options.Memory,
                    Gpus = r.GetValue(gpus) ?? options.Gpus, MaxParallel = r.GetValue(parallel) ?? options.MaxParallel,
                    Wait = !r.GetValue(noWait) && options.Wait,
                };
                chosen = new SlurmExecutor(options.Validated("options"));
            }
            else chosen = SweepExecutor.Local;
            using var stop = new GracefulStop(chosen.InProcess ? "stopping after the current step and saving a checkpoint" : "stopping the wait (the array goes on)");
            using var progress = new TerminalProgress("sweep");
            string? last = null;   // the wait reports every poll: print a line only when something changed
            var said = new CallbackProgress<SweepProgress>(p =>
            {
                var line = chosen.InProcess ? $"[{p.Index + 1}/{p.Count}] {p.Description}" : p.Description;
                if (line != last) Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss} {line}");
                last = line;
            });
            try
            {
                chosen.Execute(sweep, chosen.InProcess ? new SweepAndTrainProgress(said, stop.Track(progress)) : said, stop.Token);
            }
            catch (OperationCanceledException) when (stop.ExitCode != 0)
            {
                return stop.ExitCode;
            }
            catch (SweepSubmittedException e)
            {
                Console.WriteLine(e.Message);
                return 0;
            }
            Print(sweep);
            return 0;
        }));
        return command;
    }

    static Command StatusCommand()
    {
        var manifest = ManifestArgument();
        var command = new Command("status", "Each task of a manifest: done (and its result), running, failed (with its log's last lines) or pending") { manifest };
        command.SetAction(r =>
        {
            var sweep = SweepManifest.Read(r.GetValue(manifest)!);
            Print(sweep);
            return 0;
        });
        return command;
    }

    static void Print(SweepManifest sweep)
    {
        var statuses = SweepTaskStatus.Of(sweep);
        foreach (var s in statuses)
            Console.WriteLine($"{s.Task.Index,4}  {s.State,-8} {s.Task.Description}{(s.Detail is null ? "" : $" — {s.Detail}")}");
        Console.WriteLine(string.Join(", ", statuses.GroupBy(s => s.State).OrderBy(g => g.Key).Select(g => $"{g.Count()} {g.Key}")) + $" of {statuses.Count}; results in {sweep.ResultsFolder}");
    }

    static Command TaskCommand()
    {
        var manifest = ManifestArgument();
        var index = new Option<int>("--index") { Description = "the task (a Slurm array task passes $SLURM_ARRAY_TASK_ID)", Required = true };
        var device = Commands.DeviceOption();
        var command = new Command("task", "Compute one task of a manifest into the results cache (resumes from its checkpoint; SIGTERM saves one)")
            { manifest, index, device };
        command.SetAction(r => Commands.Run(r.GetValue(device)!, () =>
        {
            var sweep = SweepManifest.Read(r.GetValue(manifest)!);
            var task = sweep.Task(r.GetValue(index));
            using var progress = new TerminalProgress($"task {task.Index}");
            using var stop = new GracefulStop();
            Console.WriteLine($"task {task.Index} of {sweep.Tasks.Count}: {task.Description} (key {task.Key})");
            try
            {
                SweepTasks.Run(sweep, task.Index, stop.Track(progress), message => Console.WriteLine(message), stop.Token);
            }
            catch (OperationCanceledException) when (stop.ExitCode != 0)
            {
                progress.Dispose();
                Console.Error.WriteLine($"stopped at step {stop.LastStep} of {stop.TotalSteps}; the checkpoint in {sweep.WorkFolder(task)} holds it; the task resumes when run again");
                return stop.ExitCode;
            }
            Console.WriteLine($"task {task.Index} done: {sweep.ResultPath(task)}");
            return 0;
        }));
        return command;
    }

    /// <summary>A sweep's progress and its tasks' training progress, for the local executor.</summary>
    sealed class SweepAndTrainProgress(IProgress<SweepProgress> sweep, IProgress<ResearchKit.Training.TrainProgress> train)
        : IProgress<SweepProgress>, IProgress<ResearchKit.Training.TrainProgress>
    {
        public void Report(SweepProgress value) => sweep.Report(value);
        public void Report(ResearchKit.Training.TrainProgress value) => train.Report(value);
    }
}
