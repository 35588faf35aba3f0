using System.Collections.Immutable;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.DotNet.Interactive.Formatting;
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
    /// <summary>The kernel the cell's lines go to until a magic says otherwise (Polyglot's kernelName metadata).</summary>
    public string Language { get; init; } = "csharp";

    /// <summary>The compilation's file name, so stack frames read `cell 5:line 3`; `In [3]` when the position is unknown (0).</summary>
    public string File => Index > 0 ? $"cell {Index}" : $"In [{ExecutionCount}]";
    public override string ToString() => Index > 0
        ? $"In [{(ExecutionCount > 0 ? ExecutionCount : " ")}] (cell {Index}{(CellCount > 0 ? $" of {CellCount}" : "")})"
        : $"In [{ExecutionCount}]";
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

    ScriptOptions options;   // grows as `#r "nuget: …"` adds packages
    readonly NotebookGlobals globals;
    readonly SessionNotebookHost host;
    readonly TextWriter originalOut = Console.Out, originalError = Console.Error;
    ScriptState<object>? state;
    readonly System.Diagnostics.Stopwatch running = new();   // since the cell's first code started
    OutputList outputs = new();
    readonly HashSet<string> displayIds = [];
    readonly HashSet<InlinedLibraries.Library> inlined = [];   // each once per session, before its first use
    readonly PolyglotKernels polyglot;
    readonly PackageReferences packages;
    FSharpKernel? fsharp;   // started by the first F# part
    readonly List<string> packageErrors = [];   // this cell's references that could not be honoured

    public string WorkingDirectory { get; }
    public event Action<OutputEvent>? Output;

    /// <summary>
    /// Whether <see cref="Execute"/> ends with <see cref="ReleaseUnreachable"/>. A worker process turns it off and calls it
    /// once it has sent the cell's result, so the collection leaves the reply's path (it still ends before the next cell
    /// starts). A background collection instead let the worker grow by 1.2 MB a cell (KernelTests' 150 cells of 4 MB tensors).
    /// </summary>
    public bool ReleaseAfterEachCell { get; set; } = true;

    /// <summary>How often at most a run of quick cells pays for a full collection (<see cref="ReleaseUnreachable"/>).</summary>
    public static readonly TimeSpan FullCollectionInterval = TimeSpan.FromSeconds(1);

    readonly System.Diagnostics.Stopwatch sinceFullCollection = System.Diagnostics.Stopwatch.StartNew();

    /// <summary>
    /// Tensors that became unreachable in a cell free their native memory now, not at some later GC (TorchSharp's
    /// finalizers free it; the managed heap feels no pressure from it). A full collection costs 3–8 ms with Roslyn and
    /// TorchSharp loaded, a third of a trivial cell's round trip, so it runs only when the last one is
    /// <see cref="FullCollectionInterval"/> old, which is always the case after a cell that ran that long; otherwise only
    /// the young generations are collected, which hold what the quick cell made and dropped. A tensor an earlier cell
    /// made, dropped by a quick cell, is thus freed within a second of cells, or after the next slow one.
    /// </summary>
    public void ReleaseUnreachable()
    {
        bool full = sinceFullCollection.Elapsed >= FullCollectionInterval;
        GC.Collect(full ? GC.MaxGeneration : 1);
        GC.WaitForPendingFinalizers();
        if (full) sinceFullCollection.Restart();
    }

    public NotebookSession(string workingDirectory)
    {
        WorkingDirectory = Path.GetFullPath(workingDirectory);
        globals = new NotebookGlobals(this);
        host = new SessionNotebookHost(this, globals);
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
        polyglot = new PolyglotKernels(this, new CSharpVariables(this), () => FSharp);
        packages = new PackageReferences(WorkingDirectory);
    }

    /// <summary>Paths of the assemblies C# cells reference: F# gets the same ones.</summary>
    IEnumerable<string> ReferencePaths() => options.MetadataReferences.OfType<PortableExecutableReference>()
        .Select(r => r.FilePath).OfType<string>().Where(p => p.Length > 0);

    FSharpKernel FSharp => fsharp ??= new FSharpKernel(ReferencePaths().Concat(packages.Assemblies), WorkingDirectory);

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

    /// <summary>
    /// Runs one cell's source: its parts in order (<see cref="PolyglotCell"/>), stopping at the first that fails. A cell
    /// we cannot run (an unknown magic, an unknown package) fails with CellSourceError before any part runs.
    /// </summary>
    public CellResult Execute(string source, CellLabel cell, OutputList? outputList = null, TimeSpan? timeout = null, CancellationToken cancel = default)
    {
        WarmUp();
        outputs = outputList ?? new OutputList();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        PolyglotCell parsed;
        try { parsed = PolyglotCell.Parse(source, cell.Language); }
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
        Notebook.SetCellHost(host);
        try
        {
            running.Reset();
            packageErrors.Clear();
            foreach (var part in parsed.Parts)
            {
                var failure = part switch
                {
                    CodePart { Language: "csharp" } code => RunCSharp(code.Code, cell, timeout, cancel, clock),
                    CodePart { Language: "fsharp" } code => RunFSharp(code, cell, timeout, cancel, clock),
                    CodePart code => Done(() => polyglot.Show(code)),
                    MagicPart magic => Done(() => polyglot.Run(magic)),
                    _ => throw new InvalidOperationException($"unknown cell part {part}"),
                };
                if (failure is not null) return failure;
            }
            if (parsed.Timed) Display($"Wall time: {clock.Elapsed.TotalMilliseconds:0.####}ms", ["text/plain"]);
            // The cell ran with the packages that did restore; the ones that did not still fail it.
            if (packageErrors.Count > 0) return Fail(clock, "PackageError", string.Join("\n", packageErrors), [.. packageErrors]);
            return new CellResult(outputs.ToJson(), true, null, null, clock.Elapsed);
        }
        catch (ResearchKitException e)
        {
            // A cell we cannot run as written, or a kernel that cannot start here (F# without the .NET SDK).
            return Fail(clock, e is CellSourceException ? "CellSourceError" : "KernelError", e.Message, []);
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
            Notebook.SetCellHost(null);
            Console.Out.Flush();
            Console.SetOut(originalOut);
            Console.SetError(originalError);
            Directory.SetCurrentDirectory(previousDirectory);
            outputs.Complete();
            if (ReleaseAfterEachCell) ReleaseUnreachable();
        }
    }

    /// <summary>
    /// Restores the part's `#r "nuget: …"` and `#i "nuget: …"` lines (<see cref="PackageReferences"/>), references what
    /// they brought in both languages, and shows the installed packages as .NET Interactive does; returns the code
    /// with those lines blanked.
    /// </summary>
    string Restore(string source)
    {
        var (code, installed, assemblies, errors) = packages.Apply(source);
        foreach (var error in errors)
        {
            packageErrors.Add(error);
            WriteStream("stderr", error + "\n");
        }
        if (assemblies.Count > 0)
        {
            options = options.AddReferences(assemblies.Select(p => MetadataReference.CreateFromFile(p)));
            fsharp?.Reference(assemblies);
        }
        if (installed.Count > 0)
        {
            var items = string.Concat(installed.Select(p => $"<li><span>{System.Net.WebUtility.HtmlEncode(p)}</span></li>"));
            Display(new Html($"<div><div></div><div></div><div><strong>Installed Packages</strong><ul>{items}</ul></div></div>",
                "Installed Packages: " + string.Join(", ", installed)));
        }
        return code;
    }

    /// <summary>Runs an F# part like a C# one: its timeout, its interrupt, its result and its errors.</summary>
    CellResult? RunFSharp(CodePart part, CellLabel cell, TimeSpan? timeout, CancellationToken cancel, System.Diagnostics.Stopwatch clock)
    {
        var code = Restore(part.Code);
        var kernel = FSharp;
        // Cancelling aborts the F# evaluation where it runs (FSharpKernel.Run), so its loops stop as instrumented C# ones do.
        var (stoppedRun, outcome) = Limited(token => kernel.Run(code, cell.File, token), timeout, cancel, clock);
        if (stoppedRun is not null) return TimedOut(clock, timeout, stoppedRun.Value);
        var (value, hasValue, errorName, error) = outcome!;
        if (error is not null)
        {
            if (cancel.IsCancellationRequested && errorName is nameof(OperationCanceledException) or nameof(TaskCanceledException)) return Cancelled(clock);
            var message = ErrorText.Clean(error);
            return Fail(clock, errorName!, message, errorName == "CompilationError" ? message.Split('\n') : [message]);
        }
        if (hasValue && value is not DisplayHandle) Add(Result(value, cell.ExecutionCount));   // F#'s None is null: shown as null
        return null;
    }

    /// <summary>
    /// Makes a C# variable hold <paramref name="value"/> (#!share, #!set): declared with the value's type where C# can
    /// name it (a public type of a referenced assembly), else with the nearest such base type, else object.
    /// </summary>
    internal void DefineVariable(string name, object? value)
    {
        if (!Microsoft.CodeAnalysis.CSharp.SyntaxFacts.IsValidIdentifier(name)) throw new CellSourceException($"'{name}' is not a C# variable name");
        WarmUp();
        foreach (var type in SharedValues.TypesToTry(value))
        {
            if (type.Assembly is { IsDynamic: false, Location.Length: > 0 } assembly) options = options.AddReferences(assembly);
            var key = SharedValues.Put(value);
            var declaration = state!.Script.ContinueWith(
                $"var {name} = ({SharedValues.TypeName(type, "global::")})ResearchKit.Notebooks.SharedValues.Take(\"{key}\");", options.WithFilePath("share"));
            if (type != typeof(object) && declaration.Compile().Any(d => d.Severity == DiagnosticSeverity.Error))
            {
                SharedValues.Discard(key);
                continue;
            }
            state = declaration.RunFromAsync(state).GetAwaiter().GetResult();
            return;
        }
    }

    /// <summary>C#'s variables for #!share and #!set: the latest value of each name in the script state.</summary>
    sealed class CSharpVariables(NotebookSession session) : IVariableKernel
    {
        public string Name => "csharp";

        public bool TryGet(string name, out object? value)
        {
            session.WarmUp();
            var variable = session.state!.GetVariable(name);
            value = variable?.Value;
            return variable is not null;
        }

        public void Set(string name, object? value) => session.DefineVariable(name, value);

        public IEnumerable<(string Name, Type Type, object? Value)> Variables()
        {
            session.WarmUp();
            return session.state!.Variables.GroupBy(v => v.Name).Select(g => g.Last()).Select(v => (v.Name, v.Type, (object?)v.Value));
        }
    }

    /// <summary>
    /// Runs a part's code on a task under the cell's timeout (counted from its first code: compiling that is free) and
    /// its cancel token, which Cancel and the interrupt checks see. Stopped: null when the code finished (its result
    /// returned), else whether it stopped within 5 s of being cancelled at the timeout.
    /// </summary>
    (bool? Stopped, T? Result) Limited<T>(Func<CancellationToken, T> work, TimeSpan? timeout, CancellationToken cancel, System.Diagnostics.Stopwatch clock)
    {
        if (!running.IsRunning)
        {
            Output?.Invoke(new CellStarted());
            running.Start();
        }
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        globals.Cancel = linked.Token;
        Interrupts.Current = linked.Token;
        var task = Task.Run(() => work(linked.Token));
        if (task.Wait(timeout is { } limit ? TimeSpan.FromTicks(Math.Max(0, (limit - running.Elapsed).Ticks)) : Timeout.InfiniteTimeSpan))
            return (null, task.Result);
        linked.Cancel();
        return (task.Wait(TimeSpan.FromSeconds(5)), default);
    }

    CellResult TimedOut(System.Diagnostics.Stopwatch clock, TimeSpan? timeout, bool stopped) =>
        Fail(clock, "TimeoutError", $"the cell ran longer than {timeout!.Value.TotalSeconds:0.#} s (--timeout){(stopped ? "" : " and did not stop when cancelled")}", []);

    static CellResult? Done(Action action)
    {
        action();
        return null;
    }

    /// <summary>
    /// Compiles and runs C# in the session's script state; null when it succeeded, else the failed result.
    /// <paramref name="timeout"/> is the whole cell's: what its earlier parts ran counts against it.
    /// </summary>
    CellResult? RunCSharp(string source, CellLabel cell, TimeSpan? timeout, CancellationToken cancel, System.Diagnostics.Stopwatch clock)
    {
        var code = Interrupts.Instrument(Restore(source));
        // The preamble's imports carry to every later submission, so a cell's own options name none: binding the 19
        // namespaces again cost about 2 ms of each cell's compile (measured with Roslyn 5.12 scripting, a trivial cell).
        var script = state!.Script.ContinueWith(code, options.WithFilePath(cell.File).WithImports(Array.Empty<string>()));
        var errors = script.Compile(cancel).Where(d => d.Severity == DiagnosticSeverity.Error).ToArray();
        if (errors.Length > 0)
        {
            var lines = errors.Select(Diagnostic).ToArray();
            return Fail(clock, "CompilationError", string.Join("\n", lines), lines);
        }
        // Loops and methods check the token (Interrupts), so the cell normally stops within the grace period;
        // one blocked in a call that checks nothing runs on in the background (the worker's supervisor ends it).
        var (stopped, ran) = Limited(token => script.RunFromAsync(state, _ => true, token).GetAwaiter().GetResult(), timeout, cancel, clock);
        if (stopped is not null) return TimedOut(clock, timeout, stopped.Value);
        var next = ran!;
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
        return null;
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

    /// <summary>
    /// A cell's code for analyses of its syntax (the parameters cell, dependencies): magic and package lines blanked,
    /// so line numbers still match.
    /// </summary>
    public static string Preprocess(string source) => string.Join("\n", source.Replace("\r\n", "\n").Split('\n')
        .Select(line => line.TrimStart().StartsWith("#!", StringComparison.Ordinal) || PackageReferences.IsPackageLine(line) ? "" : line));

    JsonObject Result(object? value, int executionCount) => new()
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
            if (mime == "text/html")
                foreach (var library in InlinedLibraries.NeededBy(text).Where(inlined.Add).ToList())
                    text = library.Script() + text;
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

    internal DisplayHandle Display(object? value, IReadOnlyCollection<string>? mimeTypes = null)
    {
        var id = Guid.NewGuid().ToString("N");
        displayIds.Add(id);
        var data = Bundle(value);
        if (mimeTypes is { Count: > 0 })
        {
            // Only the asked-for types: ours where we have them, else .NET Interactive's formatter for that type.
            var only = new JsonObject();
            foreach (var mime in mimeTypes)
                only[mime] = data[mime]?.DeepClone() ?? NotebookDocument.Lines(value.ToDisplayString(mime));
            data = only;
        }
        Add(new JsonObject { ["output_type"] = "display_data", ["data"] = data, ["metadata"] = new JsonObject() }, id);
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
        fsharp?.Dispose();
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
