using System.Text.RegularExpressions;

namespace ResearchKit.Notebooks;

/// <summary>
/// Error text a notebook author can read: libtorch's C++ context (`Exception raised from …`, `frame #N: …`)
/// kept out of messages, and stack frames mapped to the cell and line they came from.
/// </summary>
public static partial class ErrorText
{
    /// <summary>The message without libtorch's C++ source location and native stack frames.</summary>
    public static string Clean(string message)
    {
        var kept = new List<string>();
        foreach (var line in message.Replace("\r\n", "\n").Split('\n'))
        {
            if (IsNativeContext(line)) break;
            kept.Add(line);
        }
        return string.Join("\n", kept).Trim();
    }

    /// <summary>A libtorch native stack frame line (`frame #3: …`).</summary>
    public static bool IsNativeFrame(string line) => NativeFrame().IsMatch(line);

    /// <summary>libtorch's C++ context after a message: its source location or a native stack frame.</summary>
    public static bool IsNativeContext(string line) => line.StartsWith("Exception raised from ", StringComparison.Ordinal) || IsNativeFrame(line);

    /// <summary>
    /// `Type: message` then the frames worth reading: `at cell 5, line 3` for cell code, library frames as .NET prints them;
    /// the scripting and async machinery in between is dropped.
    /// </summary>
    public static string[] Traceback(Exception error, string message)
    {
        var lines = new List<string> { $"{error.GetType().FullName}: {message}" };
        foreach (var raw in (error.StackTrace ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var line = raw.TrimEnd();
            if (Machinery().IsMatch(line)) continue;
            var cell = CellFrame().Match(line);
            if (cell.Success)
            {
                var method = cell.Groups["method"].Value;
                line = method.Contains("<Initialize>", StringComparison.Ordinal)
                    ? $"   at {cell.Groups["cell"].Value}, line {cell.Groups["line"].Value}"
                    : $"   at {method} in {cell.Groups["cell"].Value}, line {cell.Groups["line"].Value}";
            }
            lines.Add(line);
        }
        for (var inner = error.InnerException; inner is not null; inner = inner.InnerException)
            lines.Add($" ---> {inner.GetType().FullName}: {Clean(inner.Message)}");
        return lines.ToArray();
    }

    [GeneratedRegex(@"^frame #\d+:")]
    private static partial Regex NativeFrame();

    // `at Submission#3.<<Initialize>>d__0.MoveNext() in /notebook/folder/cell 5:line 3` or `at Submission#2.Foo(Int32 x) in cell 4:line 2`.
    [GeneratedRegex(@"^\s*at (?:Submission#\d+\.)?(?<method>.*?) in (?:.*[/\\])?(?<cell>cell \d+):line (?<line>\d+)$")]
    private static partial Regex CellFrame();

    [GeneratedRegex(@"^\s*(--- End of stack trace|at System\.Runtime\.CompilerServices\.|at System\.Runtime\.ExceptionServices\.|at System\.Threading\.|at Microsoft\.CodeAnalysis\.Scripting\.)")]
    private static partial Regex Machinery();
}
