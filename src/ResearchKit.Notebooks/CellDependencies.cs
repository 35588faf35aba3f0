using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace ResearchKit.Notebooks;

/// <summary>
/// Which names a cell declares for later cells (top-level variables, methods, types, using aliases) and which names it
/// uses, read from its syntax. After a session is lost, the runner uses this to say which later cells need state that
/// no longer exists instead of letting them fail with compile errors.
/// </summary>
public static class CellDependencies
{
    static SyntaxNode Root(string source) =>
        CSharpSyntaxTree.ParseText(source, new CSharpParseOptions(kind: SourceCodeKind.Script)).GetRoot();

    public static IReadOnlySet<string> Declared(string source)
    {
        var root = Root(source);
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in root.ChildNodes())
            switch (node)
            {
                case GlobalStatementSyntax { Statement: LocalDeclarationStatementSyntax local }:
                    names.UnionWith(local.Declaration.Variables.Select(v => v.Identifier.Text));
                    break;
                case GlobalStatementSyntax { Statement: LocalFunctionStatementSyntax function }:
                    names.Add(function.Identifier.Text);
                    break;
                case GlobalStatementSyntax { Statement: ExpressionStatementSyntax expression }:
                    // `var (a, b) = …` and `x is T y` at top level also declare script variables.
                    names.UnionWith(expression.DescendantNodes().OfType<SingleVariableDesignationSyntax>().Select(d => d.Identifier.Text));
                    break;
                case FieldDeclarationSyntax field:
                    names.UnionWith(field.Declaration.Variables.Select(v => v.Identifier.Text));
                    break;
                case MethodDeclarationSyntax method:
                    names.Add(method.Identifier.Text);
                    break;
                case PropertyDeclarationSyntax property:
                    names.Add(property.Identifier.Text);
                    break;
                case BaseTypeDeclarationSyntax type:
                    names.Add(type.Identifier.Text);
                    break;
                case DelegateDeclarationSyntax type:
                    names.Add(type.Identifier.Text);
                    break;
            }
        foreach (var alias in root.DescendantNodes().OfType<UsingDirectiveSyntax>().Where(u => u.Alias is not null))
            names.Add(alias.Alias!.Name.Identifier.Text);
        return names;
    }

    public static IReadOnlySet<string> Used(string source) =>
        Root(source).DescendantNodes().OfType<IdentifierNameSyntax>().Select(i => i.Identifier.Text).ToHashSet(StringComparer.Ordinal);
}
