using System.Text;
using FSharp.Compiler.Diagnostics;
using static FSharp.Compiler.Interactive.Shell;
using Microsoft.FSharp.Core;

namespace ResearchKit.Notebooks;

/// <summary>
/// F# cells: an F# Interactive session (FSharp.Compiler.Service) in the session's own process, started by the first F#
/// part, so values cross between F# and C# by reference and there is one FSharp.Core (the one Deedle and Plotly.NET
/// use). Printing goes to the cell's stdout; F# Interactive's own echo (`val x: int = 1`) is dropped, as in .NET
/// Interactive; the value of a last expression is the cell's result.
/// </summary>
sealed class FSharpKernel : IVariableKernel, IDisposable
{
    readonly FsiEvaluationSession fsi;
    readonly StringWriter echo = new();

    public FSharpKernel(IEnumerable<string> references, string workingDirectory)
    {
        var arguments = new List<string> { "fsi.exe", "--noninteractive", "--nologo", "--gui-", "--optimize+", "--debug+", "--noframework" };
        // .NET's reference assemblies, as the F# compiler uses them: hosted in a process, F# Interactive's own framework
        // resolution finds too few (System.Collections.Generic.List "is not defined"), and the runtime's implementation
        // assemblies give two Int32s (List<int> "expected System.Int32 but here has type int").
        arguments.AddRange(FrameworkReferences().Select(path => $"-r:{path}"));
        // The same assemblies the C# cells see, so a ResearchKit type means the same type in both languages.
        var runtime = Path.GetFullPath(System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory());
        arguments.AddRange(references.Where(File.Exists).Select(Path.GetFullPath).Where(p => !p.StartsWith(runtime, StringComparison.Ordinal))
            .Distinct().Select(path => $"-r:{path}"));
        var config = FsiEvaluationSession.GetDefaultConfiguration();
        var previous = Directory.GetCurrentDirectory();
        Directory.SetCurrentDirectory(workingDirectory);   // #load and #r paths resolve from the notebook's folder
        try { fsi = FsiEvaluationSession.Create(config, [.. arguments], new StringReader(""), echo, echo, FSharpOption<bool>.Some(false), null); }
        finally { Directory.SetCurrentDirectory(previous); }
    }

    /// <summary>
    /// The reference assemblies of the .NET this process runs on, from the SDK's targeting pack
    /// (DOTNET_ROOT/packs/Microsoft.NETCore.App.Ref/10.0.x/ref/net10.0): the newest pack of the runtime's major and minor version.
    /// </summary>
    static IEnumerable<string> FrameworkReferences()
    {
        var runtime = new DirectoryInfo(System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory());
        var root = runtime.Parent?.Parent?.Parent?.FullName;   // DOTNET_ROOT/shared/Microsoft.NETCore.App/10.0.12/
        var version = Environment.Version;
        var packs = root is null ? null : new DirectoryInfo(Path.Combine(root, "packs", "Microsoft.NETCore.App.Ref"));
        var pack = packs is { Exists: true }
            ? packs.GetDirectories($"{version.Major}.{version.Minor}.*").OrderByDescending(d => Version.TryParse(d.Name, out var v) ? v : new Version())
                .Select(d => Path.Combine(d.FullName, "ref", $"net{version.Major}.{version.Minor}")).FirstOrDefault(Directory.Exists)
            : null;
        return pack is null
            ? throw new ResearchKitException($"F# cells need the .NET SDK's reference assemblies (Microsoft.NETCore.App.Ref {version.Major}.{version.Minor}); "
                + $"none under {packs?.FullName ?? "the .NET root"}: install the .NET {version.Major} SDK")
            : Directory.GetFiles(pack, "*.dll").Order();
    }

    public string Name => "fsharp";

    /// <summary>Runs F# code; the value of a last expression (null if none) or the cell's error.</summary>
    /// <remarks>
    /// F# code is not instrumented with interrupt checks as C# is, so a cancelled evaluation is aborted where it runs, as
    /// F# Interactive itself does on Ctrl+C under .NET (ControlledExecution): the session and its earlier values survive.
    /// </remarks>
    public (object? Value, bool HasValue, string? ErrorName, string? Error) Run(string code, string file, CancellationToken cancel)
    {
        (object? Value, bool HasValue, string? ErrorName, string? Error) result = default;
        try
        {
#pragma warning disable SYSLIB0046   // the abort F# Interactive uses for its own interrupts
            System.Runtime.ControlledExecution.Run(() => result = Evaluate(code, file, cancel), cancel);
#pragma warning restore SYSLIB0046
        }
        catch (OperationCanceledException)
        {
            return (null, false, nameof(OperationCanceledException), "the cell was interrupted");
        }
        return result;
    }

    (object? Value, bool HasValue, string? ErrorName, string? Error) Evaluate(string code, string file, CancellationToken cancel)
    {
        var (choice, diagnostics) = fsi.EvalInteractionNonThrowing(code, file, FSharpOption<CancellationToken>.Some(cancel));
        echo.GetStringBuilder().Clear();
        var errors = diagnostics.Where(d => d.Severity.IsError).Select(Diagnostic).ToArray();
        if (errors.Length > 0) return (null, false, "CompilationError", string.Join("\n", errors));
        if (choice is FSharpChoice<FSharpOption<FsiValue>, Exception>.Choice2Of2 { Item: var error })
        {
            while (error is System.Reflection.TargetInvocationException { InnerException: { } inner }) error = inner;
            return (null, false, error.GetType().Name, error.Message);
        }
        var value = ((FSharpChoice<FSharpOption<FsiValue>, Exception>.Choice1Of2)choice!).Item;
        // A unit result (`printfn …`, `let x = 1`) is no value to show.
        return FSharpOption<FsiValue>.get_IsSome(value) && value.Value.ReflectionType != typeof(Unit)
            ? (value.Value.ReflectionValue, true, null, null) : (null, false, null, null);
    }

    /// <summary>Adds assemblies (from `#r "nuget: …"`) to the session.</summary>
    public void Reference(IEnumerable<string> paths)
    {
        var directives = string.Join("\n", paths.Select(p => $"#r @\"{p.Replace("\"", "\"\"")}\""));
        if (directives.Length == 0) return;
        var (_, diagnostics) = fsi.EvalInteractionNonThrowing(directives, FSharpOption<CancellationToken>.None);
        if (diagnostics.FirstOrDefault(d => d.Severity.IsError) is { } error) throw new CellSourceException($"F# could not load a package's assembly: {error.Message}");
    }

    /// <summary>`cell 5, line 3: error FS0039: The value or constructor 'x' is not defined.`</summary>
    static string Diagnostic(FSharpDiagnostic d) => $"{Path.GetFileName(d.FileName)}, line {d.StartLine}: error FS{d.ErrorNumber:0000}: {d.Message}";

    public bool TryGet(string name, out object? value)
    {
        var bound = fsi.TryFindBoundValue(name);
        value = FSharpOption<FsiBoundValue>.get_IsSome(bound) ? bound!.Value.Value.ReflectionValue : null;
        return FSharpOption<FsiBoundValue>.get_IsSome(bound);
    }

    public void Set(string name, object? value)
    {
        if (!Microsoft.CodeAnalysis.CSharp.SyntaxFacts.IsValidIdentifier(name)) throw new CellSourceException($"'{name}' is not a name F# can bind");
        string? error = null;
        foreach (var type in SharedValues.TypesToTry(value))
        {
            var key = SharedValues.Put(value);
            (_, _, _, error) = Evaluate($"let {name} = (ResearchKit.Notebooks.SharedValues.Take \"{key}\" :?> {SharedValues.TypeName(type, "global.")})",
                "share", CancellationToken.None);
            if (error is null) return;
            SharedValues.Discard(key);
        }
        throw new CellSourceException($"F# could not bind '{name}': {error}");
    }

    public IEnumerable<(string Name, Type Type, object? Value)> Variables() =>
        fsi.GetBoundValues().Select(b => (b.Name, b.Value.ReflectionType, b.Value.ReflectionValue));

    public void Dispose()
    {
        (fsi as IDisposable)?.Dispose();
        echo.Dispose();
    }
}
