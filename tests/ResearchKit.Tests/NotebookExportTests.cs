using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using ResearchKit.Notebooks;
using ResearchKit.Reporting;
using static ResearchKit.Tests.NotebookTests;

namespace ResearchKit.Tests;

/// <summary>
/// Issue 23, part 4: ResearchKit outside our engine. A notebook exported as a file-based app (checked here with the C#
/// compiler; tests/interactive.sh runs one with `dotnet run`), the hosts behind Notebook.Progress and Notebook.Cancel,
/// what an exported program shows, and the runtime fix that lets TorchSharp load from the NuGet cache on Debian 12.
/// </summary>
public class NotebookExportTests
{
    static readonly string[] Cells =
    [
        "#r \"nuget: Humanizer.Core, 2.14.1\"\nusing System.Text;\nint N = 3;\nstring Name = \"grid\";",
        "record Point(int X, int Y);\nstatic int Twice(this int x) => 2 * x;\nint Square(int x) => x * x;\nvar p = new Point(N, Square(N).Twice());\np",
        "#!markdown\n**bold** words",
        "var sb = new StringBuilder(Name);\ndisplay(sb.Append('!').ToString());",
    ];

    static string TinyNotebook() =>
        Write(Markdown("# Title\n\nSome text"), Code(Cells[0], "parameters"), Code(Cells[1]), Code(Cells[2]), Code(Cells[3]), Code(""));

    [Fact]
    public void A_notebook_exports_as_a_program_the_compiler_accepts_with_cells_in_order_and_markdown_as_comments()
    {
        var notebook = TinyNotebook();
        var app = Path.Combine(Path.GetDirectoryName(notebook)!, "app", "tiny.cs");
        var program = NotebookExport.ToFileBasedApp(notebook, app, new Dictionary<string, string> { ["N"] = "5" });
        var lines = program.Split('\n').Select(l => l.TrimEnd('\r')).ToList();

        int At(string line)
        {
            int index = lines.IndexOf(line);
            Assert.True(index >= 0, $"no line '{line}' in\n{program}");
            return index;
        }
        // The package directives, then the engine's usings and the cells' own, then the cells in order.
        Assert.Equal(["#:package ResearchKit@1.0.0", "#:package Humanizer.Core@2.14.1"], lines.Where(l => l.StartsWith("#:package")));
        Assert.True(At("#:property PublishAot=false") < At("using System.Text;"));
        Assert.True(At("using System.Text;") < At("using static ResearchKit.Reporting.ConsoleNotebook;"));
        // The working folder is the notebook's, found from the program's own folder (app/ is one below the notebook).
        Assert.Contains("AppContext.GetData(\"EntryPointFileDirectoryPath\")!, \"..\")", program);
        int title = At("// # Title"), parameters = At("// ── cell 2 (parameters: edit them here)");
        int injected = At("// ── cell 3 (parameters given to the export)"), shown = At("display(p);");
        Assert.Equal("//", lines[title + 1]);
        Assert.True(title < parameters && parameters < At("int N = 3;") && At("int N = 3;") < injected && injected < At("N = 5;"));
        Assert.True(injected < At("int Square(int x) => x * x;") && At("var p = new Point(N, Square(N).Twice());") < shown);
        Assert.True(shown < At("// **bold** words") && At("// **bold** words") < At("display(sb.Append('!').ToString());"));
        Assert.DoesNotContain("cell 7", program);   // the empty cell
        Assert.DoesNotContain("#r ", program);
        // Types after the statements, extension methods in a static class: where a program must declare them.
        Assert.True(At("display(sb.Append('!').ToString());") < At("record Point(int X, int Y);"));
        Assert.True(At("static class NotebookExtensions") < At("public static int Twice(this int x) => 2 * x;"));

        // The C# compiler, as `dotnet run` would call it, against the kit's assemblies (the #: lines are the SDK's).
        var source = string.Join('\n', lines.Where(l => !l.StartsWith("#:")));
        var references = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Select(p => MetadataReference.CreateFromFile(p));
        var compilation = CSharpCompilation.Create("tiny", [CSharpSyntaxTree.ParseText(source)], references,
            new CSharpCompilationOptions(OutputKind.ConsoleApplication));
        var errors = compilation.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error).ToList();
        Assert.True(errors.Count == 0, string.Join('\n', errors) + "\n" + source);
    }

    [Fact]
    public void What_a_program_cannot_do_is_refused_naming_the_cell_and_line_and_nothing_is_written()
    {
        string Refusal(string cell, string? language = null)
        {
            var code = Code(cell);
            if (language != null) code["metadata"]!["polyglot_notebook"]!["kernelName"] = language;
            var notebook = Write(Markdown("# x"), code);
            var app = Path.ChangeExtension(notebook, ".cs");
            var error = Assert.Throws<ResearchKitException>(() => NotebookExport.Export(notebook, app));
            Assert.False(File.Exists(app));
            return error.Message;
        }
        Assert.Equal("test.ipynb: cell 2, line 1: a fsharp part; a C# file-based app can hold only C# (and markdown as comments)",
            Refusal("let x = 1", "fsharp"));
        Assert.Equal("test.ipynb: cell 2, line 2: #!share shares values between kernels; a C# program has one, so it cannot be exported",
            Refusal("var a = 1;\n#!share --from fsharp y"));
        Assert.Equal("test.ipynb: cell 2, line 2: '#r \"lib.dll\"': a file-based app takes packages only (#r \"nuget: …\")",
            Refusal("var a = 1;\n#r \"lib.dll\""));
        Assert.StartsWith("test.ipynb: cell 2, line 1: '#load \"more.csx\"'", Refusal("#load \"more.csx\""));
        Assert.StartsWith("test.ipynb: cell 2, line 2: ", Refusal("var a = 1;\nvar = ;"));   // a syntax error, as the compiler words it

        var notebook = Write(Code("1"));
        Assert.Equal($"-o {notebook}: that is the notebook being exported; write the program elsewhere",
            Assert.Throws<ResearchKitException>(() => NotebookExport.Export(notebook, notebook)).Message);
    }

    [Fact]
    public void The_export_command_writes_the_program_beside_the_notebook_and_refuses_other_targets()
    {
        var notebook = TinyNotebook();
        var (code, _, err) = TestData.Cli("notebook", "export", notebook, "--to", "cs", "-p", "Name=big");
        var app = Path.ChangeExtension(notebook, ".cs");
        Assert.True(code == 0, err);
        Assert.Equal($"wrote {app}: run it with `dotnet run {app}`", err.Trim());
        Assert.Contains("Name = \"big\";", File.ReadAllText(app));

        (code, _, err) = TestData.Cli("notebook", "export", notebook, "--to", "py");
        Assert.Equal((1, "error: --to py: expected cs (a file-based app); it is the only form there is"), (code, err.Trim()));
        (code, _, err) = TestData.Cli("notebook", "export", notebook, "--to", "cs", "-p", "Nope=1", "-o", Path.ChangeExtension(notebook, ".x.cs"));
        Assert.Equal(1, code);
        Assert.StartsWith("error: parameter 'Nope' is not declared in the notebook's parameters cell", err.Trim());
        Assert.False(File.Exists(Path.ChangeExtension(notebook, ".x.cs")));
    }

    /// <summary>A host that records what it was asked to show.</summary>
    sealed class RecordingHost(TimeSpan interval) : INotebookHost
    {
        public readonly List<string> Lines = [];
        public readonly CancellationTokenSource Source = new();
        public CancellationToken Cancel => Source.Token;
        public TimeSpan UpdateInterval => interval;

        public Action<string> ShowStatus(string text)
        {
            Lines.Add(text);
            return line => Lines.Add("↻ " + line);
        }
    }

    [Fact]
    public void Notebook_progress_and_cancel_go_to_the_running_cells_host_and_progress_is_throttled_but_keeps_the_last_step()
    {
        var cell = new RecordingHost(TimeSpan.FromHours(1));
        Assert.Same(ConsoleNotebookHost.Instance, Notebook.Host);
        Notebook.SetCellHost(cell);
        try
        {
            var progress = Notebook.Progress("sweep");
            Assert.Equal(cell.Cancel, Notebook.Cancel);
            // Another thread started by the cell reports to the same cell (an AsyncLocal flows into it).
            var inner = new Thread(() => Notebook.Progress("inner").Report("x"));
            inner.Start();
            inner.Join();
            progress.Report(new SweepProgress(0, 2, "k", false, "seed 0"));
            var step = (int s) => new Training.TrainProgress(s, 3, 0, 1, 0.5, 1e-3, 100, TimeSpan.FromSeconds(s));
            progress.Report(step(1));
            progress.Report(step(2));   // within the interval: dropped
            progress.Report(step(3));   // the last step: always shown
            Assert.Equal(["sweep: starting…", "inner: starting…", "↻ inner · x", "↻ sweep · run 1/2: seed 0",
                "↻ sweep · run 1/2: seed 0 · epoch 1/1 · step 3/3 · loss 0.5000 · 100 img/s · eta 00:00:00"], cell.Lines);
            cell.Source.Cancel();
            Assert.True(Notebook.Cancel.IsCancellationRequested);
        }
        finally
        {
            Notebook.SetCellHost(null);
        }
        Assert.Same(ConsoleNotebookHost.Instance, Notebook.Host);
    }

    [Fact]
    public void An_exported_program_shows_text_tables_and_tensors_and_writes_pictures_to_files()
    {
        var output = new StringWriter();
        var folder = ConsoleNotebook.OutputFolder;
        ConsoleNotebook.OutputFolder = TestData.TempDir();
        try
        {
            ConsoleNotebook.Show("plain", output);
            ConsoleNotebook.Show(new Markdown("- **a** verdict"), output);
            ConsoleNotebook.Show(null, output);
            using (var t = TorchSharp.torch.tensor(new[] { 1f, 2f }))
                ConsoleNotebook.Show(t, output);
            ConsoleNotebook.Show(Plotly.NET.CSharp.Chart.Line<int, int, string>([1, 2], [3, 4]), output);
            var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(["plain", "- **a** verdict"], lines[..2]);
            Assert.Equal(["tensor [2] Float32 on cpu", "[1, 2]"], lines[2..4]);
            Assert.StartsWith("chart: ", lines[^1]);
            var png = File.ReadAllBytes(lines[^1]["chart: ".Length..]);
            Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], png[..4]);
        }
        finally
        {
            ConsoleNotebook.OutputFolder = folder;
        }
    }

    /// <summary>
    /// The runtime fix on the real library from the NuGet cache: one flag bit set on the GLIBCXX_3.4.32 requirement, which
    /// binutils' readelf then reports weak; nothing to do on a second pass or on the copy our build already patched.
    /// </summary>
    [Fact]
    public void The_runtime_native_fix_marks_only_the_missing_glibcxx_requirement_weak()
    {
        var packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var original = Directory.GetFiles(Path.Combine(packages, "torchsharp"), "libLibTorchSharp.so", SearchOption.AllDirectories).First();
        var bytes = File.ReadAllBytes(original);
        var patched = NativeFixOf(bytes);
        var changed = Enumerable.Range(0, bytes.Length).Where(i => bytes[i] != patched[i]).ToList();
        Assert.Single(changed);
        Assert.Equal(0x2, patched[changed[0]] ^ bytes[changed[0]]);   // VER_FLG_WEAK
        Assert.Null(TorchSharpNative.MarkVersionWeak(patched, TorchSharpNative.MissingVersion));
        Assert.Null(TorchSharpNative.MarkVersionWeak(bytes, "GLIBCXX_9.9"));   // a version it does not require

        var file = Path.Combine(TestData.TempDir(), "libLibTorchSharp.so");
        File.WriteAllBytes(file, patched);
        var (code, versions, _) = TestData.RunProcess("readelf", "-V", "-W", file);
        Assert.Equal(0, code);
        var requirement = versions.Split('\n').Single(l => l.Contains("Name: " + TorchSharpNative.MissingVersion));
        Assert.Contains("Flags: WEAK", requirement);
        Assert.Equal(versions.Split('\n').Count(l => l.Contains("Flags: WEAK")),
            TestData.RunProcess("readelf", "-V", "-W", original).Out.Split('\n').Count(l => l.Contains("Flags: WEAK")) + 1);

        var built = Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so");
        if (File.Exists(built)) Assert.Null(TorchSharpNative.MarkVersionWeak(File.ReadAllBytes(built), TorchSharpNative.MissingVersion));
        Assert.Throws<InvalidDataException>(() => TorchSharpNative.MarkVersionWeak("#!/bin/sh\n"u8.ToArray().Concat(new byte[64]).ToArray(), "x"));
    }

    static byte[] NativeFixOf(byte[] library) =>
        TorchSharpNative.MarkVersionWeak(library, TorchSharpNative.MissingVersion)
        ?? throw new InvalidOperationException("the NuGet cache's libLibTorchSharp.so does not require " + TorchSharpNative.MissingVersion);
}
