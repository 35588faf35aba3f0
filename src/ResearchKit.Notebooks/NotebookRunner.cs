using System.Diagnostics;
using System.Text.Json.Nodes;

namespace ResearchKit.Notebooks;

/// <summary>
/// How to run a notebook headless. OutputPath and HtmlPath are rewritten (atomically) after every cell and, while a
/// cell runs, at most every <see cref="SaveInterval"/>, so a crash or an interrupt keeps every finished cell.
/// Session makes the session cells run in; by default a supervised <see cref="WorkerSession"/> in the notebook's folder.
/// </summary>
public sealed record RunOptions(IReadOnlyDictionary<string, string>? Parameters = null, TimeSpan? CellTimeout = null, bool ContinueOnError = false)
{
    public string? OutputPath { get; init; }
    public string? HtmlPath { get; init; }
    public TimeSpan SaveInterval { get; init; } = TimeSpan.FromSeconds(10);
    public long StreamLimit { get; init; } = OutputList.DefaultStreamLimit;
    public Func<string, ICellSession>? Session { get; init; }
}

public enum CellState { Running, Succeeded, Failed, Skipped }

/// <summary>What the terminal shows: which cell, for how long, and the latest Progress(...) text.</summary>
public sealed record CellStatus(CellLabel Cell, CellState State, TimeSpan Elapsed, string? Progress = null);

/// <summary>The executed notebook and whether every cell succeeded; FailedCell is the first failing cell's 0-based index.</summary>
public sealed record RunResult(NotebookDocument Notebook, bool Succeeded, int? FailedCell, string? Error, TimeSpan Elapsed, bool Interrupted = false);

/// <summary>
/// Runs every code cell of an .ipynb in order in one session, like papermill: parameters injected after the
/// `parameters` cell, outputs, execution counts and timings recorded in the notebook, the run stopped at the first
/// error unless ContinueOnError. When the session is lost (a native crash), the cell says why; with ContinueOnError
/// a fresh session runs the later cells that do not need the lost state and marks the ones that do.
/// </summary>
public static class NotebookRunner
{
    public static RunResult Run(string path, RunOptions options, IProgress<CellStatus>? status = null, CancellationToken cancel = default)
    {
        var notebook = NotebookDocument.Load(path);
        InjectParameters(notebook, options.Parameters ?? new Dictionary<string, string>());
        // Where results go is checked before any cell runs: an unwritable path must not cost a two-hour run.
        if (options.OutputPath is { } o) CheckWritable(o, "-o");
        if (options.HtmlPath is { } h) CheckWritable(h, "--html");
        return new Execution(notebook, options, status, cancel).Execute();
    }

    sealed class Execution(NotebookDocument notebook, RunOptions options, IProgress<CellStatus>? status, CancellationToken cancel)
    {
        readonly Stopwatch clock = Stopwatch.StartNew();
        readonly DateTime started = DateTime.UtcNow;
        readonly Dictionary<string, JsonObject> displays = [];   // displays of finished cells, for later updates
        readonly object saveGate = new();
        DateTime lastSave = DateTime.MinValue;

        public RunResult Execute()
        {
            var cells = notebook.CellObjects.ToList();
            foreach (var c in cells.Where(c => NotebookDocument.CellType(c) == "code"))
            {
                c["outputs"] = new JsonArray();
                c["execution_count"] = null;
            }
            SetStatus("running");
            Save(force: true);
            var directory = Path.GetDirectoryName(notebook.Path)!;
            using var session = options.Session?.Invoke(directory) ?? new WorkerSession(directory);
            int executionCount = 0;
            int? failed = null;
            string? error = null;
            bool interrupted = false;
            HashSet<string>? lost = null;   // names whose values died with a lost session
            string? lostIn = null;
            foreach (var (cell, index) in cells.Select((c, i) => (c, i)))
            {
                if (NotebookDocument.CellType(cell) != "code") continue;
                if ((failed is not null && !options.ContinueOnError) || interrupted) continue;   // not run: left without outputs
                var source = NotebookDocument.Source(cell);
                if (string.IsNullOrWhiteSpace(source)) continue;
                var label = new CellLabel(index + 1, executionCount + 1, cells.Count);
                if (lost is not null && lost.Intersect(CellDependencies.Used(source)).Except(CellDependencies.Declared(source)).Order().ToList() is { Count: > 0 } needs)
                {
                    // Running it would only fail on names that no longer exist; say so instead.
                    lost.UnionWith(CellDependencies.Declared(source));
                    Finish(cell, label with { ExecutionCount = 0 }, NotRun(needs, lostIn!), DateTime.UtcNow, CellState.Skipped);
                    continue;
                }
                lost?.ExceptWith(CellDependencies.Declared(source));
                executionCount++;
                var result = RunCell(session, cell, label, source);
                if (!result.Succeeded && failed is null)
                {
                    failed = index;
                    error = $"{label}: {result.ErrorName}: {OneLine(result.ErrorValue)}";
                }
                interrupted |= cancel.IsCancellationRequested;
                if (result.SessionLost && options.ContinueOnError && !interrupted && session is WorkerSession worker)
                {
                    lost = cells.Take(index + 1).Where(c => NotebookDocument.CellType(c) == "code" && c["execution_count"] is not null)
                        .SelectMany(c => CellDependencies.Declared(NotebookDocument.Source(c))).ToHashSet(StringComparer.Ordinal);
                    lostIn = label.ToString();
                    try { worker.Restart(); }
                    catch (ResearchKitException e)
                    {
                        error += $"; no fresh session: {e.Message}";
                        interrupted = true;   // nothing more can run; what ran is saved below
                    }
                }
            }
            SetStatus(cancel.IsCancellationRequested ? "interrupted" : failed is null ? "completed" : "failed");
            Save(force: true);
            return new RunResult(notebook, failed is null && !interrupted, failed, error, clock.Elapsed, cancel.IsCancellationRequested);
        }

        CellResult RunCell(ICellSession session, JsonObject cell, CellLabel label, string source)
        {
            var begin = DateTime.UtcNow;
            string? progress = null;
            bool unsaved = false, ended = false;   // outputs the file lacks; the cell has finished
            var outputs = new OutputList(options.StreamLimit, options.OutputPath is { } o ? name => SpillPath(o, label, name) : null);
            status?.Report(new CellStatus(label, CellState.Running, TimeSpan.Zero));
            void OnOutput(OutputEvent e)
            {
                if (e is ProgressChanged p)
                {
                    progress = p.Text;
                    status?.Report(new CellStatus(label, CellState.Running, DateTime.UtcNow - begin, progress));
                }
                lock (saveGate)
                {
                    if (e is DisplayUpdated u && displays.TryGetValue(u.DisplayId, out var earlier)) earlier["data"] = u.Data.DeepClone();
                    unsaved = true;
                }
                SaveOutputs();
            }
            // The running cell's outputs reach the file at most every SaveInterval: on the next output, or from this timer
            // when the cell goes quiet (a progress line, then a long step), so the file never lags by more than the interval.
            void SaveOutputs()
            {
                lock (saveGate)
                {
                    if (ended || !unsaved || DateTime.UtcNow - lastSave < options.SaveInterval) return;
                    unsaved = false;
                    cell["outputs"] = outputs.ToJson();
                }
                Save(force: false);
            }
            var saver = options.OutputPath is null && options.HtmlPath is null ? null
                : new Timer(_ => SaveOutputs(), null, options.SaveInterval, options.SaveInterval);
            var ticker = status is null ? null : new Timer(_ => status.Report(new CellStatus(label, CellState.Running, DateTime.UtcNow - begin, progress)), null, 1000, 1000);
            session.Output += OnOutput;
            CellResult result;
            try
            {
                result = session.Execute(source, label with { Language = Language(cell) }, outputs, options.CellTimeout, cancel);
            }
            finally
            {
                session.Output -= OnOutput;
                ticker?.Dispose();   // before Finish reports the cell done: no "running" tick after it
                saver?.Dispose();
                lock (saveGate) ended = true;   // a timer callback already under way must not write partial outputs after Finish
            }
            lock (saveGate) result = result with { Outputs = outputs.ToJson(displays) };
            Finish(cell, label, result, begin, result.Succeeded ? CellState.Succeeded : CellState.Failed);
            return result;
        }

        void Finish(JsonObject cell, CellLabel label, CellResult result, DateTime begin, CellState state)
        {
            lock (saveGate)
            {
                cell["outputs"] = result.Outputs;
                cell["execution_count"] = state == CellState.Skipped ? null : label.ExecutionCount;
                var metadata = cell["metadata"] as JsonObject ?? new JsonObject();
                metadata["execution"] = new JsonObject { ["iopub.execute_input"] = Timestamp(begin), ["shell.execute_reply"] = Timestamp(DateTime.UtcNow) };
                metadata["researchkit"] = new JsonObject { ["duration_seconds"] = Math.Round(result.Elapsed.TotalSeconds, 3) };
                cell["metadata"] = metadata;
            }
            status?.Report(new CellStatus(label, state, result.Elapsed));
            Save(force: true);
        }

        static CellResult NotRun(IReadOnlyList<string> needs, string lostIn)
        {
            var message = $"this cell uses {string.Join(", ", needs.Select(n => $"'{n}'"))}, lost when the session ended in {lostIn}";
            var outputs = new OutputList();
            return Failed(outputs, "NotRun", message);
        }

        static CellResult Failed(OutputList outputs, string name, string message)
        {
            outputs.Add(OutputList.ErrorOutput(name, message));
            return new CellResult(outputs.ToJson(), false, name, message, TimeSpan.Zero);
        }

        void SetStatus(string state)
        {
            lock (saveGate)
            {
                var metadata = notebook.Root["metadata"] as JsonObject ?? new JsonObject();
                metadata["researchkit"] = new JsonObject
                {
                    ["parameters"] = new JsonObject((options.Parameters ?? new Dictionary<string, string>()).Select(p => KeyValuePair.Create(p.Key, (JsonNode?)p.Value))),
                    ["start_time"] = Timestamp(started),
                    ["end_time"] = state == "running" ? null : Timestamp(DateTime.UtcNow),
                    ["duration_seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 1),
                    ["status"] = state,
                };
                if (state == "running") RunnerRecord.Current().WriteTo((JsonObject)metadata["researchkit"]!);   // a reader can tell a dead run
                notebook.Root["metadata"] = metadata;
            }
        }

        /// <summary>Writes the output notebook and report as they stand; unforced saves are spaced by SaveInterval.</summary>
        void Save(bool force)
        {
            if (options.OutputPath is null && options.HtmlPath is null) return;
            lock (saveGate)
            {
                if (!force && DateTime.UtcNow - lastSave < options.SaveInterval) return;
                lastSave = DateTime.UtcNow;
                if (options.OutputPath is { } o) notebook.Save(o);
                if (options.HtmlPath is { } h) HtmlReport.Write(notebook, h);
            }
        }
    }

    /// <summary>`out/mae.cell-7.stdout.txt`: the full text of a stream that passed the per-cell limit.</summary>
    static string SpillPath(string outputPath, CellLabel label, string stream) =>
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath(outputPath))!, $"{Path.GetFileNameWithoutExtension(outputPath)}.{label.File.Replace(' ', '-')}.{stream}.txt");

    static void CheckWritable(string path, string option)
    {
        var full = Path.GetFullPath(path);
        OutputPath.File(path, option);
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            var probe = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.probe");
            File.WriteAllText(probe, "");
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ResearchKitException($"{option} {path}: cannot write there ({e.Message.ReplaceLineEndings(" ")})");
        }
    }

    /// <summary>The first line of an error (several compile errors: the first and how many more), for the terminal.</summary>
    static string OneLine(string? text)
    {
        var lines = (text ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries);
        return lines.Length <= 1 ? text ?? "" : $"{lines[0]} (and {lines.Length - 1} more lines)";
    }

    static string Timestamp(DateTime utc) => utc.ToString("yyyy-MM-ddTHH:mm:ss.ffffffZ");

    /// <summary>The cell's language as Polyglot Notebooks records it (kernelName), or as older .NET Interactive did; C# if neither.</summary>
    internal static string Language(JsonObject cell) =>
        cell["metadata"]?["polyglot_notebook"]?["kernelName"]?.GetValue<string>()
            ?? cell["metadata"]?["dotnet_interactive"]?["language"]?.GetValue<string>() ?? "csharp";

    /// <summary>Validates -p values against the parameters cell and inserts the injected-parameters cell after it.</summary>
    public static void InjectParameters(NotebookDocument notebook, IReadOnlyDictionary<string, string> values)
    {
        var cells = notebook.CellObjects.ToList();
        int at = cells.FindIndex(c => NotebookDocument.Tags(c).Contains("parameters"));
        // A previously injected cell (re-running an output notebook) is replaced, as papermill does.
        int old = cells.FindIndex(c => NotebookDocument.Tags(c).Contains("injected-parameters"));
        if (old >= 0) notebook.Cells.RemoveAt(old);
        if (values.Count == 0) return;
        if (at < 0) throw new ResearchKitException($"{notebook.Path}: -p was given but no cell is tagged \"parameters\"");
        var declared = Parameters.Declared(NotebookDocument.Source(cells[at]));
        var injection = Parameters.Injection(declared, values);
        notebook.Cells.Insert(at + 1, notebook.NewCodeCell(injection, "injected-parameters"));
    }
}
