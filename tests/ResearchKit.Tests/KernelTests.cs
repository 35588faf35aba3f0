using System.Reflection.PortableExecutable;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using ResearchKit.Notebooks;
using ResearchKit.Notebooks.Kernel;

namespace ResearchKit.Tests;

/// <summary>
/// The Jupyter kernel, driven by Jupyter's own client (jupyter_client), nbconvert and a browser: each test installs the
/// kernelspec with `researchkit kernel install --prefix` into a temporary folder and points JUPYTER_PATH at it.
/// </summary>
public class KernelTests
{
    static readonly string Repository = TestData.RepositoryRoot();
    static readonly string Scripts = Path.Combine(Repository, "tests", "jupyter");

    static (string Name, Dictionary<string, string> Environment) InstallKernel()
    {
        var prefix = TestData.TempDir();
        var name = "rk-test-" + Guid.NewGuid().ToString("N")[..8];
        var (code, output, error) = TestData.RunProcess("dotnet", Path.Combine(AppContext.BaseDirectory, "ResearchKit.Cli.dll"), "kernel", "install", "--prefix", prefix, "--name", name);
        Assert.True(code == 0, error);
        Assert.Contains($"installed kernel '{name}'", output);
        return (name, new Dictionary<string, string> { ["JUPYTER_PATH"] = Path.Combine(prefix, "share", "jupyter") });
    }

    static string Python(string script, IReadOnlyDictionary<string, string> environment, params string[] args) =>
        Python(script, environment, TimeSpan.FromMinutes(10), args);

    /// <param name="hangGuard">Only there to end a hung script; never a speed requirement (tests share 2 loaded cores).</param>
    static string Python(string script, IReadOnlyDictionary<string, string> environment, TimeSpan hangGuard, params string[] args)
    {
        var (code, output, error) = TestData.RunProcess("/usr/bin/python3", [Path.Combine(Scripts, script), .. args], environment, hangGuard);
        Assert.True(code == 0, $"{script} exited {code}: {error[^Math.Min(error.Length, 3000)..]}");
        return output;
    }

    [Fact]
    public void The_kernelspec_is_found_by_Jupyter_listed_and_removed()
    {
        var (name, environment) = InstallKernel();
        var folder = Path.Combine(environment["JUPYTER_PATH"], "kernels", name);
        var spec = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "kernel.json")))!;
        Assert.Equal("message", spec["interrupt_mode"]!.GetValue<string>());
        Assert.Equal(["kernel", "run", "--connection-file", "{connection_file}"], spec["argv"]!.AsArray().Select(a => a!.GetValue<string>()).TakeLast(4));
        Assert.True(File.Exists(Path.Combine(folder, "logo-64x64.png")));
        var listed = TestData.RunProcess("/usr/bin/jupyter", ["kernelspec", "list"], environment, TimeSpan.FromMinutes(1));
        Assert.Contains(folder, listed.Out);
        var ours = TestData.RunProcess("dotnet", [Path.Combine(AppContext.BaseDirectory, "ResearchKit.Cli.dll"), "kernel", "list"], environment, TimeSpan.FromMinutes(1));
        Assert.Contains($"{name}\t{folder}", ours.Out);
        var prefix = Path.GetDirectoryName(Path.GetDirectoryName(environment["JUPYTER_PATH"]))!;
        var removed = TestData.RunProcess("dotnet", Path.Combine(AppContext.BaseDirectory, "ResearchKit.Cli.dll"), "kernel", "uninstall", "--prefix", prefix, "--name", name);
        Assert.True(removed.Code == 0, removed.Err);
        Assert.False(Directory.Exists(folder));
    }

    [Fact]
    public void Bad_kernel_arguments_are_one_line_errors_naming_what_is_wrong()
    {
        var prefix = TestData.TempDir();
        (int Code, string Err) Cli(params string[] args)
        {
            var (code, _, err) = TestData.RunProcess("dotnet", [Path.Combine(AppContext.BaseDirectory, "ResearchKit.Cli.dll"), .. args]);
            return (code, err.Trim());
        }
        Assert.Equal((1, "error: --name 'my kernel': a kernel name is ASCII letters, digits, '.', '-' and '_'"), Cli("kernel", "install", "--prefix", prefix, "--name", "my kernel"));
        // "." and ".." are Jupyter's characters but name folders: uninstall once deleted PREFIX/share/jupyter with them (issue 22).
        var jupyter = Path.Combine(prefix, "share", "jupyter");
        Directory.CreateDirectory(Path.Combine(jupyter, "kernels", "other"));
        foreach (var dots in new[] { ".", "..", "..." })
            foreach (var verb in new[] { "install", "uninstall" })
                Assert.Equal((1, $"error: --name '{dots}': a kernel name needs a letter, digit, '-' or '_' ('.' and '..' are folders)"),
                    Cli("kernel", verb, "--prefix", prefix, "--name", dots));
        Assert.True(Directory.Exists(Path.Combine(jupyter, "kernels", "other")));
        Assert.Equal(["other"], Directory.GetDirectories(Path.Combine(jupyter, "kernels")).Select(Path.GetFileName));
        Assert.Equal((1, "error: choose one of --user, --prefix DIR, --sys-prefix"), Cli("kernel", "install", "--user", "--prefix", prefix));
        Assert.Equal((1, $"error: no kernel 'absent' in {Path.Combine(prefix, "share", "jupyter", "kernels")}"), Cli("kernel", "uninstall", "--prefix", prefix, "--name", "absent"));
        var missing = Path.Combine(prefix, "none.json");
        Assert.Equal((1, $"error: {missing}: connection file not found"), Cli("kernel", "run", "--connection-file", missing));
    }

    [Fact]
    public void Jupyters_client_executes_completes_inspects_interrupts_and_cannot_forge_or_replay()
    {
        var (name, environment) = InstallKernel();
        var found = JsonNode.Parse(Python("kernel_protocol.py", environment, name))!;
        Assert.Null(found["exception"]);
        Assert.Equal("5.3", found["kernel_info"]!["protocol_version"]!.GetValue<string>());
        Assert.Equal("kernel_info_reply", found["kernel_info_on_control"]!.GetValue<string>());
        Assert.Equal(["hello\n"], found["first_cell"]!["stream"]!.AsArray().Select(s => s!.GetValue<string>()));
        Assert.Equal(2, found["second_cell"]!["count"]!.GetValue<int>());
        Assert.Equal("42", found["second_cell"]!["result"]![0]!.GetValue<string>());

        // One display, updated in place: the update carries the display's id.
        var display = found["display_update"]!;
        Assert.Equal(display["display_ids"]![0]!.GetValue<string>(), display["update_ids"]![0]!.GetValue<string>());
        Assert.Equal("second", display["updated_text"]![0]!.GetValue<string>());   // text as one string, as live messages carry it

        var error = found["error"]!;
        Assert.Equal(("error", "InvalidOperationException", "boom", "aborted"),
            (error["status"]!.GetValue<string>(), error["ename"]!.GetValue<string>(), error["evalue"]!.GetValue<string>(), error["queued_status"]!.GetValue<string>()));

        Assert.Equal(["Add", "AddRange"], found["complete_members"]!["matches"]!.AsArray().Select(m => m!.GetValue<string>()));
        Assert.Equal(5, found["complete_members"]!["start"]!.GetValue<int>());
        Assert.Contains("list", found["complete_names"]!.AsArray().Select(m => m!.GetValue<string>()));
        Assert.StartsWith("ResearchKit.Reporting.Charts.Ablation(string, string, string", found["inspect"]!["text"]!.GetValue<string>());
        Assert.Contains("A metric against an ablated parameter", found["inspect"]!["text"]!.GetValue<string>());   // the XML summary
        Assert.Equal("incomplete", found["is_complete"]!["open_loop"]!.GetValue<string>());
        Assert.Equal("complete", found["is_complete"]!["expression"]!.GetValue<string>());

        Assert.Equal("error", found["malformed_request"]!.GetValue<string>());   // answered, and the kernel served on
        // Interrupts stop a user's infinite loop and a training run within a second; earlier variables survive.
        foreach (var key in new[] { "interrupt_loop", "interrupt_training" })
        {
            Assert.Equal("Interrupted", found[key]!["ename"]!.GetValue<string>());
            Assert.True(found[key]!["seconds"]!.GetValue<double>() < 1.0, $"{key} took {found[key]!["seconds"]} s");
        }
        Assert.Equal("42", found["after_interrupts"]![0]!.GetValue<string>());
        // Requests sent right after an error reply run; only those queued behind the failed cell are aborted (issue 22, item 12).
        Assert.Equal(["ok", "ok"], found["after_error_reply"]!.AsArray().Select(s => s!.GetValue<string>()));
        Assert.Equal("ok", found["after_interrupt_reply"]!.GetValue<string>());

        Assert.Equal("input_request", found["input_request"]!.GetValue<string>());
        Assert.Equal("Ada", found["input_value"]![0]!.GetValue<string>());
        // counter += 100 came with a forged signature (never run); counter += 1 was sent twice (run once).
        Assert.Equal("1", found["counter_after_forged_and_replayed"]![0]!.GetValue<string>());

        Assert.Equal("NativeError", found["native_crash"]!["ename"]!.GetValue<string>());
        Assert.StartsWith("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)", found["native_crash"]!["evalue"]!.GetValue<string>());
        Assert.Equal("2", found["after_crash"]!["fresh"]![0]!.GetValue<string>());
        Assert.Equal("CompilationError", found["after_crash"]!["lost"]!.GetValue<string>());   // x died with the old session

        // 150 cells of 4 MB tensors: the engine keeps none of a cell's tensors. A kept tensor would add >= 4 MB a cell (600 MB);
        // what every submission does keep is Roslyn's compilation chain, measured at 0.2-0.25 MB a cell for `1 + 1` and
        // 0.35-0.45 MB for this cell (54-65 MB over 150, RSS noise included). The bound, 1 MB a cell, sits between the two.
        var growth = found["rss_kb"]!["at_200"]!.GetValue<long>() - found["rss_kb"]!["at_50"]!.GetValue<long>();
        Assert.True(growth < 150 * 1024, $"the worker grew by {growth} kB over 150 executions (more than 1 MB a cell)");
        Assert.Equal("CompilationError", found["after_restart"]!.GetValue<string>());
    }

    [Fact]
    public void A_notebook_executes_through_the_kernel_with_nbconvert_in_its_smoke_configuration()
    {
        // CI runs every notebook through the engine (.ci/run), and rotnet-probe-by-block also through .NET Interactive and
        // as an exported program (tests/interactive.sh); here one goes through Jupyter's own client and our kernel: MAE
        // fine-tuning with probes along training, the one a freed TorchSharp Scalar once broke in the kernel, whose
        // messaging threads allocate while a cell computes (ScalarLifetimeTests).
        var (name, environment) = InstallKernel();
        var notebook = Path.Combine(Repository, "notebooks", "mae-finetune-schedule.ipynb");
        Assert.True(File.Exists(notebook), notebook);
        // Only there to end a hung run, never a speed requirement: it takes under a minute on an idle machine.
        var lines = Python("execute_notebooks.py", environment, TimeSpan.FromMinutes(30), [name, TestData.TempDir(), notebook])
            .Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(Path.GetFileName(notebook), Assert.Single(lines).Split('\t')[0]);
        Assert.True(int.Parse(lines[0].Split('\t')[2]) > 5, lines[0]);
    }

    [Fact]
    public void A_chart_drawn_by_the_kernel_renders_in_Jupyter_Notebook_in_headless_Chromium()
    {
        // The Notebook server (token auth, loopback) runs the cell through our kernel; Chromium shows the page.
        var (name, environment) = InstallKernel();
        var found = JsonNode.Parse(Python("browser_chart.py", environment, name))!;
        Assert.True(found["kernel_connected"]!.GetValue<bool>(), found.ToJsonString());
        Assert.Equal("plot", found["state"]!.GetValue<string>());
        Assert.Equal(3, found["points"]!.GetValue<int>());                 // the chart's three markers, drawn by plotly.js
        Assert.True(found["main_svg"]!.GetValue<int>() > 0);
        Assert.True(found["static_image_gone"]!.GetValue<bool>());        // the PNG fallback replaced by the live chart
        Assert.Empty(found["error_texts"]!.AsArray());
    }

    [Fact]
    public void Messages_are_signed_with_HMAC_SHA256_over_the_four_JSON_frames()
    {
        // The standard HMAC-SHA256 example (key "key"), split across frames: the signature covers their concatenation.
        var signer = new MessageSigner("key");
        var parts = new[] { "The quick brown fox "u8.ToArray(), "jumps over the lazy dog"u8.ToArray() };
        Assert.Equal("f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8", Encoding.ASCII.GetString(signer.Sign(parts)));
        Assert.True(signer.Verify(signer.Sign(parts), parts));
        Assert.False(new MessageSigner("other").Verify(signer.Sign(parts), parts));
        Assert.True(new MessageSigner("").Verify([], parts));   // Jupyter's unsigned mode: an empty key
    }

    /// <summary>
    /// The launcher and the kernelspec run the CLI from its build folder, whose start-up assemblies the build
    /// precompiles (StartupReadyToRun in ResearchKit.Cli.csproj): without it the JIT compiled ~870 methods before the
    /// kernel bound its sockets. Checked on the files, since a missing crossgen2 leaves a working but slower build.
    /// </summary>
    [Fact]
    public void The_build_precompiles_the_assemblies_the_kernel_starts_with()
    {
        var configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;   // bin/CONFIGURATION/net10.0
        var output = Path.Combine(Repository, "src", "ResearchKit.Cli", "bin", configuration, "net10.0");
        foreach (var name in new[] { "ResearchKit.Cli", "ResearchKit.Notebooks", "NetMQ", "AsyncIO", "System.CommandLine" })
        {
            var assembly = Path.Combine(output, name + ".dll");
            Assert.True(ReadyToRun(assembly), $"{assembly} holds no ReadyToRun code");
        }
        // Off the start-up path the build leaves IL (TorchSharp.dll is also rewritten after the build, which needs IL).
        Assert.False(ReadyToRun(Path.Combine(output, "TorchSharp.dll")));
    }

    static bool ReadyToRun(string assembly)
    {
        using var pe = new PEReader(File.OpenRead(assembly));
        return pe.PEHeaders.CorHeader!.ManagedNativeHeaderDirectory.Size > 0;
    }

    [Fact]
    public void Interrupt_checks_go_into_loop_bodies_and_methods_without_moving_any_line()
    {
        var code = "int Sum(int n)\n{\n    var s = 0;\n    for (int i = 0; i < n; i++) s += i;\n    return s;\n}\nwhile (true)\n{\n}\nforeach (var x in new[] { 1 }) { }\ndo Console.Write(1); while (false);\nAction a = () => { };\nclass R : IDisposable { public void Dispose() { } }";
        var instrumented = Interrupts.Instrument(code);
        Assert.Equal(code.Split('\n').Length, instrumented.Split('\n').Length);
        Assert.Equal(6, NotebookTests.CountOf(instrumented, "Interrupts.Check();"));   // method, for, while, foreach, do, lambda; not Dispose
        Assert.Contains("for (int i = 0; i < n; i++) {global::ResearchKit.Notebooks.Interrupts.Check(); s += i;}", instrumented);
        Assert.Equal("x = ;", Interrupts.Instrument("x = ;"));   // code that does not parse is left for the compiler to report
    }
}
