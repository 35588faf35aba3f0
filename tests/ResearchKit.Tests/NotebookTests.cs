using System.Text.Json.Nodes;
using ResearchKit.Notebooks;

namespace ResearchKit.Tests;

/// <summary>The notebook engine, on notebooks the tests write; checked with Jupyter's own validator and a real browser.</summary>
public class NotebookTests
{
    internal static JsonObject Code(string source, params string[] tags) => new()
    {
        ["cell_type"] = "code", ["execution_count"] = null, ["id"] = Guid.NewGuid().ToString("N")[..8],
        ["metadata"] = new JsonObject { ["tags"] = new JsonArray(tags.Select(t => (JsonNode)t!).ToArray()), ["polyglot_notebook"] = new JsonObject { ["kernelName"] = "csharp" } },
        ["outputs"] = new JsonArray(), ["source"] = NotebookDocument.Lines(source),
    };

    internal static JsonObject Markdown(string source) => new() { ["cell_type"] = "markdown", ["id"] = Guid.NewGuid().ToString("N")[..8], ["metadata"] = new JsonObject(), ["source"] = source };

    /// <summary>
    /// The committed notebooks are nbformat 4.5 documents Jupyter accepts without warnings: every cell has a unique id
    /// (a future nbformat makes a missing one an error), code cells carry no outputs, and a cell tagged "parameters" sets
    /// Smoke (CI runs each with -p Smoke=true).
    /// </summary>
    [Fact]
    public void Committed_notebooks_have_cell_ids_no_outputs_and_a_smoke_parameter()
    {
        var notebooks = Directory.GetFiles(Path.Combine(TestData.RepositoryRoot(), "notebooks"), "*.ipynb");
        Assert.NotEmpty(notebooks);
        foreach (var path in notebooks)
        {
            var name = Path.GetFileName(path);
            var document = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
            Assert.True((int)document["nbformat"]! == 4 && (int)document["nbformat_minor"]! >= 5, name);
            var cells = document["cells"]!.AsArray().Select(c => c!.AsObject()).ToArray();
            var ids = cells.Select(c => (string?)c["id"]).ToArray();
            Assert.All(ids, id => Assert.Matches("^[a-zA-Z0-9_-]{1,64}$", id ?? $"{name}: a cell without an id"));
            Assert.Equal(ids.Length, ids.Distinct().Count());
            var code = cells.Where(c => (string?)c["cell_type"] == "code").ToArray();
            Assert.All(code, c => Assert.True(c["outputs"]!.AsArray().Count == 0, $"{name}: a committed code cell has outputs"));
            var parameters = code.Where(c => c["metadata"]?["tags"]?.AsArray().Any(t => (string?)t == "parameters") == true).ToArray();
            Assert.True(parameters.Length == 1, $"{name}: {parameters.Length} cells tagged parameters");
            Assert.Contains("Smoke", string.Concat(parameters[0]["source"]!.AsArray().Select(l => (string?)l)));
            // Issue 23: they run in .NET Interactive too, so the kit is referenced first and no cell uses the engine-only
            // Progress(…) and Cancel globals (Notebook.Progress and Notebook.Cancel work in every host).
            var sources = code.Select(c => string.Concat(c["source"]!.AsArray().Select(l => (string?)l))).ToArray();
            Assert.Matches("(?m)^#r \"nuget: ResearchKit, [0-9.]+\"$", sources[0]);
            Assert.All(sources, c => Assert.DoesNotMatch(@"(?<![\w.])(Progress\(|Cancel\b)", c));
        }
    }

    internal static string Write(params JsonObject[] cells)
    {
        var notebook = new JsonObject
        {
            ["nbformat"] = 4, ["nbformat_minor"] = 5,
            ["metadata"] = new JsonObject
            {
                ["kernelspec"] = new JsonObject { ["display_name"] = ".NET (C#)", ["language"] = "C#", ["name"] = ".net-csharp" },
                ["polyglot_notebook"] = new JsonObject { ["kernelInfo"] = new JsonObject { ["defaultKernelName"] = "csharp" } },
            },
            ["cells"] = new JsonArray(cells.Select(c => (JsonNode)c).ToArray()),
        };
        var path = Path.Combine(TestData.TempDir(), "test.ipynb");
        File.WriteAllText(path, notebook.ToJsonString());
        return path;
    }

    internal static List<JsonObject> Outputs(RunResult r, int cell) => ((JsonArray)r.Notebook.CellObjects.ElementAt(cell)["outputs"]!).Select(o => (JsonObject)o!).ToList();
    internal static string Text(JsonNode? n) => NotebookDocument.Text(n);

    [Fact]
    public void Cells_share_state_and_produce_streams_results_and_updated_displays()
    {
        var path = Write(
            Markdown("# Title"),
            Code("#!csharp\nint n = 20;\nvar h = display(\"first\");"),
            Code("Console.WriteLine($\"n={n}\");\nConsole.Error.Write(\"careful\");\nh.Update(\"second\");\nn * 2 + 1"),
            Code("TorchSharp.torch.ones(2, 3)"));
        var result = NotebookRunner.Run(path, new RunOptions());
        Assert.True(result.Succeeded, result.Error);
        var display = Outputs(result, 1).Single();
        Assert.Equal("display_data", display["output_type"]!.GetValue<string>());
        Assert.Equal("second", Text(display["data"]!["text/plain"]));      // updated in place, not appended
        var outputs = Outputs(result, 2);
        Assert.Equal(new[] { "stream", "stream", "execute_result" }, outputs.Select(o => o["output_type"]!.GetValue<string>()));
        Assert.Equal("n=20\n", Text(outputs[0]["text"]));
        Assert.Equal("stderr", outputs[1]["name"]!.GetValue<string>());
        Assert.Equal("41", Text(outputs[2]["data"]!["text/plain"]));
        Assert.Equal(2, outputs[2]["execution_count"]!.GetValue<int>());
        Assert.Contains("tensor [2, 3] Float32", Text(Outputs(result, 3).Single()["data"]!["text/html"]));
        // Polyglot metadata survives.
        Assert.Equal(".net-csharp", result.Notebook.Root["metadata"]!["kernelspec"]!["name"]!.GetValue<string>());
        Assert.NotNull(result.Notebook.Root["metadata"]!["polyglot_notebook"]);
        Assert.True(result.Notebook.CellObjects.ElementAt(2)["metadata"]!["execution"]!["shell.execute_reply"] is not null);
    }

    [Fact]
    public void Parameters_are_injected_after_the_parameters_cell_with_the_defaults_types()
    {
        var path = Write(
            Code("bool Smoke = false;\nint Count = 3;\nvar Ratio = 0.5;\nstring Name = \"x\";\ndouble[] Ratios = { 0.1 };", "parameters"),
            Code("$\"{Smoke}|{Count + 1}|{Ratio * 2}|{Name}|{Ratios.Sum()}\""));
        var values = new Dictionary<string, string> { ["Smoke"] = "true", ["Count"] = "41", ["Ratio"] = "0.25", ["Name"] = "a \"quoted\" name", ["Ratios"] = "0.2,0.3" };
        var result = NotebookRunner.Run(path, new RunOptions(values));
        Assert.True(result.Succeeded, result.Error);
        var cells = result.Notebook.CellObjects.ToList();
        Assert.Equal(new[] { "injected-parameters" }, NotebookDocument.Tags(cells[1]));
        Assert.Equal("True|42|0.5|a \"quoted\" name|0.5", Text(Outputs(result, 2).Single()["data"]!["text/plain"]));
    }

    [Theory]
    [InlineData("Missing", "1", "not declared")]
    [InlineData("Count", "many", "not a valid int")]
    [InlineData("Smoke", "maybe", "not a valid bool")]
    public void Bad_parameters_fail_before_any_cell_runs(string name, string value, string message)
    {
        var marker = Path.Combine(TestData.TempDir(), "ran");
        var path = Write(Code("bool Smoke = false;\nint Count = 3;", "parameters"), Code($"System.IO.File.WriteAllText(@\"{marker}\", \"x\");"));
        var e = Assert.Throws<ResearchKitException>(() => NotebookRunner.Run(path, new RunOptions(new Dictionary<string, string> { [name] = value })));
        Assert.Contains(message, e.Message);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void A_failing_cell_records_the_error_and_stops_unless_continue_on_error()
    {
        var path = Write(Code("int a = 1;"), Code("throw new InvalidOperationException(\"boom\");"), Code("a + 1"), Code("undefinedName"));
        var stopped = NotebookRunner.Run(path, new RunOptions());
        Assert.False(stopped.Succeeded);
        Assert.Equal(1, stopped.FailedCell);
        var error = Outputs(stopped, 1).Single();
        Assert.Equal(("error", "InvalidOperationException", "boom"), (error["output_type"]!.GetValue<string>(), error["ename"]!.GetValue<string>(), error["evalue"]!.GetValue<string>()));
        Assert.NotEmpty((JsonArray)error["traceback"]!);
        Assert.Empty(Outputs(stopped, 2));
        Assert.Null(stopped.Notebook.CellObjects.ElementAt(2)["execution_count"]);

        var continued = NotebookRunner.Run(path, new RunOptions(ContinueOnError: true));
        Assert.False(continued.Succeeded);
        Assert.Equal("2", Text(Outputs(continued, 2).Single()["data"]!["text/plain"]));     // state kept after the error
        Assert.Equal("CompilationError", Outputs(continued, 3).Single()["ename"]!.GetValue<string>());
    }

    /// <summary>Languages we have no kernel for are one-line errors; shipped packages need no restore (PolyglotTests has the rest).</summary>
    [Fact]
    public void Unknown_magics_are_clear_errors_and_shipped_packages_are_accepted_without_a_restore()
    {
        var result = NotebookRunner.Run(Write(Code("#r \"nuget: Plotly.NET, 5.0.0\"\n1 + 1"), Code("#!pwsh\nGet-Date"), Code("#r \"nuget: Newtonsoft.Json, 13.0.1\"\n2")),
            new RunOptions(ContinueOnError: true));
        Assert.Equal("2", Text(Outputs(result, 0).Single(o => o["output_type"]!.GetValue<string>() == "execute_result")["data"]!["text/plain"]));
        Assert.Contains("Plotly.NET, 6.0.0", Text(Outputs(result, 0)[0]["data"]!["text/plain"]));   // the shipped version, not 5.0.0
        Assert.StartsWith("line 1: '#!pwsh' is not a magic ResearchKit knows", Outputs(result, 1).Single()["evalue"]!.GetValue<string>());
        Assert.Equal("2", Text(Outputs(result, 2).Last()["data"]!["text/plain"]));
    }

    [Fact]
    public void Hash_r_with_a_path_loads_that_assembly()
    {
        var assembly = typeof(ModelTests).Assembly.Location;   // not referenced by the session by default
        var result = NotebookRunner.Run(Write(Code($"#r \"{assembly}\"\ntypeof(ResearchKit.Tests.ModelTests).Name")), new RunOptions());
        Assert.True(result.Succeeded, result.Error);
        Assert.Equal("ModelTests", Text(Outputs(result, 0).Single()["data"]!["text/plain"]));
    }

    [Fact]
    public void A_cell_over_the_timeout_fails_with_a_timeout_error()
    {
        // The first cell pays for nothing but itself (the compiler warmed up before it); the second ignores Cancel,
        // so after the grace period its worker is ended; the third watches Cancel and stops by itself.
        var path = Write(Code("Console.WriteLine(\"quick\");"), Code("System.Threading.Thread.Sleep(60_000);"), Code("Task.Delay(60_000, Cancel).Wait(); 1"));
        var result = NotebookRunner.Run(path, new RunOptions(CellTimeout: TimeSpan.FromSeconds(1), ContinueOnError: true)
            { Session = dir => new WorkerSession(dir) { CancelGrace = TimeSpan.FromSeconds(1) } });
        Assert.Equal("quick\n", Text(Outputs(result, 0).Single()["text"]));
        var killed = Outputs(result, 1).Single();
        Assert.Equal("TimeoutError", killed["ename"]!.GetValue<string>());
        Assert.Contains("did not stop within 1 s", killed["evalue"]!.GetValue<string>());
        var stopped = Outputs(result, 2).Single();
        Assert.Equal(("TimeoutError", "the cell ran longer than 1 s (--timeout)"), (stopped["ename"]!.GetValue<string>(), stopped["evalue"]!.GetValue<string>()));
    }

    const string ChartCell = "Charts.Ablation(\"t\", \"ratio\", \"accuracy\", new[] { new ChartSeries(\"ours\", new[] { 0.1, 0.5, 0.9 }, new[] { 0.7, 0.8, 0.75 }) }, new[] { new ChartSeries(\"paper\", new[] { 0.75 }, new[] { 73.5 }) })";

    [Fact]
    public void Plotly_js_is_inlined_once_per_notebook_and_once_per_report()
    {
        var result = NotebookRunner.Run(Write(Markdown("# Report\n\n| a | b |\n|---|---|\n| 1 | 2 |"), Code(ChartCell), Code(ChartCell)), new RunOptions());
        Assert.True(result.Succeeded, result.Error);
        string Html(int cell) => Text(Outputs(result, cell).Single()["data"]!["text/html"]);
        Assert.Contains("plotly.js v2.28", Html(1));
        Assert.DoesNotContain("plotly.js v2.28", Html(2));
        Assert.DoesNotContain("<script src", Html(1) + Html(2));   // nothing fetched: no external script
        var report = HtmlReport.Render(result.Notebook);
        Assert.Equal(1, CountOf(report, "plotly.js v2.28"));
        Assert.Contains("<h1", report);
        Assert.Contains("<table", report);
    }

    internal static int CountOf(string text, string part)
    {
        int count = 0;
        for (int at = text.IndexOf(part, StringComparison.Ordinal); at >= 0; at = text.IndexOf(part, at + 1, StringComparison.Ordinal)) count++;
        return count;
    }

    /// <summary>The DOM of a local page after headless Chromium has run its scripts for the given virtual time (fresh profile).</summary>
    internal static string HeadlessDom(string page, int virtualTimeMs) =>
        Run("/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", $"--user-data-dir={TestData.TempDir()}",
            $"--virtual-time-budget={virtualTimeMs}", "--dump-dom", new Uri(page).AbsoluteUri);

    internal static string Run(string file, params string[] args)
    {
        var (code, output, error) = TestData.RunProcess(file, args);
        Assert.True(code == 0, $"{file} exited {code}: {error}");
        return output;
    }

    [Fact]
    public void Executed_notebooks_pass_Jupyters_nbformat_validator()
    {
        // Debian's python3-nbformat (installed by .ci/setup) is the reference implementation of the format.
        var result = NotebookRunner.Run(Write(Markdown("# x"), Code("bool Smoke = false;", "parameters"), Code("Console.WriteLine(1);\ndisplay(2);\n3"), Code(ChartCell), Code("throw new Exception(\"e\");")),
            new RunOptions(new Dictionary<string, string> { ["Smoke"] = "true" }, ContinueOnError: true));
        var path = Path.Combine(TestData.TempDir(), "out.ipynb");
        result.Notebook.Save(path);
        var output = Run("/usr/bin/python3", "-c", "import sys, nbformat; nbformat.validate(nbformat.read(sys.argv[1], as_version=4)); print('valid')", path);
        Assert.Equal("valid", output.Trim());
    }

    [Fact]
    public void The_HTML_report_renders_its_chart_with_every_data_point_in_headless_chromium()
    {
        var result = NotebookRunner.Run(Write(Markdown("# Chart"), Code(ChartCell)), new RunOptions());
        var html = Path.Combine(TestData.TempDir(), "report.html");
        HtmlReport.Write(result.Notebook, html);
        var dom = HeadlessDom(html, virtualTimeMs: 5000);
        // Plotly draws each marker as a path.point inside the plot's SVG: 3 of ours + 1 of the paper's.
        Assert.Contains("class=\"main-svg\"", dom);
        Assert.Equal(4, CountOf(dom, "class=\"point\""));
    }

    [Fact]
    public void Default_imports_resolve_Frame_and_Chart_and_Show_and_Display_put_values_in_the_notebook()
    {
        var result = NotebookRunner.Run(Write(
            Code("Frame.FromRecords(new[] { new { A = 1, B = 2.5 } }).RowCount"),
            Code("var chart = Chart.Line<double, double, string>(new[] { 1.0, 2.0 }, new[] { 3.0, 4.0 }).WithXAxisStyle<double, double, string>(TitleText: \"x\");\nchart.Show();"),
            Code("\"hello\".Display();\n42")), new RunOptions());
        Assert.True(result.Succeeded, result.Error);
        Assert.Equal("1", Text(Outputs(result, 0).Single()["data"]!["text/plain"]));
        var shown = Outputs(result, 1).Single();
        Assert.Equal("display_data", shown["output_type"]!.GetValue<string>());
        Assert.Equal(2, shown["data"]![MimeFormatter.PlotlyMime]!["data"]![0]!["x"]!.AsArray().Count);
        var outputs = Outputs(result, 2);
        Assert.Equal(("display_data", "hello"), (outputs[0]["output_type"]!.GetValue<string>(), Text(outputs[0]["data"]!["text/plain"])));
        Assert.Equal("42", Text(outputs[1]["data"]!["text/plain"]));
    }

    [Fact]
    public void Deedle_series_display_as_their_own_text_and_huge_default_displays_as_a_summary()
    {
        var result = NotebookRunner.Run(Write(
            Code("new Deedle.Series<int, double>(Enumerable.Range(0, 1000).ToArray(), Enumerable.Range(0, 1000).Select(i => i * 0.5).ToArray())"),
            Code("new { Name = \"big\", Payload = new string('x', 300_000) }")), new RunOptions());
        Assert.True(result.Succeeded, result.Error);
        var series = Outputs(result, 0).Single()["data"]!;
        Assert.Contains("999 -> 499.5", Text(series["text/plain"]));
        Assert.True(series.ToJsonString().Length < 10_000, $"series display is {series.ToJsonString().Length} characters");
        var summary = Text(Outputs(result, 1).Single()["data"]!["text/plain"]);
        Assert.Contains("its full display would be", summary);
        Assert.True(summary.Length < 1000, summary);
    }

    [Fact]
    public void Parameters_accept_NaN_infinities_and_bracketed_lists()
    {
        var path = Write(
            Code("double Lr = 0.1;\nfloat Scale = 1f;\ndouble[] Ratios = { 0.75 };\nstring[] Names = { \"a\" };\nint[] Sizes = { 1 };", "parameters"),
            Code("$\"{double.IsNaN(Lr)}|{Scale}|{string.Join(\";\", Ratios)}|{string.Join(\";\", Names)}|{Sizes.Sum()}\""));
        var values = new Dictionary<string, string> { ["Lr"] = "NaN", ["Scale"] = "-inf", ["Ratios"] = "[0.5, 0.25]", ["Names"] = "[\"x\", \"y, z\"]", ["Sizes"] = "[]" };
        var result = NotebookRunner.Run(path, new RunOptions(values));
        Assert.True(result.Succeeded, result.Error);
        Assert.Equal("True|-Infinity|0.5;0.25|x;y, z|0", Text(Outputs(result, 2).Single()["data"]!["text/plain"]));
    }

    [Fact]
    public void Errors_name_the_cell_and_line_print_their_message_once_and_drop_native_frames()
    {
        var path = Write(Markdown("# Errors"), Code("int Divide(int a, int b)\n{\n    return a / b;\n}"), Code("var x = 1;\nvar y = Divide(x, 0);"),
            Code("var z = undefinedName;"), Code("torch.zeros(2, 3).mm(torch.zeros(4, 5))"), Code("torch.zeros(1L << 45)"));
        var result = NotebookRunner.Run(path, new RunOptions(ContinueOnError: true));
        Assert.Equal("In [2] (cell 3 of 6): DivideByZeroException: Attempted to divide by zero.", result.Error);
        var traceback = Outputs(result, 2).Single()["traceback"]!.AsArray().Select(t => t!.GetValue<string>()).ToList();
        Assert.Equal("System.DivideByZeroException: Attempted to divide by zero.", traceback[0]);
        Assert.Equal(new[] { "   at Divide(Int32 a, Int32 b) in cell 2, line 3", "   at cell 3, line 2" }, traceback.Skip(1));
        Assert.Equal("cell 4, line 1: error CS0103: The name 'undefinedName' does not exist in the current context", Outputs(result, 3).Single()["evalue"]!.GetValue<string>());
        var native = Outputs(result, 4).Single()["evalue"]!.GetValue<string>();
        Assert.Equal("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)", native);
        // An allocation failure: libtorch's message without its C++ source location and frames.
        var allocation = Outputs(result, 5).Single()["evalue"]!.GetValue<string>();
        Assert.Contains("can't allocate memory", allocation);
        Assert.DoesNotContain("\n", allocation);
        var report = HtmlReport.Render(result.Notebook);
        Assert.Equal(1, CountOf(report, "Attempted to divide by zero."));
    }

    [Fact]
    public void Charts_draw_in_nbconvert_HTML_in_headless_chromium_and_carry_the_plotly_figure_and_a_PNG()
    {
        // nbconvert's page loads require.js, which once swallowed the inlined plotly.js and left every chart blank.
        var result = NotebookRunner.Run(Write(Markdown("# Charts"), Code(ChartCell), Code(ChartCell.Replace("0.75 }", "0.5 }")), Code("Charts.LossCurve(new[] { 1.0, 0.5, 0.25 }).Show();")), new RunOptions());
        Assert.True(result.Succeeded, result.Error);
        var data = Outputs(result, 1).Single()["data"]!;
        Assert.NotNull(data[MimeFormatter.PlotlyMime]!["layout"]);
        using (var png = SkiaSharp.SKBitmap.Decode(Convert.FromBase64String(data["image/png"]!.GetValue<string>())))
            Assert.True(png.Width > 100 && png.Height > 100);
        Assert.Contains("<img alt=\"chart (static picture)\"", Text(data["text/html"]));   // what a viewer without scripts shows

        var dir = TestData.TempDir();
        var notebook = Path.Combine(dir, "charts.ipynb");
        result.Notebook.Save(notebook);
        Run("/usr/bin/python3", "-m", "nbconvert", "--to", "html", notebook);
        var html = Path.Combine(dir, "charts.html");
        Assert.Contains("require.min.js", File.ReadAllText(html));
        var dom = HeadlessDom(html, virtualTimeMs: 10000);
        // Three charts drawn: 4 + 4 markers on the ablations, one line (no markers) on the loss curve; no static picture left.
        Assert.Equal(3, CountOf(dom, "class=\"plot-container plotly\""));
        Assert.Equal(8, CountOf(dom, "class=\"point\""));
        Assert.Equal(0, CountOf(dom, "chart (static picture)"));
    }
}
