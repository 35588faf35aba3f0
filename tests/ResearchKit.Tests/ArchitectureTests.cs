using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using ResearchKit.Tests.DeviceGuard;

namespace ResearchKit.Tests;

/// <summary>
/// One contract, many methods: generic code never names a method's types. A method lives in its files under
/// src/ResearchKit/Models (all but the shared backbones) and is registered in <c>MethodRegistry</c>; the trainer, evaluation, runs, reporting, data, tokenizers, layers, the
/// notebook engine and every command reach it through the contract (options, figures, studies). Found by symbol.
/// </summary>
public class ArchitectureTests
{
    static readonly string Root = TestData.RepositoryRoot();
    static readonly Lazy<CSharpCompilation> Library = new(() => DeviceLint.CompileProject(Root, "src/ResearchKit"));

    /// <summary>The one generic file allowed to name methods: the registry's list.</summary>
    const string Registry = "src/ResearchKit/Methods/MethodRegistry.cs";

    /// <summary>
    /// The method files: every file under src/ResearchKit/Models but the shared backbones (files that declare a Backbone
    /// and no method: Backbone.cs, VisionTransformer.cs, ConvNet.cs), and every type they declare.
    /// </summary>
    static (HashSet<string> Files, HashSet<string> Types) MethodFiles(CSharpCompilation library)
    {
        var files = new HashSet<string>();
        var types = new HashSet<string>();
        foreach (var tree in library.SyntaxTrees.Where(t => t.FilePath.StartsWith("src/ResearchKit/Models/") && t.FilePath.EndsWith(".cs")))
        {
            var model = library.GetSemanticModel(tree);
            var declared = tree.GetRoot().DescendantNodes().OfType<BaseTypeDeclarationSyntax>()
                .Select(d => model.GetDeclaredSymbol(d)).OfType<INamedTypeSymbol>().ToList();
            bool sharedBackbone = declared.Any(t => t.Name == "Backbone" || Derives(t, "Backbone")) && !declared.Any(IsMethodType);
            if (sharedBackbone) continue;
            files.Add(tree.FilePath);
            foreach (var type in declared) types.Add(type.ToDisplayString());
        }
        return (files, types);
    }

    static bool Derives(INamedTypeSymbol type, string baseName)
    {
        for (var t = type.BaseType; t is not null; t = t.BaseType)
            if (t.Name == baseName) return true;
        return false;
    }

    static bool IsMethodType(INamedTypeSymbol type) => Derives(type, "MethodConfig") || type.AllInterfaces.Any(i => i.Name == "IPretrainModel");

    /// <summary>Every name in <paramref name="code"/>'s generic files that resolves to a method type (or a member of one).</summary>
    static List<string> Violations(CSharpCompilation library, CSharpCompilation code)
    {
        var (files, types) = MethodFiles(library);
        var found = new List<string>();
        foreach (var tree in code.SyntaxTrees.Where(t => t.FilePath.EndsWith(".cs") && !files.Contains(t.FilePath) && t.FilePath != Registry))
        {
            var model = code.GetSemanticModel(tree);
            foreach (var name in tree.GetRoot().DescendantNodes().OfType<SimpleNameSyntax>())
            {
                var symbol = model.GetSymbolInfo(name).Symbol;
                var type = symbol as INamedTypeSymbol ?? symbol?.ContainingType;
                if (type is not null && types.Contains(type.OriginalDefinition.ToDisplayString()))
                    found.Add($"{tree.FilePath}:{tree.GetLineSpan(name.Span).StartLinePosition.Line + 1} names {type.Name}");
            }
        }
        return found.Distinct().ToList();
    }

    [Theory]
    [InlineData("src/ResearchKit")]
    [InlineData("src/ResearchKit.Cli")]
    [InlineData("src/ResearchKit.Notebooks")]
    public void Generic_code_names_no_method_type(string projectFolder)
    {
        var library = Library.Value;
        Assert.True(MethodFiles(library).Files.Count >= 4, "the test must see the method files (mae, beit, igpt, rotnet at least)");
        var code = projectFolder == "src/ResearchKit" ? library : DeviceLint.CompileProject(Root, projectFolder);
        var found = Violations(library, code);
        Assert.True(found.Count == 0, $"generic code names method types (reach them through MethodInfo: options, figures, studies):\n{string.Join("\n", found)}");
    }

    [Fact]
    public void A_generic_file_that_names_a_method_type_is_found()
    {
        var library = Library.Value;
        var options = (CSharpParseOptions)library.SyntaxTrees[0].Options;
        var probe = CSharpSyntaxTree.ParseText(
            "namespace ResearchKit.Runs; static class Probe { static object Make() => ResearchKit.Models.RotNetConfig.Tiny(); }", options, "src/ResearchKit/Runs/Probe.cs");
        var found = Violations(library, library.AddSyntaxTrees(probe));
        Assert.Contains("src/ResearchKit/Runs/Probe.cs:1 names RotNetConfig", found);
    }
}
