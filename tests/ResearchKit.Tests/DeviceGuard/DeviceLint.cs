using System.Collections.Immutable;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace ResearchKit.Tests.DeviceGuard;

/// <summary>One place in the source that breaks a device rule.</summary>
/// <param name="Member">The enclosing type and member, e.g. "Masking.SamplerFrom".</param>
public sealed record LintFinding(string Rule, string File, int Line, string Member, string Code)
{
    public override string ToString() => $"{File}:{Line} ({Member}) {Rule}: {Code}";
}

/// <summary>
/// The static half of the CPU-side device guard: compiles the kit's sources with Roslyn and finds, by symbol (not by
/// text), the patterns that work on the CPU and break on a second device:
/// <list type="bullet">
/// <item>"implicit device": a TorchSharp call that makes a tensor and takes a device, without one. It lands wherever
/// TorchSharp's default device points (the CPU), not beside the tensors it meets.</item>
/// <item>"generator on a device op": a TorchSharp <c>Generator</c> passed to a TorchSharp op. TorchSharp 0.107 makes CPU
/// generators only (THSGenerator_new ignores its device), and libtorch aborts the process when one reaches a CUDA op;
/// <c>Draws</c> is the one place that turns a step's generator into draws on any device.</item>
/// <item>"Module.load": TorchSharp's <c>Module.load</c> moves a CUDA module to the CPU and back, replacing every
/// parameter, so an optimizer built before it updates disposed tensors ("Tensor invalid -- empty handle").</item>
/// <item>"Module.zero_grad": libtorch's Module.zero_grad sets gradients to none, so backward makes new ones and the
/// optimizer's flat gradient buffers (<c>FlatOptimizer</c>) no longer see them; zero through the optimizer.</item>
/// <item>"a number as a dtype": C#'s literal 0 converts to any enum, so <c>t.sum(0)</c> binds to <c>sum(ScalarType)</c> and
/// sums every element as a byte instead of reducing dimension 0 (found once, in the VQ codebook's counts).</item>
/// <item>"host read": a value copied from a tensor to .NET (<c>item</c>, <c>cpu</c>, <c>data</c>, <c>bytes</c>,
/// <c>ToSingle</c>…). On CUDA each one waits for the device. Not an error in itself: the test keeps the list of members
/// allowed to read, with the reason, so a new read inside a training step cannot slip in unnoticed.</item>
/// </list>
/// </summary>
public static class DeviceLint
{
    public const string ImplicitDevice = "implicit device", GeneratorOnOp = "generator on a device op", ModuleLoad = "Module.load",
        ModuleZeroGrad = "Module.zero_grad", LiteralDtype = "a number as a dtype", HostRead = "host read";

    /// <summary>The one file allowed to hand a generator to TorchSharp ops.</summary>
    public const string DrawsFile = "src/ResearchKit/Draws.cs";

    static readonly string[] ImplicitUsings =
        ["System", "System.Collections.Generic", "System.IO", "System.Linq", "System.Net.Http", "System.Threading", "System.Threading.Tasks"];

    static readonly HashSet<string> ReadMethods = ["item", "cpu", "data", "ToSingle", "ToDouble", "ToInt32", "ToInt64", "ToBoolean", "ToScalar",
        "ToSingleArray", "ToDoubleArray", "numpy"];

    /// <summary>Finds every rule break in a project folder (e.g. "src/ResearchKit"), compiled against the kit's assemblies.</summary>
    public static List<LintFinding> Check(string repositoryRoot, string projectFolder) => Analyze(CompileProject(repositoryRoot, projectFolder));

    /// <summary>A project folder's sources compiled with Roslyn against the kit's assemblies, paths relative to the repository.</summary>
    public static CSharpCompilation CompileProject(string repositoryRoot, string projectFolder)
    {
        var files = Directory.EnumerateFiles(Path.Combine(repositoryRoot, projectFolder), "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"))
            .Order().ToList();
        var options = new CSharpParseOptions(LanguageVersion.Preview);
        var trees = files.Select(f => CSharpSyntaxTree.ParseText(File.ReadAllText(f), options, path: Path.GetRelativePath(repositoryRoot, f).Replace('\\', '/')))
            .Append(CSharpSyntaxTree.ParseText(string.Concat(ImplicitUsings.Select(u => $"global using global::{u};\n")), options))
            .ToList();
        var kind = projectFolder.EndsWith(".Cli") ? OutputKind.ConsoleApplication : OutputKind.DynamicallyLinkedLibrary;
        return Compile("lint-" + Path.GetFileName(projectFolder), trees, References(Path.GetFileName(projectFolder) + ".dll"), kind);
    }

    /// <summary>Finds rule breaks in one piece of C# that uses the kit (the lint's own tests).</summary>
    public static List<LintFinding> CheckSource(string code, string path = "snippet.cs")
    {
        var options = new CSharpParseOptions(LanguageVersion.Preview);
        var trees = new[] { CSharpSyntaxTree.ParseText(code, options, path),
            CSharpSyntaxTree.ParseText(string.Concat(ImplicitUsings.Select(u => $"global using global::{u};\n")), options) };
        return Analyze(Compile("lint-snippet", trees, References("ResearchKit.Tests.dll"), OutputKind.DynamicallyLinkedLibrary));
    }

    static CSharpCompilation Compile(string name, IEnumerable<SyntaxTree> trees, List<MetadataReference> references, OutputKind kind)
    {
        var compilation = CSharpCompilation.Create(name, trees, references,
            new CSharpCompilationOptions(kind, nullableContextOptions: NullableContextOptions.Enable, allowUnsafe: true));
        // CS8795: a partial method whose body a source generator writes ([GeneratedRegex]); generators do not run here, and
        // the missing body hides no symbol.
        var errors = compilation.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error && d.Id != "CS8795").Take(5).ToList();
        if (errors.Count > 0)
            throw new InvalidOperationException($"the device lint could not compile {name}, so it cannot see symbols: {string.Join("; ", errors)}");
        return compilation;
    }

    static List<LintFinding> Analyze(CSharpCompilation compilation)
    {
        var findings = new List<LintFinding>();
        foreach (var tree in compilation.SyntaxTrees.Where(t => t.FilePath.EndsWith(".cs")))
        {
            var model = compilation.GetSemanticModel(tree);
            foreach (var node in tree.GetRoot().DescendantNodes())
            {
                if (node is InvocationExpressionSyntax or ObjectCreationExpressionSyntax or ImplicitObjectCreationExpressionSyntax)
                    CheckCall(node, model, tree, findings);
                else if (node is MemberAccessExpressionSyntax { Name.Identifier.Text: "bytes" } access
                    && model.GetSymbolInfo(access).Symbol is IPropertySymbol { ContainingType.Name: "Tensor" } property && IsTorchSharp(property)
                    && !(access.Parent is AssignmentExpressionSyntax assignment && assignment.Left == access))
                    findings.Add(Finding(HostRead, node, tree));
            }
        }
        return findings;
    }

    static void CheckCall(SyntaxNode node, SemanticModel model, SyntaxTree tree, List<LintFinding> findings)
    {
        if (model.GetSymbolInfo(node).Symbol is not IMethodSymbol method || !IsTorchSharp(method)) return;
        var arguments = node switch
        {
            InvocationExpressionSyntax i => i.ArgumentList.Arguments,
            ObjectCreationExpressionSyntax o => o.ArgumentList?.Arguments ?? default,
            ImplicitObjectCreationExpressionSyntax o => o.ArgumentList.Arguments,
            _ => default,
        };
        var bound = BoundParameters(method, arguments, model);
        var name = method.ReducedFrom?.Name ?? method.Name;

        // A tensor made by a call that takes a device and was not given one — except while a module is built: parameters and
        // buffers are made on the build's device (the host, Compute.Build) and move with their module.
        if (method.Parameters.FirstOrDefault(p => p.Name == "device") is { } deviceParameter && !bound.Contains(deviceParameter.Name)
            && ReturnsTensor(method) && !name.EndsWith("_like") && method.MethodKind != MethodKind.Constructor && !InModuleConstruction(node, model))
            findings.Add(Finding(ImplicitDevice, node, tree));

        if (method.Parameters.Any(p => p.Name == "generator" && bound.Contains("generator")) && tree.FilePath != DrawsFile)
            findings.Add(Finding(GeneratorOnOp, node, tree));

        // C#'s literal 0 converts to any enum: tensor.sum(0) binds to sum(ScalarType type) and sums everything as bytes.
        var parameters = method.ReducedFrom is { } r ? r.Parameters.Skip(1).ToImmutableArray() : method.Parameters;
        for (int i = 0; i < arguments.Count; i++)
        {
            var parameter = arguments[i].NameColon is { } named ? parameters.FirstOrDefault(p => p.Name == named.Name.Identifier.Text)
                : i < parameters.Length ? parameters[i] : null;
            var type = parameter?.Type is INamedTypeSymbol { Name: "Nullable" } nullable ? nullable.TypeArguments[0] : parameter?.Type;
            if (type?.Name == "ScalarType" && arguments[i].Expression is LiteralExpressionSyntax) findings.Add(Finding(LiteralDtype, node, tree));
        }

        if (name is "load" or "zero_grad" && method.ContainingType.Name == "Module") findings.Add(Finding(name == "load" ? ModuleLoad : ModuleZeroGrad, node, tree));

        if (ReadMethods.Contains(name) && (method.ContainingType.Name == "Tensor" || method.ReducedFrom?.Parameters.FirstOrDefault()?.Type.Name == "Tensor"))
            findings.Add(Finding(HostRead, node, tree));
        if (name == "to" && method.ContainingType.Name == "Tensor" && arguments.Any(a => a.Expression.ToString() is "CPU" or "torch.CPU" or "DeviceType.CPU"))
            findings.Add(Finding(HostRead, node, tree));
    }

    /// <summary>Names of the parameters the call's arguments bind to (positional and named).</summary>
    static HashSet<string> BoundParameters(IMethodSymbol method, SeparatedSyntaxList<ArgumentSyntax> arguments, SemanticModel model)
    {
        var names = new HashSet<string>();
        var parameters = method.ReducedFrom is { } reduced ? reduced.Parameters.Skip(1).ToImmutableArray() : method.Parameters;
        for (int i = 0; i < arguments.Count; i++)
        {
            var argument = arguments[i];
            var name = argument.NameColon?.Name.Identifier.Text ?? (i < parameters.Length ? parameters[i].Name : null);
            // An explicit null is no device (or generator) at all.
            if (name is not null && !argument.Expression.IsKind(SyntaxKind.NullLiteralExpression)) names.Add(name);
        }
        return names;
    }

    /// <summary>In a constructor or field initialiser of a class that derives from TorchSharp's Module.</summary>
    static bool InModuleConstruction(SyntaxNode node, SemanticModel model)
    {
        var member = node.Ancestors().FirstOrDefault(a => a is ConstructorDeclarationSyntax or FieldDeclarationSyntax or MethodDeclarationSyntax
            or PropertyDeclarationSyntax or LocalFunctionStatementSyntax);
        if (member is not (ConstructorDeclarationSyntax or FieldDeclarationSyntax)) return false;
        var type = model.GetDeclaredSymbol(member.Ancestors().OfType<TypeDeclarationSyntax>().First()) as INamedTypeSymbol;
        for (var t = type; t is not null; t = t.BaseType)
            if (t.Name == "Module" && IsTorchSharp(t)) return true;
        return false;
    }

    static bool ReturnsTensor(IMethodSymbol method) => method.ReturnType.Name is "Tensor" or "Parameter";

    static bool IsTorchSharp(ISymbol symbol) => symbol.ContainingAssembly?.Name == "TorchSharp";

    static LintFinding Finding(string rule, SyntaxNode node, SyntaxTree tree)
    {
        var member = node.Ancestors().FirstOrDefault(a => a is BaseMethodDeclarationSyntax or PropertyDeclarationSyntax or IndexerDeclarationSyntax
            or FieldDeclarationSyntax or ConstructorDeclarationSyntax or LocalFunctionStatementSyntax);
        var type = node.Ancestors().OfType<BaseTypeDeclarationSyntax>().FirstOrDefault()?.Identifier.Text ?? "?";
        string memberName = member switch
        {
            LocalFunctionStatementSyntax local => (local.Ancestors().OfType<MethodDeclarationSyntax>().FirstOrDefault()?.Identifier.Text ?? "?"),
            MethodDeclarationSyntax m => m.Identifier.Text,
            ConstructorDeclarationSyntax => ".ctor",
            PropertyDeclarationSyntax p => p.Identifier.Text,
            FieldDeclarationSyntax f => f.Declaration.Variables.First().Identifier.Text,
            _ => "?",
        };
        var code = node.ToString().ReplaceLineEndings(" ");
        return new LintFinding(rule, tree.FilePath, tree.GetLineSpan(node.Span).StartLinePosition.Line + 1, $"{type}.{memberName}",
            code.Length > 100 ? code[..100] + "…" : code);
    }

    /// <summary>The framework plus every assembly beside the tests (TorchSharp, Plotly.NET, Deedle, the kit's own dlls but the one checked).</summary>
    static List<MetadataReference> References(string own)
    {
        var framework = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator);
        var beside = Directory.EnumerateFiles(AppContext.BaseDirectory, "*.dll");
        return framework.Concat(beside).Where(f => Path.GetFileName(f) != own && Path.GetFileName(f) != "ResearchKit.Tests.dll")
            .DistinctBy(Path.GetFileName).Where(IsManaged).Select(f => (MetadataReference)MetadataReference.CreateFromFile(f)).ToList();
    }

    static bool IsManaged(string path)
    {
        try { System.Reflection.AssemblyName.GetAssemblyName(path); return true; }
        catch (Exception) { return false; }
    }
}
