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

/// <summary>What front ends are told as a cell runs (a kernel forwards these as iopub messages).</summary>
public abstract record OutputEvent;
public sealed record OutputAdded(JsonObject Output, string? DisplayId) : OutputEvent;
public sealed record DisplayUpdated(string DisplayId, JsonObject Output) : OutputEvent;
public sealed record StreamWritten(string Name, string Text) : OutputEvent;

/// <summary>The result of one cell: its nbformat outputs and, when it failed, the error.</summary>
public sealed record CellResult(JsonArray Outputs, bool Succeeded, string? ErrorName, string? ErrorValue, TimeSpan Elapsed);

/// <summary>
/// A C# notebook session on Roslyn scripting: cells run in order in one script state, so variables,
/// types and usings carry across cells. Captures stdout/stderr as stream outputs, offers display()
/// with in-place updates, formats values through <see cref="MimeFormatter"/>, and inlines plotly.js
/// once per session. Used by `researchkit notebook run`; a kernel can drive it the same way.
/// </summary>
public sealed class NotebookSession : IDisposable
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
        "TorchSharp", "Deedle", "Plotly.NET", "ResearchKit", "ResearchKit.Data", "ResearchKit.Models", "ResearchKit.Tokenizers",
        "ResearchKit.Training", "ResearchKit.Evaluation", "ResearchKit.Methods", "ResearchKit.Runs", "ResearchKit.Reporting", "ResearchKit.Notebooks",
    ];

    readonly ScriptOptions options;
    readonly NotebookGlobals globals;
    readonly TextWriter originalOut = Console.Out, originalError = Console.Error;
    ScriptState<object>? state;
    JsonArray? outputs;
    readonly Dictionary<string, JsonObject> displays = [];
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
            .WithLanguageVersion(Microsoft.CodeAnalysis.CSharp.LanguageVersion.Latest);
    }

    /// <summary>Runs one cell's source and returns its outputs. Throws <see cref="CellSourceException"/> for a cell we cannot run (another language, an unknown package).</summary>
    public CellResult Execute(string source, int executionCount, TimeSpan? timeout = null, CancellationToken cancel = default)
    {
        var code = Preprocess(source);
        outputs = [];
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var previousDirectory = Directory.GetCurrentDirectory();
        Console.SetOut(new CellWriter(this, "stdout"));
        Console.SetError(new CellWriter(this, "stderr"));
        Directory.SetCurrentDirectory(WorkingDirectory);
        try
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            globals.Cancel = linked.Token;
            var task = Task.Run(() => state is null
                ? CSharpScript.Create(code, options, typeof(NotebookGlobals)).RunAsync(globals, _ => true, linked.Token)
                : state.ContinueWithAsync(code, options, _ => true, linked.Token));
            if (!task.Wait(timeout ?? Timeout.InfiniteTimeSpan))
            {
                linked.Cancel();
                return Fail(clock, "TimeoutError", $"the cell ran longer than {timeout!.Value.TotalSeconds:0} s (--timeout)", []);
            }
            var next = task.Result;
            if (next.Exception is { } error)
            {
                state = next;   // keep earlier variables for --continue-on-error
                return Fail(clock, error.GetType().Name, error.Message, Traceback(error));
            }
            state = next;
            if (next.ReturnValue is { } value and not DisplayHandle) Add(Result(value, executionCount));
            return new CellResult(outputs, true, null, null, clock.Elapsed);
        }
        catch (AggregateException e) when (e.InnerException is CompilationErrorException compile)
        {
            var diagnostics = compile.Diagnostics.Select(d => d.ToString()).ToArray();
            return Fail(clock, "CompilationError", string.Join("\n", diagnostics), diagnostics);
        }
        catch (AggregateException e) when (e.InnerException is OperationCanceledException)
        {
            return Fail(clock, "OperationCanceledException", "the cell was cancelled", []);
        }
        finally
        {
            Console.Out.Flush();
            Console.SetOut(originalOut);
            Console.SetError(originalError);
            Directory.SetCurrentDirectory(previousDirectory);
            // Tensors that became unreachable in this cell free their native memory now, not at some later GC.
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
    }

    CellResult Fail(System.Diagnostics.Stopwatch clock, string name, string value, string[] traceback)
    {
        Add(new JsonObject
        {
            ["output_type"] = "error",
            ["ename"] = name,
            ["evalue"] = value,
            ["traceback"] = new JsonArray(traceback.Select(t => (JsonNode)t!).ToArray()),
        });
        return new CellResult(outputs!, false, name, value, clock.Elapsed);
    }

    static string[] Traceback(Exception error)
    {
        var lines = new List<string> { $"{error.GetType().FullName}: {error.Message}" };
        lines.AddRange((error.StackTrace ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd()));
        for (var inner = error.InnerException; inner is not null; inner = inner.InnerException)
            lines.Add($" ---> {inner.GetType().FullName}: {inner.Message}");
        return lines.ToArray();
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
            data[mime] = mime.StartsWith("image/", StringComparison.Ordinal) ? text : NotebookDocument.Lines(text);
        }
        return data;
    }

    void Add(JsonObject output, string? displayId = null)
    {
        outputs?.Add(output);
        Output?.Invoke(new OutputAdded(output, displayId));
    }

    internal DisplayHandle Display(object? value)
    {
        var id = Guid.NewGuid().ToString("N");
        var output = new JsonObject { ["output_type"] = "display_data", ["data"] = Bundle(value), ["metadata"] = new JsonObject() };
        displays[id] = output;
        Add(output, id);
        return new DisplayHandle(this, id);
    }

    internal void UpdateDisplay(string id, object? value)
    {
        if (!displays.TryGetValue(id, out var output)) return;
        output["data"] = Bundle(value);
        Output?.Invoke(new DisplayUpdated(id, output));
    }

    internal void WriteStream(string name, string text)
    {
        if (outputs is null || text.Length == 0) return;
        // Consecutive writes to one stream merge into one output, as Jupyter shows them.
        if (outputs.Count > 0 && outputs[^1] is JsonObject last && last["output_type"]?.GetValue<string>() == "stream" && last["name"]?.GetValue<string>() == name)
            last["text"] = last["text"]!.GetValue<string>() + text;
        else
            outputs.Add(new JsonObject { ["output_type"] = "stream", ["name"] = name, ["text"] = text });
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
