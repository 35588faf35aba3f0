using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace ResearchKit.Notebooks;

/// <summary>
/// A notebook as a .NET 10 file-based app (`dotnet run NB.cs`), Microsoft's advice to C# notebook users after .NET
/// Interactive: <c>#:package ResearchKit</c> and the cells' own <c>#r "nuget: …"</c> as package directives, the engine's
/// default usings, the C# cells in order with markdown as comments, and <see cref="ResearchKit.Reporting.ConsoleNotebook"/>
/// for what a cell would show. What a program cannot do (F# cells, values shared between kernels, assembly references)
/// is refused, naming the cell: an export that ran differently from the notebook would be worse than none.
/// </summary>
public static partial class NotebookExport
{
    [GeneratedRegex(@"^\s*#(r|load|i)\s")]
    private static partial Regex OtherDirective();

    /// <summary>The usings the engine gives every cell (NotebookSession's), less its own namespace, which is not in the package.</summary>
    static readonly string[] Usings =
    [
        "System", "System.IO", "System.Linq", "System.Collections.Generic", "System.Threading", "System.Threading.Tasks",
        "TorchSharp", "Deedle", "Plotly.NET", "Plotly.NET.CSharp", "ResearchKit", "ResearchKit.Data", "ResearchKit.Models",
        "ResearchKit.Tokenizers", "ResearchKit.Training", "ResearchKit.Evaluation", "ResearchKit.Methods", "ResearchKit.Runs",
        "ResearchKit.Reporting",
    ];

    /// <summary>The program for the notebook at <paramref name="notebookPath"/>, to be written at <paramref name="appPath"/>.</summary>
    /// <param name="parameters">-p values, injected after the parameters cell as `notebook run` does (none: the defaults).</param>
    public static string ToFileBasedApp(string notebookPath, string appPath, IReadOnlyDictionary<string, string>? parameters = null)
    {
        var notebook = NotebookDocument.Load(notebookPath);
        if (parameters is { Count: > 0 }) NotebookRunner.InjectParameters(notebook, parameters);
        var name = Path.GetFileName(notebookPath);
        var version = typeof(Compute).Assembly.GetName().Version is { } v ? $"{v.Major}.{v.Minor}.{v.Build}" : "1.0.0";
        var packages = new List<(string Name, string Version)> { ("ResearchKit", version) };
        var usings = new List<string>(Usings.Select(u => $"using {u};"));
        var statements = new StringBuilder();
        var types = new StringBuilder();
        var extensions = new StringBuilder();

        var cells = notebook.CellObjects.ToList();
        for (int index = 0; index < cells.Count; index++)
        {
            var cell = cells[index];
            string where = $"{name}: cell {index + 1}";
            var source = NotebookDocument.Source(cell);
            switch (NotebookDocument.CellType(cell))
            {
                case "markdown":
                    statements.Append(Comment(source)).AppendLine();
                    continue;
                case "code" when !string.IsNullOrWhiteSpace(source):
                    break;
                default:
                    continue;   // raw cells, empty code cells
            }
            var tags = NotebookDocument.Tags(cell);
            var role = tags.Contains("parameters") ? " (parameters: edit them here)"
                : tags.Contains("injected-parameters") ? " (parameters given to the export)" : "";
            statements.AppendLine($"// ── cell {index + 1}{role}");
            PolyglotCell parsed;
            try { parsed = PolyglotCell.Parse(source, NotebookRunner.Language(cell)); }
            catch (CellSourceException e) { throw new ResearchKitException($"{where}: {e.Message}"); }
            foreach (var part in parsed.Parts)
            {
                switch (part)
                {
                    case MagicPart magic:
                        throw new ResearchKitException($"{where}, line {magic.Line}: #!{magic.Name} shares values between kernels; a C# program has one, so it cannot be exported");
                    case CodePart { Language: "markdown" or "html" or "mermaid" } shown:
                        statements.Append(Comment(shown.Code.Trim('\n'))).AppendLine();
                        break;
                    case CodePart { Language: "csharp" } code:
                        AppendCSharp(code.Code, where, packages, usings, statements, types, extensions);
                        break;
                    case CodePart other:
                        throw new ResearchKitException($"{where}, line {other.Line}: a {other.Language} part; a C# file-based app can hold only C# (and markdown as comments)");
                }
            }
            statements.AppendLine();
        }

        var app = new StringBuilder();
        app.AppendLine($"// {name}, exported by `researchkit notebook export --to cs`: run it with `dotnet run {Path.GetFileName(appPath)}`.");
        app.AppendLine("// Needs the ResearchKit package on a NuGet source (README, \"Other notebook hosts\").");
        foreach (var (package, packageVersion) in packages.DistinctBy(p => p.Name, StringComparer.OrdinalIgnoreCase))
            app.AppendLine($"#:package {package}@{packageVersion}");
        // Inside a repository that pins versions centrally (ours does), directives carry their own.
        app.AppendLine("#:property ManagePackageVersionsCentrally=false");
        // File-based apps default to native AOT, which turns off the reflection-based JSON the kit's run folders use.
        app.AppendLine("#:property PublishAot=false");
        app.AppendLine();
        foreach (var line in usings.Distinct()) app.AppendLine(line);
        app.AppendLine("using Frame = Deedle.Frame;");
        app.AppendLine("using Chart = Plotly.NET.CSharp.Chart;");
        app.AppendLine("using static ResearchKit.Reporting.ConsoleNotebook;");
        app.AppendLine();
        // The notebook's relative paths (data, results) start from its folder, as in the engine.
        var appFolder = Path.GetDirectoryName(Path.GetFullPath(appPath))!;
        var notebookFolder = Path.GetRelativePath(appFolder, Path.GetDirectoryName(Path.GetFullPath(notebookPath))!);
        app.AppendLine("// The notebook's relative paths start from its folder, as in a notebook engine.");
        app.AppendLine($"Directory.SetCurrentDirectory(Path.GetFullPath(Path.Combine((string)AppContext.GetData(\"EntryPointFileDirectoryPath\")!, {SymbolDisplay.FormatLiteral(notebookFolder, true)})));");
        app.AppendLine();
        app.Append(statements);
        if (types.Length > 0) app.AppendLine("// Types the cells declare (a program declares them after its statements).").Append(types);
        if (extensions.Length > 0)
            app.AppendLine("static class NotebookExtensions").AppendLine("{").Append(extensions).AppendLine("}");
        return app.ToString();
    }

    /// <summary>Writes the program atomically; the default path is the notebook's, with .cs.</summary>
    public static string Export(string notebookPath, string? appPath = null, IReadOnlyDictionary<string, string>? parameters = null)
    {
        appPath ??= Path.ChangeExtension(notebookPath, ".cs");
        if (Path.GetFullPath(appPath) == Path.GetFullPath(notebookPath))
            throw new ResearchKitException($"-o {appPath}: that is the notebook being exported; write the program elsewhere");
        var text = ToFileBasedApp(notebookPath, appPath, parameters);
        AtomicFile.Write(appPath, s => s.Write(Encoding.UTF8.GetBytes(text)));
        return appPath;
    }

    static void AppendCSharp(string code, string where, List<(string, string)> packages, List<string> usings,
        StringBuilder statements, StringBuilder types, StringBuilder extensions)
    {
        var lines = code.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            if (PackageReferences.ReferenceLine().Match(lines[i]) is { Success: true } reference)
            {
                var version = reference.Groups[2].Value;
                packages.Add((reference.Groups[1].Value, version.Length > 0 ? version : "*"));
                lines[i] = "";
            }
            else if (PackageReferences.SourceLine().Match(lines[i]) is { Success: true } source)
                lines[i] = $"// package source {source.Groups[1].Value}: add it with `dotnet nuget add source` (the notebook's #i)";
            else if (OtherDirective().IsMatch(lines[i]))
                throw new ResearchKitException($"{where}, line {i + 1}: '{lines[i].Trim()}': a file-based app takes packages only (#r \"nuget: …\")");
        }
        // Parsed as the engine compiles it: a script, where a trailing expression needs no semicolon.
        var tree = CSharpSyntaxTree.ParseText(string.Join('\n', lines),
            new CSharpParseOptions(LanguageVersion.Latest, kind: SourceCodeKind.Script));
        var root = (CompilationUnitSyntax)tree.GetRoot();
        usings.AddRange(root.Usings.Select(u => u.ToString()));
        var last = root.Members.OfType<GlobalStatementSyntax>().LastOrDefault();
        foreach (var member in root.Members)
        {
            switch (member)
            {
                case GlobalStatementSyntax { Statement: ExpressionStatementSyntax { SemicolonToken.IsMissing: true } shown } statement
                    when statement == last:
                    // A cell's last expression is what the cell shows.
                    statements.Append(shown.GetLeadingTrivia().ToFullString())
                        .Append($"display({shown.Expression.WithoutTrivia()});").AppendLine();
                    break;
                case GlobalStatementSyntax statement:
                    statements.Append(statement.ToFullString().TrimEnd()).AppendLine();
                    break;
                case FieldDeclarationSyntax field:   // a script's variable: a local of the program
                    statements.Append(field.WithModifiers(default).WithLeadingTrivia(field.GetLeadingTrivia()).ToFullString().TrimEnd())
                        .AppendLine();
                    break;
                case MethodDeclarationSyntax method when method.ParameterList.Parameters.FirstOrDefault()?.Modifiers.Any(SyntaxKind.ThisKeyword) == true:
                    extensions.Append(method.WithModifiers(Modifiers(method.Modifiers, "public", "static")).WithLeadingTrivia(method.GetLeadingTrivia()).ToFullString().TrimEnd()).AppendLine();
                    break;
                case MethodDeclarationSyntax method:   // a script's method: a local function of the program
                    statements.Append(method.WithModifiers(Modifiers(method.Modifiers)).WithLeadingTrivia(method.GetLeadingTrivia()).ToFullString().TrimEnd()).AppendLine();
                    break;
                case BaseTypeDeclarationSyntax or DelegateDeclarationSyntax:
                    types.Append(member.ToFullString().TrimEnd()).AppendLine().AppendLine();
                    break;
                default:
                    var line = member.GetLocation().GetLineSpan().StartLinePosition.Line + 1;
                    throw new ResearchKitException($"{where}, line {line}: a top-level {member.Kind()} has no place in a program; declare it as a variable or inside a type");
            }
        }
        if (tree.GetDiagnostics().FirstOrDefault(d => d.Severity == DiagnosticSeverity.Error) is { } error)
            throw new ResearchKitException($"{where}, line {error.Location.GetLineSpan().StartLinePosition.Line + 1}: {error.GetMessage()}");
    }

    /// <summary>A script method's modifiers for a program: access modifiers dropped (local functions have none), others kept.</summary>
    static SyntaxTokenList Modifiers(SyntaxTokenList modifiers, params string[] required)
    {
        var kept = modifiers.Where(m => !m.IsKind(SyntaxKind.PublicKeyword) && !m.IsKind(SyntaxKind.PrivateKeyword)
            && !m.IsKind(SyntaxKind.InternalKeyword) && !m.IsKind(SyntaxKind.ProtectedKeyword)).Select(m => m.Text).ToList();
        var text = required.Concat(kept.Where(k => !required.Contains(k)));
        return SyntaxFactory.TokenList(text.Select(t => SyntaxFactory.ParseToken(t + " ")));
    }

    static string Comment(string text) =>
        string.Join('\n', text.TrimEnd().Replace("\r\n", "\n").Split('\n').Select(l => l.Length == 0 ? "//" : $"// {l}"));
}
