using System.Diagnostics;
using System.Text.Json.Nodes;

namespace ResearchKit.Notebooks;

/// <summary>How to run a notebook headless.</summary>
public sealed record RunOptions(IReadOnlyDictionary<string, string>? Parameters = null, TimeSpan? CellTimeout = null, bool ContinueOnError = false);

/// <summary>What the terminal shows: a cell starting, running (ticks) or finished.</summary>
public sealed record CellStatus(int CodeCell, int CodeCells, int CellIndex, TimeSpan Elapsed, bool Finished, bool? Succeeded);

/// <summary>The executed notebook and whether every cell succeeded.</summary>
public sealed record RunResult(NotebookDocument Notebook, bool Succeeded, int? FailedCell, string? Error, TimeSpan Elapsed);

/// <summary>
/// Runs every code cell of an .ipynb in order in one <see cref="NotebookSession"/> (in the notebook's folder),
/// like papermill: parameters injected after the `parameters` cell, outputs, execution counts and timings
/// recorded in the notebook, and the run stopped at the first error unless ContinueOnError.
/// </summary>
public static class NotebookRunner
{
    public static RunResult Run(string path, RunOptions options, IProgress<CellStatus>? status = null, CancellationToken cancel = default)
    {
        var notebook = NotebookDocument.Load(path);
        InjectParameters(notebook, options.Parameters ?? new Dictionary<string, string>());
        var clock = Stopwatch.StartNew();
        var started = DateTime.UtcNow;
        using var session = new NotebookSession(Path.GetDirectoryName(notebook.Path)!);
        var cells = notebook.CellObjects.ToList();
        int codeCells = cells.Count(c => NotebookDocument.CellType(c) == "code"), codeIndex = 0, executionCount = 0;
        int? failed = null;
        string? error = null;
        foreach (var (cell, index) in cells.Select((c, i) => (c, i)))
        {
            if (NotebookDocument.CellType(cell) != "code") continue;
            codeIndex++;
            cell["outputs"] = new JsonArray();
            cell["execution_count"] = null;
            if (failed is not null && !options.ContinueOnError) continue;   // not run: left without outputs
            var source = NotebookDocument.Source(cell);
            if (string.IsNullOrWhiteSpace(source)) continue;

            var begin = DateTime.UtcNow;
            status?.Report(new CellStatus(codeIndex, codeCells, index, TimeSpan.Zero, false, null));
            using var ticker = status is null ? null : new Timer(_ => status.Report(new CellStatus(codeIndex, codeCells, index, DateTime.UtcNow - begin, false, null)), null, 1000, 1000);
            CellResult result;
            try
            {
                CheckLanguage(cell, index);
                result = session.Execute(source, ++executionCount, options.CellTimeout, cancel);
            }
            catch (CellSourceException e)
            {
                result = new CellResult(new JsonArray(new JsonObject
                {
                    ["output_type"] = "error", ["ename"] = "CellSourceError", ["evalue"] = e.Message, ["traceback"] = new JsonArray(e.Message),
                }), false, "CellSourceError", e.Message, TimeSpan.Zero);
                executionCount = Math.Max(executionCount, 1);
            }
            ticker?.Dispose();
            cell["outputs"] = result.Outputs;
            cell["execution_count"] = executionCount;
            var metadata = cell["metadata"] as JsonObject ?? new JsonObject();
            metadata["execution"] = new JsonObject
            {
                ["iopub.execute_input"] = Timestamp(begin),
                ["shell.execute_reply"] = Timestamp(DateTime.UtcNow),
            };
            metadata["researchkit"] = new JsonObject { ["duration_seconds"] = Math.Round(result.Elapsed.TotalSeconds, 3) };
            cell["metadata"] = metadata;
            status?.Report(new CellStatus(codeIndex, codeCells, index, result.Elapsed, true, result.Succeeded));
            if (!result.Succeeded && failed is null)
            {
                failed = index;
                error = $"cell {index} ({result.ErrorName}): {result.ErrorValue}";
            }
        }
        var notebookMetadata = notebook.Root["metadata"] as JsonObject ?? new JsonObject();
        notebookMetadata["researchkit"] = new JsonObject
        {
            ["parameters"] = new JsonObject((options.Parameters ?? new Dictionary<string, string>()).Select(p => KeyValuePair.Create(p.Key, (JsonNode?)p.Value))),
            ["start_time"] = Timestamp(started),
            ["end_time"] = Timestamp(DateTime.UtcNow),
            ["duration_seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 1),
            ["status"] = failed is null ? "completed" : "failed",
        };
        notebook.Root["metadata"] = notebookMetadata;
        return new RunResult(notebook, failed is null, failed, error, clock.Elapsed);
    }

    static string Timestamp(DateTime utc) => utc.ToString("yyyy-MM-ddTHH:mm:ss.ffffffZ");

    /// <summary>Cells that Polyglot marks as another language cannot run here.</summary>
    static void CheckLanguage(JsonObject cell, int index)
    {
        var language = cell["metadata"]?["polyglot_notebook"]?["kernelName"]?.GetValue<string>()
            ?? cell["metadata"]?["dotnet_interactive"]?["language"]?.GetValue<string>();
        if (language is not null and not "csharp")
            throw new CellSourceException($"cell {index} is a {language} cell; ResearchKit runs C# cells only");
    }

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
