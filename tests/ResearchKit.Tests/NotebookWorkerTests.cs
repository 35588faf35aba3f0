using System.Text.Json.Nodes;
using ResearchKit.Notebooks;
using static ResearchKit.Tests.NotebookTests;

namespace ResearchKit.Tests;

/// <summary>
/// The runner's worker process: native crashes, Environment.Exit and stack overflows end only the worker; the output
/// notebook is written as cells finish; huge outputs are bounded; output paths are checked before any cell runs.
/// </summary>
public class NotebookWorkerTests
{
    static JsonObject Saved(string path) => JsonNode.Parse(File.ReadAllText(path))!.AsObject();
    static List<JsonObject> SavedOutputs(JsonObject notebook, int cell) => notebook["cells"]![cell]!["outputs"]!.AsArray().Select(o => o!.AsObject()).ToList();

    [Fact]
    public void A_mismatched_matmul_in_the_third_cell_keeps_the_first_two_outputs_and_names_both_shapes()
    {
        var path = Write(Code("var a = torch.zeros(2, 3);\nConsole.WriteLine(\"first\");"), Code("Console.WriteLine(\"second\");"),
            Code("var c = a.matmul(torch.zeros(4, 5));"), Code("Console.WriteLine(\"never\");"));
        var output = Path.Combine(TestData.TempDir(), "out", "crash.ipynb");
        var result = NotebookRunner.Run(path, new RunOptions { OutputPath = output });
        Assert.False(result.Succeeded);
        Assert.Equal(2, result.FailedCell);
        Assert.Contains("In [3] (cell 3 of 4)", result.Error);

        var saved = Saved(output);
        Assert.Equal("first\n", Text(SavedOutputs(saved, 0).Single()["text"]));
        Assert.Equal("second\n", Text(SavedOutputs(saved, 1).Single()["text"]));
        var error = SavedOutputs(saved, 2).Single();
        Assert.Equal("NativeError", error["ename"]!.GetValue<string>());
        Assert.StartsWith("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)", error["evalue"]!.GetValue<string>());
        Assert.Contains("variables from earlier cells are lost", error["evalue"]!.GetValue<string>());
        Assert.DoesNotContain("frame #", error["traceback"]!.ToJsonString());
        Assert.Empty(SavedOutputs(saved, 3));
        Assert.Equal("failed", saved["metadata"]!["researchkit"]!["status"]!.GetValue<string>());
    }

    [Fact]
    public void After_a_crash_continue_on_error_runs_independent_cells_in_a_fresh_session_and_marks_the_ones_needing_lost_state()
    {
        var path = Write(Code("var model = 41;\nint Twice(int x) => 2 * x;"), Code("torch.zeros(2, 3).matmul(torch.zeros(4, 5))"),
            Code("var fresh = 1;\nfresh + 1"), Code("model + 1"), Code("var derived = Twice(3);"), Code("derived"), Code("var model = 7;\nmodel"));
        var result = NotebookRunner.Run(path, new RunOptions(ContinueOnError: true));
        Assert.StartsWith("mat1 and mat2", Outputs(result, 1).Single()["evalue"]!.GetValue<string>());
        Assert.Equal("2", Text(Outputs(result, 2).Single()["data"]!["text/plain"]));                  // ran in the new session
        var needsModel = Outputs(result, 3).Single();
        Assert.Equal("NotRun", needsModel["ename"]!.GetValue<string>());
        Assert.Contains("'model'", needsModel["evalue"]!.GetValue<string>());
        Assert.Contains("In [2] (cell 2 of 7)", needsModel["evalue"]!.GetValue<string>());
        Assert.Contains("'Twice'", Outputs(result, 4).Single()["evalue"]!.GetValue<string>());
        Assert.Contains("'derived'", Outputs(result, 5).Single()["evalue"]!.GetValue<string>());   // lost because its cell could not run
        Assert.Equal("7", Text(Outputs(result, 6).Single()["data"]!["text/plain"]));                  // redeclares what it uses
        Assert.Null(result.Notebook.CellObjects.ElementAt(3)["execution_count"]);
        Assert.Equal(4, result.Notebook.CellObjects.ElementAt(6)["execution_count"]!.GetValue<int>());
    }

    [Theory]
    [InlineData("Console.WriteLine(\"bye\");\nEnvironment.Exit(3);", "ProcessExit", "Environment.Exit(3)")]
    [InlineData("int Down(int n) => Down(n + 1) + 1;\nDown(0)", "StackOverflow", "stack overflow")]
    [InlineData("new Thread(() => throw new InvalidOperationException(\"from a thread\")).Start();\nThread.Sleep(10_000);", "UnhandledException", "from a thread")]
    public void A_cell_that_ends_the_process_fails_with_the_reason_and_the_notebook_is_written(string source, string name, string message)
    {
        var output = Path.Combine(TestData.TempDir(), "out.ipynb");
        var result = NotebookRunner.Run(Write(Code("1 + 1"), Code(source)), new RunOptions { OutputPath = output });
        Assert.False(result.Succeeded);
        var error = SavedOutputs(Saved(output), 1).Last();
        Assert.Equal(name, error["ename"]!.GetValue<string>());
        Assert.Contains(message, error["evalue"]!.GetValue<string>());
        Assert.Equal("2", Text(SavedOutputs(Saved(output), 0).Single()["data"]!["text/plain"]));
    }

    [Fact]
    public async Task The_output_notebook_is_saved_as_cells_finish_and_an_interrupt_keeps_them_with_the_running_cells_progress()
    {
        var path = Write(Code("Console.WriteLine(\"finished\");"),
            Code("var p = Progress(\"train\");\np.Report(\"epoch 1/3\");\nTask.Delay(120_000, Cancel).Wait();"), Code("Console.WriteLine(\"not reached\");"));
        var output = Path.Combine(TestData.TempDir(), "live.ipynb");
        using var interrupt = new CancellationTokenSource();
        var statuses = new List<CellStatus>();
        var run = Task.Run(() => NotebookRunner.Run(path, new RunOptions { OutputPath = output, SaveInterval = TimeSpan.FromMilliseconds(100) },
            new ResearchKit.Training.CallbackProgress<CellStatus>(s => { lock (statuses) statuses.Add(s); }), interrupt.Token));

        // While the second cell runs, the file already holds the first cell's output and the second's progress.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        JsonObject? during = null;
        while (clock.Elapsed < TimeSpan.FromSeconds(60) && !run.IsCompleted)
        {
            Thread.Sleep(100);
            try { during = File.Exists(output) ? Saved(output) : null; } catch (System.Text.Json.JsonException) { continue; }
            if (during is not null && Text(SavedOutputs(during, 1).FirstOrDefault()?["data"]?["text/plain"]).Contains("epoch 1/3")) break;
        }
        Assert.False(run.IsCompleted, "the run ended before it could be interrupted");
        Assert.Equal("finished\n", Text(SavedOutputs(during!, 0).Single()["text"]));
        Assert.Contains("epoch 1/3", Text(SavedOutputs(during!, 1).FirstOrDefault()?["data"]?["text/plain"]));   // saved though the cell is quiet
        Assert.Equal("running", during!["metadata"]!["researchkit"]!["status"]!.GetValue<string>());
        lock (statuses) Assert.Contains(statuses, s => s.Progress == "train · epoch 1/3" && s.Cell.Index == 2);

        interrupt.Cancel();
        var result = await run;
        Assert.True(result.Interrupted);
        var saved = Saved(output);
        Assert.Equal("interrupted", saved["metadata"]!["researchkit"]!["status"]!.GetValue<string>());
        Assert.Contains("epoch 1/3", Text(SavedOutputs(saved, 1)[0]["data"]!["text/plain"]));
        Assert.Equal("Interrupted", SavedOutputs(saved, 1).Last()["ename"]!.GetValue<string>());
        Assert.Empty(SavedOutputs(saved, 2));
    }

    [Fact]
    public void Stream_output_past_the_limit_is_dropped_with_a_note_and_kept_whole_in_a_side_file()
    {
        // 3 M characters in 30 000 writes: linear-time appends make this a second's work (it was minutes).
        var path = Write(Code("var line = new string('x', 99);\nfor (int i = 0; i < 30_000; i++) Console.WriteLine(line);\nConsole.Error.WriteLine(\"tail\");"));
        var output = Path.Combine(TestData.TempDir(), "big.ipynb");
        var result = NotebookRunner.Run(path, new RunOptions { OutputPath = output, StreamLimit = 1_000_000 });
        Assert.True(result.Succeeded, result.Error);
        var outputs = SavedOutputs(Saved(output), 0);
        Assert.Equal(1_000_000, Text(outputs[0]["text"]).Length);
        var notes = string.Concat(outputs.Select(o => Text(o["text"])).Where(t => t.Contains("dropped")));
        Assert.Contains("2,000,000 more characters of stdout dropped (over 1,000,000 per cell); the full text is in big.cell-1.stdout.txt", notes);
        Assert.Contains("5 more characters of stderr dropped", notes);
        Assert.Equal(3_000_000, new FileInfo(Path.Combine(Path.GetDirectoryName(output)!, "big.cell-1.stdout.txt")).Length);
    }

    [Fact]
    public void An_unwritable_output_path_fails_before_any_cell_runs()
    {
        var dir = TestData.TempDir();
        var marker = Path.Combine(dir, "ran");
        var file = Path.Combine(dir, "a-file");
        File.WriteAllText(file, "");
        var path = Write(Code($"System.IO.File.WriteAllText(@\"{marker}\", \"x\");"));
        var e = Assert.Throws<ResearchKitException>(() => NotebookRunner.Run(path, new RunOptions { OutputPath = Path.Combine(file, "out.ipynb") }));
        Assert.Equal($"{Path.Combine(file, "out.ipynb")}: {file} is a file, so -o cannot be created under it", e.Message);
        e = Assert.Throws<ResearchKitException>(() => NotebookRunner.Run(path, new RunOptions { HtmlPath = "/proc/report.html" }));
        Assert.StartsWith("--html /proc/report.html: cannot write there", e.Message);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void A_timed_out_loop_stops_at_its_next_iteration_and_the_session_keeps_earlier_variables()
    {
        // The runner's --timeout uses the kernel's interrupt: loops check the cell's token, so nothing runs on in the background.
        var path = Write(Code("var kept = 5;"), Code("long spins = 0;\nwhile (true) { spins++; }"), Code("kept + 1"));
        var result = NotebookRunner.Run(path, new RunOptions(CellTimeout: TimeSpan.FromSeconds(1), ContinueOnError: true));
        var error = Outputs(result, 1).Single();
        Assert.Equal(("TimeoutError", "the cell ran longer than 1 s (--timeout)"), (error["ename"]!.GetValue<string>(), error["evalue"]!.GetValue<string>()));
        Assert.Equal("6", Text(Outputs(result, 2).Single()["data"]!["text/plain"]));
    }

    [Fact]
    public void A_timed_out_fsharp_loop_is_stopped_and_the_fsharp_session_keeps_its_values()
    {
        // Issue 23: F# has no interrupt checks; the evaluation is aborted where it runs, as F# Interactive does on Ctrl+C.
        static System.Text.Json.Nodes.JsonObject FSharp(string source)
        {
            var cell = Code(source);
            cell["metadata"]!["polyglot_notebook"]!["kernelName"] = "fsharp";
            return cell;
        }
        var path = Write(FSharp("let kept = 5"), FSharp("let mutable spins = 0L\nwhile true do spins <- spins + 1L"), FSharp("kept + 1"),
            Code("var alive = 2;"), Code("#!fsharp\n#!share --from csharp alive\nalive * kept"));
        var result = NotebookRunner.Run(path, new RunOptions(CellTimeout: TimeSpan.FromSeconds(2), ContinueOnError: true));
        var error = Outputs(result, 1).Single();
        Assert.Equal(("TimeoutError", "the cell ran longer than 2 s (--timeout)"), (error["ename"]!.GetValue<string>(), error["evalue"]!.GetValue<string>()));
        Assert.Equal("6", Text(Outputs(result, 2).Single()["data"]!["text/plain"]));   // same worker: no restart
        Assert.Equal("10", Text(Outputs(result, 4).Single()["data"]!["text/plain"]));
    }

    [Fact]
    public void A_value_that_throws_while_displayed_fails_its_cell_and_the_session_lives_on()
    {
        // The last expression is a lazy query: formatting enumerates it, and 10 / 0 throws there, after the cell's code ran.
        var path = Write(Code("var kept = 5;"), Code("Enumerable.Range(0, 3).Select(i => 10 / (i - 1))"), Code("kept + 1"));
        var result = NotebookRunner.Run(path, new RunOptions(ContinueOnError: true));
        var error = Outputs(result, 1).Single();
        Assert.Equal("DivideByZeroException", error["ename"]!.GetValue<string>());
        Assert.StartsWith("displaying the cell's value failed", error["evalue"]!.GetValue<string>());
        Assert.Equal("6", Text(Outputs(result, 2).Single()["data"]!["text/plain"]));   // same session: no restart
    }

    [Fact]
    public void A_cell_uses_only_the_outside_names_it_reads()
    {
        // Loop variables, lambda parameters, locals and member names are not outside state a lost session could take.
        var used = CellDependencies.Used("for (int i = 0; i < n; i++) list.Add(i);\nvar f = (int x) => x + offset;\nforeach (var item in items) Console.WriteLine(item.Name);");
        Assert.Equal(new[] { "Console", "items", "list", "n", "offset" }, used.Order(StringComparer.Ordinal));
        Assert.Equal(new[] { "Helper", "T", "f", "model" }, CellDependencies.Declared("var model = 1;\nint Helper() => 2;\nclass T { }\nvar f = 3;").Order(StringComparer.Ordinal));
    }

    /// <summary>
    /// Issue 22, item 14: after `kill -9` of `notebook run` its output said "running" for ever. The runner records its host,
    /// process id and start time, and `notebook status` reports a vanished runner as dead.
    /// </summary>
    [Fact]
    public void A_killed_runner_leaves_an_output_that_reads_as_dead_not_running()
    {
        var dir = TestData.TempDir();
        var path = Write(Code("System.Threading.Thread.Sleep(15000);"));
        var output = Path.Combine(dir, "out.ipynb");
        var start = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "ResearchKit.Cli.dll"), "notebook", "run", path, "-o", output })
            start.ArgumentList.Add(a);
        using var runner = System.Diagnostics.Process.Start(start)!;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!(File.Exists(output) && File.ReadAllText(output).Contains("\"pid\"")) && clock.Elapsed.TotalSeconds < 60) Thread.Sleep(100);
        Assert.Equal("running", RunnerRecord.StatusOf(output));
        var (code, status, _) = TestData.Cli("notebook", "status", output);
        Assert.Equal((0, "running"), (code, status.Trim()));

        runner.Kill();   // SIGKILL: nothing of the runner runs after it
        Assert.True(runner.WaitForExit(30_000));
        Assert.Equal("dead", RunnerRecord.StatusOf(output));
        (code, status, _) = TestData.Cli("notebook", "status", output);
        Assert.Equal((0, "dead"), (code, status.Trim()));

        // A finished run keeps its status; a notebook no runner wrote is a one-line error.
        Assert.Equal(0, TestData.Cli("notebook", "run", Write(Code("1 + 1")), "-o", output).Code);
        Assert.Equal("completed", RunnerRecord.StatusOf(output));
        var e = Assert.Throws<ResearchKitException>(() => RunnerRecord.StatusOf(path));
        Assert.Equal($"{path}: not written by `researchkit notebook run` (no metadata.researchkit)", e.Message);
    }
}
