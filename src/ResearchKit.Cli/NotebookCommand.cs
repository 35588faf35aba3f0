using System.CommandLine;
using ResearchKit.Notebooks;

namespace ResearchKit.Cli;

/// <summary>`researchkit notebook run`: execute an .ipynb headless with parameters, like papermill.</summary>
static class NotebookCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("notebook") { Description = ".ipynb to run" };
        var parameters = new Option<string[]>("--parameter", "-p") { Description = "Name=Value, converted to the type of the default in the cell tagged 'parameters' (lists: 1,2 or [1,2]; NaN, Infinity)", AllowMultipleArgumentsPerToken = false };
        var output = new Option<string?>("--output", "-o") { Description = "executed notebook, rewritten after every cell (default: out/NAME.ipynb)" };
        var html = new Option<string?>("--html") { Description = "also write a standalone HTML report (works offline), rewritten after every cell" };
        var timeout = new Option<double?>("--timeout") { Description = "seconds any one cell may run (compilation not counted)" };
        var continueOnError = new Option<bool>("--continue-on-error") { Description = "run the remaining cells after a failing one (exit code is still non-zero)" };
        var device = Commands.DeviceOption();
        var run = new Command("run", "Run every code cell of a notebook (C#, F#, Polyglot magics) in order and write the executed notebook as it goes")
            { input, parameters, output, html, timeout, continueOnError, device };
        run.SetAction(r =>
        {
            var path = r.GetValue(input)!;
            // Cells run in worker processes: the device reaches them (and Compute.Device there) through the environment.
            Compute.Choose(r.GetValue(device));   // a device this machine lacks is refused here, before any cell runs
            Environment.SetEnvironmentVariable("RESEARCHKIT_DEVICE", r.GetValue(device));
            var outPath = r.GetValue(output) ?? Path.Combine("out", Path.GetFileName(path));
            // The executed copy is rewritten after every cell: over the source it would replace the user's notebook.
            if (Path.GetFullPath(outPath) == Path.GetFullPath(path))
                throw new ResearchKitException($"-o {outPath}: that is the notebook being run; write the executed copy elsewhere");
            var options = new RunOptions(Parameters.ParseAssignments(r.GetValue(parameters) ?? []),
                r.GetValue(timeout) is { } s ? CellTimeout(s) : null, r.GetValue(continueOnError))
            { OutputPath = outPath, HtmlPath = r.GetValue(html) };
            using var stop = new GracefulStop("stopping the running cell and saving the notebook");
            var name = Path.GetFileName(path);
            var result = NotebookRunner.Run(path, options, new CellStatusLine(name), stop.Token);
            Console.Error.WriteLine($"wrote {outPath}{(options.HtmlPath is { } h ? $" and {h}" : "")}");
            Console.Error.WriteLine(result.Succeeded
                ? $"{name}: all cells ran in {result.Elapsed.TotalSeconds:F0} s"
                : result.Interrupted ? $"{name}: interrupted; finished cells are saved" : $"error: {name} {result.Error}");
            return result.Succeeded ? 0 : stop.ExitCode != 0 ? stop.ExitCode : 1;
        });

        // The process a WorkerSession starts: one notebook session driven over a socket (not for direct use).
        var socket = new Option<string>("--socket") { Required = true };
        var directory = new Option<string>("--directory") { Required = true };
        var worker = new Command("worker", "Internal: the notebook worker process") { socket, directory };
        worker.Hidden = true;
        worker.SetAction(r => WorkerHost.Run(r.GetValue(socket)!, r.GetValue(directory)!));
        var executed = new Argument<string>("output") { Description = "an output notebook written by `notebook run`" };
        var status = new Command("status", "Whether a run's output notebook is completed, failed, interrupted, running or dead (its runner was killed)")
            { executed };
        status.SetAction(r => Console.WriteLine(RunnerRecord.StatusOf(r.GetValue(executed)!)));
        var notebook = new Argument<string>("notebook") { Description = ".ipynb to export" };
        var to = new Option<string>("--to") { Description = "what to write: cs, a .NET 10 file-based app (`dotnet run NB.cs`)", Required = true };
        var app = new Option<string?>("--output", "-o") { Description = "the file to write (default: the notebook's path with .cs)" };
        var exportParameters = new Option<string[]>("--parameter", "-p")
            { Description = "Name=Value, injected after the parameters cell as `notebook run -p` does", AllowMultipleArgumentsPerToken = false };
        var export = new Command("export", "Write a notebook as a file-based app: #:package ResearchKit, the C# cells in order, markdown as comments")
            { notebook, to, app, exportParameters };
        export.SetAction(r =>
        {
            if (r.GetValue(to) is not "cs")
                throw new ResearchKitException($"--to {r.GetValue(to)}: expected cs (a file-based app); it is the only form there is");
            var path = r.GetValue(notebook)!;
            if (!File.Exists(path)) throw new ResearchKitException($"{path}: no such notebook");
            var written = NotebookExport.Export(path, r.GetValue(app), Parameters.ParseAssignments(r.GetValue(exportParameters) ?? []));
            Console.Error.WriteLine($"wrote {written}: run it with `dotnet run {written}`");
            return 0;
        });
        return new Command("notebook", "Run notebooks headless, or export them as programs") { run, status, export, worker };
    }

    /// <summary>
    /// The running cell and its latest Progress(...) text: one updating line in a terminal; in a log, a line when a cell
    /// starts or ends and at most one progress line every 5 seconds. Cells run in a worker process, so none of this can
    /// reach a cell's outputs.
    /// </summary>
    sealed class CellStatusLine(string name) : IProgress<CellStatus>
    {
        readonly bool live = !Console.IsErrorRedirected;
        readonly object gate = new();
        DateTime lastProgressLine = DateTime.MinValue;
        string? lastProgress;

        public void Report(CellStatus s)
        {
            var state = s.State switch { CellState.Running => "running", CellState.Succeeded => "done", CellState.Skipped => "not run", _ => "FAILED" };
            var line = $"{name}: {s.Cell} {state} {s.Elapsed:hh\\:mm\\:ss}{(s.Progress is { } p ? $" · {p}" : "")}";
            lock (gate)
            {
                if (live)
                {
                    int width = Math.Max(20, SafeWidth() - 1);
                    Console.Error.Write($"\r\x1b[K{(line.Length > width ? line[..(width - 1)] + "…" : line)}{(s.State == CellState.Running ? "" : "\n")}");
                    return;
                }
                bool changed = s.Progress is not null && s.Progress != lastProgress && DateTime.UtcNow - lastProgressLine >= TimeSpan.FromSeconds(5);
                if (s.State != CellState.Running || s.Elapsed == TimeSpan.Zero || changed)
                {
                    Console.Error.WriteLine(line);
                    if (changed) (lastProgressLine, lastProgress) = (DateTime.UtcNow, s.Progress);
                }
            }
        }

        static int SafeWidth()
        {
            try { return Console.WindowWidth > 0 ? Console.WindowWidth : 120; }
            catch (IOException) { return 120; }
        }
    }

    /// <summary>A cell's time limit: a positive, finite number of seconds up to a year (NaN, 0 and negative values used to
    /// fail cells at random or throw from TimeSpan).</summary>
    static TimeSpan CellTimeout(double seconds) => seconds is > 0 and <= 365 * 24 * 3600
        ? TimeSpan.FromSeconds(seconds)
        : throw new ResearchKitException($"--timeout: expected seconds above 0 and at most a year (31536000); got {seconds}");
}
