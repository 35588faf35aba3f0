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
    static SyntaxNode Root(string source) => NotebookSession.ParseCell(source).GetRoot();

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

    /// <summary>
    /// Names the cell reads from outside itself: identifiers, minus member names after a dot (`x.Count`) and minus names
    /// the cell declares anywhere (loop variables, lambda parameters, locals), so `for (int i …)` does not "use" a lost `i`.
    /// </summary>
    public static IReadOnlySet<string> Used(string source)
    {
        var root = Root(source);
        var local = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in root.DescendantNodes())
            switch (node)
            {
                case VariableDeclaratorSyntax v: local.Add(v.Identifier.Text); break;
                case ParameterSyntax p: local.Add(p.Identifier.Text); break;
                case ForEachStatementSyntax f: local.Add(f.Identifier.Text); break;
                case SingleVariableDesignationSyntax d: local.Add(d.Identifier.Text); break;
                case CatchDeclarationSyntax c: local.Add(c.Identifier.Text); break;
            }
        return root.DescendantNodes().OfType<IdentifierNameSyntax>()
            .Where(i => !i.IsVar && !(i.Parent is MemberAccessExpressionSyntax access && access.Name == i))
            .Select(i => i.Identifier.Text)
            .Where(name => !local.Contains(name))
            .ToHashSet(StringComparer.Ordinal);
    }
}
