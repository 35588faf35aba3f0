using System.Collections.Immutable;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp.Scripting;
using Microsoft.CodeAnalysis.Scripting;
using ResearchKit.Reporting;

namespace ResearchKit.Notebooks;

/// <summary>A display created by display(); Update replaces its content in place.</summary>
public sealed class DisplayHandle
{
    internal DisplayHandle(NotebookSession session, string id)
    {
        this.session = session;
        Id = id;
    }

    readonly NotebookSession session;
    public string Id { get; }

    public void Update(object? value) => session.UpdateDisplay(Id, value);
}

/// <summary>What front ends are told as a cell runs (a kernel forwards these as iopub messages; the runner saves them as they come).</summary>
public abstract record OutputEvent;
public sealed record OutputAdded(JsonObject Output, string? DisplayId) : OutputEvent;
public sealed record DisplayUpdated(string DisplayId, JsonObject Data) : OutputEvent;
public sealed record StreamWritten(string Name, string Text) : OutputEvent;
/// <summary>The latest text of a Progress(...) line (epoch, step, loss, ETA), for a terminal status line.</summary>
public sealed record ProgressChanged(string Text) : OutputEvent;
/// <summary>The cell compiled and started running: its timeout counts from here.</summary>
public sealed record CellStarted : OutputEvent;

/// <summary>
/// Which cell runs, numbered one way everywhere: its execution count (Jupyter's `In [n]`) and its 1-based
/// position among all the notebook's cells (`cell 5`, the name stack traces and compile errors use).
/// </summary>
public sealed record CellLabel(int Index, int ExecutionCount, int CellCount = 0)
{
    /// <summary>The compilation's file name, so stack frames read `cell 5:line 3`.</summary>
    public string File => $"cell {Index}";
    public override string ToString() =>
        $"In [{(ExecutionCount > 0 ? ExecutionCount : " ")}] (cell {Index}{(CellCount > 0 ? $" of {CellCount}" : "")})";
}

/// <summary>The result of one cell: its nbformat outputs and, when it failed, the error. SessionLost: every earlier cell's state is gone.</summary>
public sealed record CellResult(JsonArray Outputs, bool Succeeded, string? ErrorName, string? ErrorValue, TimeSpan Elapsed, bool SessionLost = false);

/// <summary>Something that runs cells in order in one state: in this process, or in a supervised worker process.</summary>
public interface ICellSession : IDisposable
{
    event Action<OutputEvent>? Output;
    CellResult Execute(string source, CellLabel cell, OutputList? outputs = null, TimeSpan? timeout = null, CancellationToken cancel = default);
}

/// <summary>
/// A C# notebook session on Roslyn scripting: cells run in order in one script state, so variables,
/// types and usings carry across cells. Captures stdout/stderr as stream outputs, offers display()
/// with in-place updates, formats values through <see cref="MimeFormatter"/>, and inlines plotly.js
/// once per session. Runs in the process that creates it: a native crash in a cell ends that process,
/// so the runner and the kernel drive it inside a <see cref="WorkerSession"/>.
/// </summary>
public sealed class NotebookSession : ICellSession
{
    /// <summary>Packages whose `#r "nuget: …"` lines are accepted: ResearchKit already references them.</summary>
    public static readonly IReadOnlySet<string> ShippedPackages = new HashSet<string>(StringComparer.OrdinalIgnoreCase)
    {
        "TorchSharp", "TorchSharp-cpu", "libtorch-cpu-linux-x64", "Plotly.NET", "Plotly.NET.CSharp", "Plotly.NET.Interactive",
        "Deedle", "SkiaSharp", "Microsoft.DotNet.Interactive.Formatting", "ResearchKit",
    };

    static readonly string[] Imports =
    [
        "System", "System.IO", "System.Linq", "System.Collections.Generic", "System.Threading", "System.Threading.Tasks",
        "TorchSharp", "Deedle", "Plotly.NET", "Plotly.NET.CSharp", "ResearchKit", "ResearchKit.Data", "ResearchKit.Models", "ResearchKit.Tokenizers",
        "ResearchKit.Training", "ResearchKit.Evaluation", "ResearchKit.Methods", "ResearchKit.Runs", "ResearchKit.Reporting", "ResearchKit.Notebooks",
    ];

    /// <summary>
    /// Run before the first cell. Aliases settle names two default namespaces share (Deedle.Frame vs Plotly.NET.Frame,
    /// Plotly.NET.Chart vs the C# API's Chart). Extension methods declared in a submission take precedence over imported
    /// ones, so `chart.Show()` displays in the notebook instead of opening a browser, and Polyglot's `x.Display()` works.
    /// </summary>
    const string Preamble = """
        using Frame = Deedle.Frame;
        using Chart = Plotly.NET.CSharp.Chart;
        public static ResearchKit.Notebooks.DisplayHandle Show(this Plotly.NET.GenericChart chart) => ResearchKit.Notebooks.NotebookSession.DisplayCurrent(chart);
        public static ResearchKit.Notebooks.DisplayHandle Display(this object value) => ResearchKit.Notebooks.NotebookSession.DisplayCurrent(value);
        """;

    static readonly AsyncLocal<NotebookSession?> current = new();

    readonly ScriptOptions options;
    readonly NotebookGlobals globals;
    readonly TextWriter originalOut = Console.Out, originalError = Console.Error;
    ScriptState<object>? state;
    OutputList outputs = new();
    readonly HashSet<string> displayIds = [];
    bool plotlyIncluded;

    public string WorkingDirectory { get; }
    public event Action<OutputEvent>? Output;

    public NotebookSession(string workingDirectory)
    {
        WorkingDirectory = Path.GetFullPath(workingDirectory);
        globals = new NotebookGlobals(this);
        var assemblies = new[]
        {
            typeof(NotebookSession), typeof(Compute), typeof(TorchSharp.torch), typeof(Deedle.Frame), typeof(Plotly.NET.GenericChart),
            typeof(Plotly.NET.CSharp.Chart), typeof(Microsoft.FSharp.Core.FSharpOption<>), typeof(SkiaSharp.SKBitmap),
        }.Select(t => t.Assembly).Distinct();
        options = ScriptOptions.Default
            .WithReferences(assemblies)
            .AddReferences(typeof(System.Text.Json.JsonSerializer).Assembly)
            .WithImports(Imports)
            .WithMetadataResolver(ScriptMetadataResolver.Default.WithBaseDirectory(WorkingDirectory))
            .WithSourceResolver(new SourceFileResolver(ImmutableArray<string>.Empty, WorkingDirectory))
            .WithOptimizationLevel(OptimizationLevel.Release)
            .WithEmitDebugInformation(true).WithFileEncoding(Encoding.UTF8)   // stack frames carry `cell N:line M`
            .WithLanguageVersion(Microsoft.CodeAnalysis.CSharp.LanguageVersion.Latest);
    }

    /// <summary>Completions at <paramref name="cursor"/> of code typed as the next cell (Jupyter's complete_reply content).</summary>
    public JsonObject Complete(string code, int cursor)
    {
        WarmUp();
        return CodeAssistance.Complete(state!.Script.ContinueWith(code, options), code, cursor);
    }

    /// <summary>The signature and documentation of the symbol at <paramref name="cursor"/> (Jupyter's inspect_reply content).</summary>
    public JsonObject Inspect(string code, int cursor)
    {
        WarmUp();
        return CodeAssistance.Inspect(state!.Script.ContinueWith(code, options), code, cursor);
    }

    /// <summary>A cell's syntax as the session compiles it (script kind, latest language version), for analyses before compiling.</summary>
    public static SyntaxTree ParseCell(string code) =>
        Microsoft.CodeAnalysis.CSharp.CSharpSyntaxTree.ParseText(code, new Microsoft.CodeAnalysis.CSharp.CSharpParseOptions(
            Microsoft.CodeAnalysis.CSharp.LanguageVersion.Latest, kind: SourceCodeKind.Script));

    /// <summary>Displays a value in the cell running on this call's logical thread (Show(), x.Display()).</summary>
    public static DisplayHandle DisplayCurrent(object? value) =>
        (current.Value ?? throw new InvalidOperationException("display needs a running notebook cell")).Display(value);

    /// <summary>Compiles and runs the preamble: loads Roslyn and the references once, so no cell's timeout pays for it.</summary>
    public void WarmUp()
    {
        if (state is not null) return;
        state = CSharpScript.Create(Preamble, options.WithFilePath("preamble"), typeof(NotebookGlobals)).RunAsync(globals).GetAwaiter().GetResult();
    }

    /// <summary>Runs one cell's source; a cell we cannot run (another language, an unknown package) fails with CellSourceError.</summary>
    public CellResult Execute(string source, CellLabel cell, OutputList? outputList = null, TimeSpan? timeout = null, CancellationToken cancel = default)
    {
        WarmUp();
        outputs = outputList ?? new OutputList();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string code;
        try { code = Interrupts.Instrument(Preprocess(source)); }
        catch (CellSourceException e)
        {
            outputs.Complete();
            return Fail(clock, "CellSourceError", e.Message, []);
        }
        var previousDirectory = Directory.GetCurrentDirectory();
        Console.SetOut(new CellWriter(this, "stdout"));
        Console.SetError(new CellWriter(this, "stderr"));
        Directory.SetCurrentDirectory(WorkingDirectory);
        current.Value = this;
        try
        {
            var script = state!.Script.ContinueWith(code, options.WithFilePath(cell.File));
            var errors = script.Compile(cancel).Where(d => d.Severity == DiagnosticSeverity.Error).ToArray();
            if (errors.Length > 0)
            {
                var lines = errors.Select(Diagnostic).ToArray();
                return Fail(clock, "CompilationError", string.Join("\n", lines), lines);
            }
            Output?.Invoke(new CellStarted());
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            globals.Cancel = linked.Token;
            Interrupts.Current = linked.Token;
            var task = Task.Run(() => script.RunFromAsync(state, _ => true, linked.Token));
            if (!task.Wait(timeout ?? Timeout.InfiniteTimeSpan))
            {
                linked.Cancel();
                // Loops and methods check the token (Interrupts), so the cell normally stops within the grace period;
                // one blocked in a call that checks nothing runs on in the background (the worker's supervisor ends it).
                bool stopped = task.Wait(TimeSpan.FromSeconds(5));
                return Fail(clock, "TimeoutError", $"the cell ran longer than {timeout!.Value.TotalSeconds:0.#} s (--timeout){(stopped ? "" : " and did not stop when cancelled")}", []);
            }
            var next = task.Result;
            state = next;   // after an exception too: earlier variables stay for --continue-on-error
            if (next.Exception is { } error)
            {
                if (cancel.IsCancellationRequested && (error is OperationCanceledException || error.InnerException is OperationCanceledException)) return Cancelled(clock);
                var message = ErrorText.Clean(error.Message);
                return Fail(clock, error.GetType().Name, message, ErrorText.Traceback(error, message));
            }
            if (next.ReturnValue is { } value and not DisplayHandle)
            {
                // Formatting runs the value's own code (a lazy query, ToString): its exception fails the cell, like the cell's own.
                try { Add(Result(value, cell.ExecutionCount)); }
                catch (Exception thrown)
                {
                    var e = thrown;   // formatters call through reflection: report what the value's code threw
                    while (e is System.Reflection.TargetInvocationException or AggregateException && e.InnerException is not null) e = e.InnerException;
                    var message = $"displaying the cell's value failed: {ErrorText.Clean(e.Message)}";
                    return Fail(clock, e.GetType().Name, message, ErrorText.Traceback(e, message));
                }
            }
            return new CellResult(outputs.ToJson(), true, null, null, clock.Elapsed);
        }
        catch (AggregateException e) when (e.InnerException is OperationCanceledException)
        {
            return Cancelled(clock);
        }
        catch (OperationCanceledException)
        {
            return Cancelled(clock);
        }
        finally
        {
            CancelReason = null;
            Interrupts.Current = CancellationToken.None;
            current.Value = null;
            Console.Out.Flush();
            Console.SetOut(originalOut);
            Console.SetError(originalError);
            Directory.SetCurrentDirectory(previousDirectory);
            outputs.Complete();
            // Tensors that became unreachable in this cell free their native memory now, not at some later GC.
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
    }

    /// <summary>Why the cancel token will fire (a supervisor's time limit, say), for the cell's error; an interrupt when unset.</summary>
    public (string Name, string Value)? CancelReason { get; set; }

    CellResult Cancelled(System.Diagnostics.Stopwatch clock) =>
        Fail(clock, CancelReason?.Name ?? "Interrupted", CancelReason?.Value ?? "the cell was interrupted", []);

    /// <summary>`cell 5, line 3: error CS0103: The name 'x' does not exist in the current context`.</summary>
    static string Diagnostic(Diagnostic d)
    {
        var span = d.Location.GetLineSpan();
        var where = span.Path is { Length: > 0 } file ? $"{file}, line {span.StartLinePosition.Line + 1}: " : "";
        return $"{where}error {d.Id}: {d.GetMessage(System.Globalization.CultureInfo.InvariantCulture)}";
    }

    CellResult Fail(System.Diagnostics.Stopwatch clock, string name, string value, string[] traceback)
    {
        Add(OutputList.ErrorOutput(name, value, traceback));
        return new CellResult(outputs.ToJson(), false, name, value, clock.Elapsed);
    }

    static readonly Regex NugetReference = new(@"^\s*#r\s+""nuget:\s*([^,""\s]+)\s*(?:,\s*([^""]*))?""\s*$", RegexOptions.Compiled);
    static readonly Regex Magic = new(@"^\s*#!(\S+)", RegexOptions.Compiled);

    /// <summary>
    /// Polyglot conventions: a leading #!csharp (or #!c#) is dropped; another language's magic is an error;
    /// `#r "nuget: X, V"` for a package the kit ships is dropped (already referenced), any other is an error.
    /// `#r "path.dll"` stays for Roslyn to load. Dropped lines become blank so line numbers still match.
    /// </summary>
    public static string Preprocess(string source)
    {
        var lines = source.Replace("\r\n", "\n").Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            var magic = Magic.Match(lines[i]);
            if (magic.Success)
            {
                var name = magic.Groups[1].Value.ToLowerInvariant();
                if (name is "csharp" or "c#" or "cs") { lines[i] = ""; continue; }
                throw new CellSourceException($"line {i + 1}: '#!{magic.Groups[1].Value}' — ResearchKit runs C# cells only (#!csharp); move {magic.Groups[1].Value} code out of this notebook");
            }
            var nuget = NugetReference.Match(lines[i]);
            if (nuget.Success)
            {
                var package = nuget.Groups[1].Value;
                if (!ShippedPackages.Contains(package))
                    throw new CellSourceException($"line {i + 1}: package '{package}' is not shipped with ResearchKit and cannot be fetched here; shipped: {string.Join(", ", ShippedPackages.Order())}");
                lines[i] = "";
            }
        }
        return string.Join("\n", lines);
    }

    JsonObject Result(object value, int executionCount) => new()
    {
        ["output_type"] = "execute_result",
        ["execution_count"] = executionCount,
        ["data"] = Bundle(value),
        ["metadata"] = new JsonObject(),
    };

    JsonObject Bundle(object? value)
    {
        var data = new JsonObject();
        foreach (var (mime, content) in MimeFormatter.Format(value))
        {
            var text = content;
            if (mime == "text/html" && !plotlyIncluded && text.Contains("researchkit-chart", StringComparison.Ordinal))
            {
                text = PlotlyHtml.PlotlyScript() + text;   // once per session, before the first chart
                plotlyIncluded = true;
            }
            // nbformat: JSON mime types hold JSON, images one base64 string, text a list of lines.
            data[mime] = mime.EndsWith("json", StringComparison.Ordinal) ? JsonNode.Parse(text)
                : mime.StartsWith("image/", StringComparison.Ordinal) ? text : NotebookDocument.Lines(text);
        }
        return data;
    }

    void Add(JsonObject output, string? displayId = null)
    {
        outputs.Add(output, displayId);
        Output?.Invoke(new OutputAdded(output, displayId));
    }

    internal DisplayHandle Display(object? value)
    {
        var id = Guid.NewGuid().ToString("N");
        displayIds.Add(id);
        Add(new JsonObject { ["output_type"] = "display_data", ["data"] = Bundle(value), ["metadata"] = new JsonObject() }, id);
        return new DisplayHandle(this, id);
    }

    internal void UpdateDisplay(string id, object? value)
    {
        if (!displayIds.Contains(id)) return;
        var data = Bundle(value);
        outputs.Update(id, data);   // false when the display belongs to an earlier cell: the runner updates it there
        Output?.Invoke(new DisplayUpdated(id, data));
    }

    internal void ReportProgress(string text) => Output?.Invoke(new ProgressChanged(text));

    internal void WriteStream(string name, string text)
    {
        if (text.Length == 0) return;
        outputs.Stream(name, text);
        Output?.Invoke(new StreamWritten(name, text));
    }

    public void Dispose()
    {
        Console.SetOut(originalOut);
        Console.SetError(originalError);
    }

    sealed class CellWriter(NotebookSession session, string name) : TextWriter
    {
        public override Encoding Encoding => Encoding.UTF8;
        public override void Write(char value) => session.WriteStream(name, value.ToString());
        public override void Write(string? value) => session.WriteStream(name, value ?? "");
        public override void WriteLine(string? value) => session.WriteStream(name, (value ?? "") + "\n");
    }
}

/// <summary>A cell that cannot run as written (another language, a package we do not ship).</summary>
public sealed class CellSourceException(string message) : ResearchKitException(message);
