using System.CommandLine;
using ResearchKit.Notebooks;

namespace ResearchKit.Cli;

/// <summary>`researchkit notebook run`: execute an .ipynb headless with parameters, like papermill.</summary>
static class NotebookCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("notebook") { Description = ".ipynb to run" };
        var parameters = new Option<string[]>("--parameter", "-p") { Description = "Name=Value, converted to the type of the default in the cell tagged 'parameters'", AllowMultipleArgumentsPerToken = false };
        var output = new Option<string?>("--output", "-o") { Description = "executed notebook (default: out/NAME.ipynb)" };
        var html = new Option<string?>("--html") { Description = "also write a standalone HTML report (works offline)" };
        var timeout = new Option<double?>("--timeout") { Description = "seconds any one cell may run" };
        var continueOnError = new Option<bool>("--continue-on-error") { Description = "run the remaining cells after a failing one (exit code is still non-zero)" };
        var run = new Command("run", "Run every C# cell of a notebook in order and write the executed notebook")
            { input, parameters, output, html, timeout, continueOnError };
        run.SetAction(r =>
        {
            var path = r.GetValue(input)!;
            var outPath = r.GetValue(output) ?? Path.Combine("out", Path.GetFileName(path));
            var options = new RunOptions(Parameters.ParseAssignments(r.GetValue(parameters) ?? []),
                r.GetValue(timeout) is { } s ? TimeSpan.FromSeconds(s) : null, r.GetValue(continueOnError));
            var result = NotebookRunner.Run(path, options, new CallbackProgress(Path.GetFileName(path)));
            result.Notebook.Save(outPath);
            Console.Error.WriteLine($"wrote {outPath}");
            if (r.GetValue(html) is { } htmlPath)
            {
                HtmlReport.Write(result.Notebook, htmlPath);
                Console.Error.WriteLine($"wrote {htmlPath}");
            }
            Console.Error.WriteLine(result.Succeeded
                ? $"{Path.GetFileName(path)}: all cells ran in {result.Elapsed.TotalSeconds:F0} s"
                : $"error: {Path.GetFileName(path)}: {result.Error}");
            return result.Succeeded ? 0 : 1;
        });
        return new Command("notebook", "Run notebooks headless") { run };
    }

    /// <summary>Which cell is running and for how long: a live line in a terminal, start/finish lines in logs.</summary>
    sealed class CallbackProgress(string name) : IProgress<CellStatus>
    {
        readonly bool live = !Console.IsErrorRedirected;

        public void Report(CellStatus s)
        {
            var line = $"{name}: cell {s.CodeCell}/{s.CodeCells} (#{s.CellIndex}) {(s.Finished ? (s.Succeeded == true ? "done" : "FAILED") : "running")} {s.Elapsed:hh\\:mm\\:ss}";
            if (live) Console.Error.Write($"\r{line}   {(s.Finished ? "\n" : "")}");
            else if (s.Finished || s.Elapsed == TimeSpan.Zero) Console.Error.WriteLine(line);
        }
    }
}
