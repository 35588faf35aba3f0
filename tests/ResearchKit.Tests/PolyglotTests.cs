using System.IO.Compression;
using System.Text.Json.Nodes;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using ResearchKit.Notebooks;
using static ResearchKit.Tests.NotebookTests;

namespace ResearchKit.Tests;

/// <summary>
/// Issue 23: notebooks written for .NET Interactive (Polyglot Notebooks) run here. The expected outputs are those the real
/// .NET Interactive 1.0.712001 kernel produced for the same cells (run through Jupyter while this was written).
/// </summary>
public class PolyglotTests
{
    static JsonObject FSharpCell(string source)
    {
        var cell = Code(source);
        cell["metadata"]!["polyglot_notebook"]!["kernelName"] = "fsharp";
        return cell;
    }

    static JsonNode? Data(JsonObject output, string mime) => output["data"]?[mime];

    [Fact]
    public void A_cell_splits_into_parts_at_language_magics_keeping_line_numbers()
    {
        var cell = PolyglotCell.Parse("#!time\nvar a = 1;\n#!fsharp\nlet b = 2\n#!share --from csharp a --as c\nb + c\n#!markdown\n# Hi");
        Assert.True(cell.Timed);
        var parts = cell.Parts;
        Assert.Equal(5, parts.Count);
        var csharp = Assert.IsType<CodePart>(parts[0]);
        Assert.Equal(("csharp", "\nvar a = 1;"), (csharp.Language, csharp.Code));
        var fsharp = Assert.IsType<CodePart>(parts[1]);
        Assert.Equal(("fsharp", 4), (fsharp.Language, fsharp.Line));
        Assert.Equal("let b = 2", fsharp.Code.Split('\n')[3]);   // line 4 of the cell is line 4 of the part
        var share = Assert.IsType<MagicPart>(parts[2]);
        Assert.Equal(("share", "fsharp", 5, "csharp", "c", "a"), (share.Name, share.Language, share.Line, share.Options["from"], share.Options["as"], share.Arguments.Single()));
        Assert.Equal(("fsharp", 6), (Assert.IsType<CodePart>(parts[3]).Language, parts[3].Line));   // F# goes on after the magic
        Assert.Equal("markdown", Assert.IsType<CodePart>(parts[4]).Language);
        Assert.Equal("fsharp", Assert.IsType<CodePart>(PolyglotCell.Parse("1", "f#").Parts.Single()).Language);

        var unknown = Assert.Throws<CellSourceException>(() => PolyglotCell.Parse("1\n#!pwsh\nls"));
        Assert.Equal("line 2: '#!pwsh' is not a magic ResearchKit knows; it has #!csharp, #!fsharp, #!html, #!javascript, #!markdown, #!mermaid, #!value, #!share, #!set, #!who, #!whos and #!time", unknown.Message);
        Assert.Contains("unclosed quote", Assert.Throws<CellSourceException>(() => PolyglotCell.Parse("#!value --name \"x")).Message);
    }

    /// <summary>
    /// The cells of Microsoft's samples: HTML, JavaScript and markdown cells, the display helpers, #!time, #!value,
    /// #!set, and values shared between C# and F# both ways, by reference. Outputs are .NET Interactive's.
    /// </summary>
    [Fact]
    public void Polyglot_cells_run_with_dotnet_interactives_outputs_and_share_values_between_csharp_and_fsharp()
    {
        var path = Write(
            Code("#!markdown\n# Title\nSome *text*"),                                          // 0
            Code("#!html\n<b>bold</b>"),                                                        // 1
            Code("#!javascript\nconsole.log('hi')"),                                            // 2
            Code("#!time\nvar x = 1 + 1;\nx"),                                                  // 3
            Code("HTML(\"<i>it</i>\")"),                                                        // 4
            Code("Javascript(\"alert(1)\");"),                                                  // 5
            Code("new LaTeXString(@\"\\frac{1}{2}\")"),                                         // 6
            Code("new MathString(@\"\\frac{1}{2}\")"),                                          // 7
            Code("new[] { new { A = 1, B = \"x,y\" } }.DisplayTable();"),                       // 8
            Code("display(\"<b>x</b>\", \"text/html\");"),                                      // 9
            Code("#!value --name v\nhello value"),                                              // 10
            Code("#!share --from value v\nv.ToUpperInvariant()"),                               // 11
            Code("#!set --name s --value 42\ns + \"!\""),                                       // 12
            FSharpCell("let y = 3\nprintfn \"from F# %d\" (y * 2)\ny"),                         // 13
            Code("#!share --from fsharp y\ny + 1"),                                             // 14
            Code("var shared = new List<int> { 1 };\n#!fsharp\n#!share --from csharp shared\nshared.Add 2\n#!share --from csharp x\nx * 10"), // 15
            Code("shared.Count"),                                                               // 16
            FSharpCell("let fsharpCore = typeof<int list>.Assembly.Location\nlet words = [\"a\"; \"b\"]"), // 17
            Code("#!share --from fsharp fsharpCore\n#!share --from fsharp words\n$\"{fsharpCore == typeof(Microsoft.FSharp.Collections.FSharpList<>).Assembly.Location} {words.Length}\""), // 18
            Code("#!whos"));                                                                    // 19
        var result = NotebookRunner.Run(path, new RunOptions(ContinueOnError: true));
        Assert.True(result.Succeeded, result.Error);

        Assert.Equal("<h1 id=\"title\">Title</h1>\n<p>Some <em>text</em></p>\n", Text(Data(Outputs(result, 0).Single(), "text/html")));
        Assert.Equal("<b>bold</b>", Text(Data(Outputs(result, 1).Single(), "text/html")));
        Assert.Equal("<script type=\"text/javascript\">console.log('hi')</script>", Text(Data(Outputs(result, 2).Single(), "text/html")));
        var timed = Outputs(result, 3);
        Assert.Equal("2", Text(Data(timed[0], "text/plain")));
        Assert.Matches(@"^Wall time: \d+(\.\d+)?ms$", Text(Data(timed[1], "text/plain")));
        Assert.Equal(("execute_result", "<i>it</i>"), ((string)Outputs(result, 4).Single()["output_type"]!, Text(Data(Outputs(result, 4).Single(), "text/html"))));
        var script = Outputs(result, 5).Single();
        Assert.Equal(("display_data", "<script type=\"text/javascript\">alert(1)</script>"), ((string)script["output_type"]!, Text(Data(script, "text/html"))));
        Assert.Equal("\\frac{1}{2}", Text(Data(Outputs(result, 6).Single(), "text/latex")));
        Assert.Equal("$$\\frac{1}{2}$$", Text(Data(Outputs(result, 7).Single(), "text/latex")));
        var table = Outputs(result, 8).Single();
        Assert.Equal("A,B\n1,\"x,y\"\n", Text(Data(table, "text/csv")));
        Assert.Contains("<th>A</th><th>B</th>", Text(Data(table, "text/html")));
        var onlyHtml = Outputs(result, 9).Single()["data"]!.AsObject();
        Assert.Equal(["text/html"], onlyHtml.Select(p => p.Key));
        Assert.Equal("hello value", Text(Data(Outputs(result, 10).Single(), "text/plain")));
        Assert.Equal("HELLO VALUE", Text(Data(Outputs(result, 11).Single(), "text/plain")));
        Assert.Equal("42!", Text(Data(Outputs(result, 12).Single(), "text/plain")));
        var fsharp = Outputs(result, 13);
        Assert.Equal("from F# 6\n", Text(fsharp[0]["text"]));
        Assert.Equal("3", Text(Data(fsharp[1], "text/plain")));
        Assert.Equal("4", Text(Data(Outputs(result, 14).Single(), "text/plain")));
        Assert.Equal("20", Text(Data(Outputs(result, 15).Single(), "text/plain")));
        Assert.Equal("2", Text(Data(Outputs(result, 16).Single(), "text/plain")));    // F# added to C#'s list: one object
        Assert.Equal("True 2", Text(Data(Outputs(result, 18).Single(), "text/plain")));   // one FSharp.Core; F# lists cross typed
        Assert.Contains("<td>shared</td>", Text(Data(Outputs(result, 19).Single(), "text/html")));
    }

    [Fact]
    public void Fsharp_errors_name_the_cell_and_line_and_an_unknown_share_is_a_one_line_error()
    {
        var path = Write(
            Code("1"),
            FSharpCell("let a = 1\nlet b = a + undefinedName"),
            FSharpCell("let boom () : int = failwith \"boom\"\nboom ()"),
            Code("#!share --from fsharp nothing\n1"));
        var result = NotebookRunner.Run(path, new RunOptions(ContinueOnError: true));
        var compile = Outputs(result, 1).Single();
        Assert.Equal("CompilationError", (string)compile["ename"]!);
        Assert.StartsWith("cell 2, line 2: error FS0039: The value or constructor 'undefinedName' is not defined", (string)compile["evalue"]!);
        var thrown = Outputs(result, 2).Single();
        Assert.Equal(("Exception", "boom"), ((string)thrown["ename"]!, (string)thrown["evalue"]!));
        Assert.Equal("line 1: #!share: the fsharp kernel has no variable 'nothing'", (string)Outputs(result, 3).Single()["evalue"]!);
    }

    [Fact]
    public void Mermaid_diagrams_draw_offline_in_the_HTML_report_and_in_nbconvert_HTML_in_headless_chromium()
    {
        var byKernelName = Code("graph TD\n  Pretrain-->ProbeB");
        byKernelName["metadata"]!["polyglot_notebook"]!["kernelName"] = "mermaid";
        var result = NotebookRunner.Run(Write(Markdown("# Diagrams"), Code("#!mermaid\ngraph LR\n  Pretrain-->ProbeA"), byKernelName), new RunOptions());
        Assert.True(result.Succeeded, result.Error);
        var first = Text(Data(Outputs(result, 1).Single(), "text/html"));
        var second = Text(Data(Outputs(result, 2).Single(), "text/html"));
        Assert.Contains("Pretrain--&gt;ProbeA</pre>", first);   // the source, shown as text where no script runs
        Assert.Equal((1, 0), (CountOf(first, MermaidHtml.BeginMarker), CountOf(second, MermaidHtml.BeginMarker)));   // the library once

        var dir = TestData.TempDir();
        var report = Path.Combine(dir, "report.html");
        HtmlReport.Write(result.Notebook, report);
        var notebook = Path.Combine(dir, "diagrams.ipynb");
        result.Notebook.Save(notebook);
        Run("/usr/bin/python3", "-m", "nbconvert", "--to", "html", notebook);   // nbconvert's page has require.js
        foreach (var page in new[] { report, Path.Combine(dir, "diagrams.html") })
        {
            var dom = HeadlessDom(page, virtualTimeMs: 10000);
            Assert.Equal(2, CountOf(dom, "aria-roledescription=\"flowchart-v2\""));   // mermaid drew both as SVG
            Assert.Equal(new[] { "Pretrain", "ProbeA", "Pretrain", "ProbeB" },
                System.Text.RegularExpressions.Regex.Matches(dom, "<span class=\"nodeLabel\"[^>]*><p>([^<]*)</p>").Select(m => m.Groups[1].Value));
        }
    }

    [Theory]
    [InlineData("13.0.4", "", true)]
    [InlineData("13.0.4", "*", true)]
    [InlineData("13.0.4", "13.0.3", true)]       // a NuGet version is a minimum
    [InlineData("13.0.4", "13.0.4", true)]
    [InlineData("13.0.4", "13.0.5", false)]
    [InlineData("13.0.4", "[13.0.3]", false)]    // exactly 13.0.3
    [InlineData("13.0.4", "[13.0.4]", true)]
    [InlineData("1.0.0-beta.2", "1.0.0-beta.1", true)]
    [InlineData("1.0.0-beta.2", "1.0.0", false)]  // a prerelease is below its release
    [InlineData("1.0.0", "1.0.0-beta.9", true)]
    [InlineData("10.1.404", "10.1.40", true)]    // numbers, not strings
    public void A_shipped_package_meets_a_request_as_NuGet_versions_order(string shipped, string requested, bool meets) =>
        Assert.Equal(meets, PackageReferences.Satisfies(shipped, requested));

    /// <summary>
    /// A NuGet package holding one class, built here (a local feed needs no network) as packages are: against .NET's
    /// reference assemblies, from the SDK's targeting pack.
    /// </summary>
    static void Package(string feed, string id, string version, string code)
    {
        var root = new DirectoryInfo(Path.GetDirectoryName(typeof(object).Assembly.Location)!).Parent!.Parent!.Parent!.FullName;
        var reference = Directory.GetFiles(Path.Combine(root, "packs", "Microsoft.NETCore.App.Ref"), "System.Runtime.dll", SearchOption.AllDirectories)
            .First(f => f.Contains($"net{Environment.Version.Major}.0", StringComparison.Ordinal));
        var compilation = CSharpCompilation.Create(id, [CSharpSyntaxTree.ParseText(code)], [MetadataReference.CreateFromFile(reference)],
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary));
        using var dll = new MemoryStream();
        Assert.True(compilation.Emit(dll).Success);
        Directory.CreateDirectory(feed);
        using var zip = ZipFile.Open(Path.Combine(feed, $"{id}.{version}.nupkg"), ZipArchiveMode.Create);
        using (var nuspec = new StreamWriter(zip.CreateEntry($"{id}.nuspec").Open()))
            nuspec.Write($"""<?xml version="1.0"?><package xmlns="http://schemas.microsoft.com/packaging/2013/05/nuspec.xsd"><metadata><id>{id}</id><version>{version}</version><authors>tests</authors><description>t</description></metadata></package>""");
        using var entry = zip.CreateEntry($"lib/net10.0/{id}.dll").Open();
        entry.Write(dll.ToArray());
    }

    /// <summary>
    /// `#r "nuget: …"` restores any package the sources serve (here a local feed, named by NuGet.config or by #i), each
    /// reference on its own; base-library packages are no-ops, the shipped packages keep their versions, a missing
    /// source is one line, and a second run needs no source at all (the feed is gone by then).
    /// </summary>
    [Fact]
    public void Nuget_references_restore_each_package_on_its_own_and_a_second_run_needs_no_source()
    {
        var root = TestData.TempDir();
        var id = $"Rk.Greeter{Guid.NewGuid():N}"[..24];
        var feed = Path.Combine(root, "feed");
        var extra = Path.Combine(root, "extra");
        Package(feed, id, "1.0.0", "namespace Greeting; public static class Greeter { public static string Hello(string n) => $\"hello {n}\"; }");
        Package(extra, id + ".Extra", "2.0.0", "namespace Greeting; public static class Extra { public static int Answer => 42; }");
        File.WriteAllText(Path.Combine(root, "NuGet.config"),
            $"""<?xml version="1.0" encoding="utf-8"?><configuration><packageSources><clear /><add key="local" value="{feed}" /></packageSources></configuration>""");
        File.WriteAllText(Path.Combine(root, "helpers.csx"), "static int Twice(int x) => 2 * x;");
        var notebook = Write(
            Code($"#r \"nuget: {id}, 1.0.0\"\n#r \"nuget: Rk.Not.There.Anywhere\"\n#r \"nuget: System.Text.Json\"\nusing Greeting;\nGreeter.Hello(\"you\")"),
            Code("Greeter.Hello(\"again\")"),
            Code($"#i \"nuget: {extra}\"\n#r \"nuget: {id}.Extra\"\nGreeting.Extra.Answer"),
            Code("#r \"nuget: Markdig, 99.0.0\"\n#r \"nuget: Markdig, 0.1.0\"\ntypeof(Markdig.Markdown).Name"),
            Code("#i \"nuget: https://127.0.0.1:9/v3/index.json\"\n#r \"nuget: Rk.Unreachable\"\n1"),
            Code("#load \"helpers.csx\"\nTwice(21)"),
            FSharpCell($"#r \"nuget: {id}, 1.0.0\"\nGreeting.Greeter.Hello \"F#\""));
        File.Move(notebook, Path.Combine(root, "test.ipynb"));
        notebook = Path.Combine(root, "test.ipynb");

        var first = NotebookRunner.Run(notebook, new RunOptions(ContinueOnError: true));
        var cell0 = Outputs(first, 0);
        var installed = cell0.Single(o => (string)o["output_type"]! == "display_data");
        Assert.Contains($"<li><span>{id}, 1.0.0</span></li>", Text(Data(installed, "text/html")));
        Assert.Contains("System.Text.Json (part of .NET", Text(Data(installed, "text/plain")));
        Assert.StartsWith("line 2: package Rk.Not.There.Anywhere", Text(cell0.Single(o => (string)o["output_type"]! == "stream")["text"]));
        Assert.Equal("hello you", Text(Data(cell0.Single(o => (string)o["output_type"]! == "execute_result"), "text/plain")));
        var missing = cell0.Last();
        Assert.Equal("PackageError", (string)missing["ename"]!);
        Assert.StartsWith("line 2: package Rk.Not.There.Anywhere: not found in the package sources", (string)missing["evalue"]!);
        Assert.Equal("hello again", Text(Data(Outputs(first, 1).Single(), "text/plain")));      // the using line and reference stayed
        Assert.Equal("42", Text(Data(Outputs(first, 2).Last(), "text/plain")));
        var conflict = Outputs(first, 3);
        Assert.Equal("Markdown", Text(Data(conflict.Single(o => (string)o["output_type"]! == "execute_result"), "text/plain")));
        Assert.Matches(@"^line 1: package Markdig: ResearchKit ships version \d+\.\d+\.\d+, this cell asks for 99\.0\.0", (string)conflict.Last()["evalue"]!);
        Assert.StartsWith("line 2: package Rk.Unreachable: a package source cannot be reached", (string)Outputs(first, 4).Last()["evalue"]!);
        Assert.Equal("42", Text(Data(Outputs(first, 5).Single(), "text/plain")));
        var fsharp = Outputs(first, 6);
        Assert.True(Text(Data(fsharp.Last(), "text/plain")) == "hello F#", new JsonArray([.. fsharp.Select(o => o.DeepClone())]).ToJsonString());

        Directory.Delete(feed, recursive: true);
        var second = NotebookRunner.Run(notebook, new RunOptions(ContinueOnError: true));
        Assert.Equal("hello you", Text(Data(Outputs(second, 0).Single(o => (string)o["output_type"]! == "execute_result"), "text/plain")));
        Assert.StartsWith("line 2: package Rk.Not.There.Anywhere: not found", (string)Outputs(second, 0).Last()["evalue"]!);
        Assert.Equal("hello again", Text(Data(Outputs(second, 1).Single(), "text/plain")));
    }

    /// <summary>
    /// The F# kernelspec through Jupyter's client: F# by default, `#!csharp` cells beside, values shared both ways; errors
    /// name the cell's position when the front end sends the id of a saved cell, and only its execution count otherwise.
    /// </summary>
    [Fact]
    public void The_fsharp_kernel_shares_values_with_csharp_and_names_cells_by_their_position_in_the_saved_notebook()
    {
        var prefix = TestData.TempDir();
        var name = "rk-fsharp-" + Guid.NewGuid().ToString("N")[..8];
        var (code, output, error) = TestData.Cli("kernel", "install", "--prefix", prefix, "--name", name, "--language", "fsharp");
        Assert.True(code == 0, error);
        Assert.Contains($"installed kernel '{name}'", output);
        var spec = JsonNode.Parse(File.ReadAllText(Path.Combine(prefix, "share", "jupyter", "kernels", name, "kernel.json")))!;
        Assert.Equal(("F# (ResearchKit)", "F#"), ((string)spec["display_name"]!, (string)spec["language"]!));

        var folder = TestData.TempDir();
        var first = Code("1");
        first["id"] = "first";
        var third = Code("2");
        third["id"] = "third";
        File.Move(Write(first, NotebookTests.Markdown("text"), third), Path.Combine(folder, "numbered.ipynb"));
        var script = Path.Combine(TestData.RepositoryRoot(), "tests", "jupyter", "polyglot_kernel.py");
        var (exit, stdout, stderr) = TestData.RunProcess("/usr/bin/python3", [script, name, folder],
            new Dictionary<string, string> { ["JUPYTER_PATH"] = Path.Combine(prefix, "share", "jupyter") }, TimeSpan.FromMinutes(10));
        Assert.True(exit == 0, stderr);
        var found = JsonNode.Parse(stdout)!;
        Assert.Null(found["exception"]);
        Assert.Equal("F#", (string)found["language"]!);
        Assert.Equal("30", (string)found["fsharp"]![0]!);
        Assert.Equal("40", (string)found["csharp_from_fsharp"]![0]!);
        Assert.Equal("42", (string)found["fsharp_from_csharp"]![0]!);
        Assert.StartsWith("cell 3, line 1: error FS", (string)found["error_in_saved_cell"]!);
        Assert.Matches(@"^In \[\d+\], line 1: error FS", (string)found["error_in_unsaved_cell"]!);
    }
}
