using System.Text.Json.Nodes;
using System.Xml.Linq;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using Microsoft.CodeAnalysis.Scripting;

namespace ResearchKit.Notebooks;

/// <summary>
/// Completion and inspection for a kernel, from Roslyn's semantic model of the code compiled as the session's next
/// submission: names in scope (including variables and methods of earlier cells), members after a dot (of a variable's
/// type, or a type's statics), and a symbol's signature with its XML summary. Replies are Jupyter's message contents.
/// </summary>
public static class CodeAssistance
{
    public static JsonObject Complete(Script<object> submission, string code, int cursor)
    {
        cursor = Math.Clamp(cursor, 0, code.Length);
        int start = cursor;
        while (start > 0 && (char.IsLetterOrDigit(code[start - 1]) || code[start - 1] == '_')) start--;
        var prefix = code[start..cursor];
        var matches = new SortedSet<string>(StringComparer.Ordinal);
        var (model, tree) = Model(submission);
        IEnumerable<ISymbol> symbols;
        if (start > 0 && code[start - 1] == '.' && tree.GetRoot().FindToken(start - 1).Parent is MemberAccessExpressionSyntax access)
        {
            var target = model.GetSymbolInfo(access.Expression).Symbol;
            symbols = target is INamespaceOrTypeSymbol container && model.GetTypeInfo(access.Expression).Type is null or IErrorTypeSymbol
                ? model.LookupSymbols(start, container).Where(s => s.IsStatic || s is INamespaceOrTypeSymbol)
                : model.GetTypeInfo(access.Expression).Type is { } type and not IErrorTypeSymbol
                    ? model.LookupSymbols(start, type, includeReducedExtensionMethods: true).Where(s => !s.IsStatic || s is IMethodSymbol { MethodKind: MethodKind.ReducedExtension })
                    : [];
        }
        else symbols = model.LookupSymbols(start);
        foreach (var symbol in symbols)
            if (symbol.CanBeReferencedByName && symbol.Name.StartsWith(prefix, StringComparison.Ordinal)) matches.Add(symbol.Name);
        return new JsonObject
        {
            ["status"] = "ok", ["matches"] = new JsonArray(matches.Select(m => (JsonNode)m!).ToArray()),
            ["cursor_start"] = start, ["cursor_end"] = cursor, ["metadata"] = new JsonObject(),
        };
    }

    public static JsonObject Inspect(Script<object> submission, string code, int cursor)
    {
        var (model, tree) = Model(submission);
        cursor = Math.Clamp(cursor, 0, code.Length);
        var token = tree.GetRoot().FindToken(Math.Max(0, cursor > 0 && (cursor == code.Length || !char.IsLetterOrDigit(code[cursor])) ? cursor - 1 : cursor));
        var node = token.Parent;
        ISymbol? symbol = null;
        for (; node is not null && symbol is null; node = node.Parent)
            symbol = model.GetSymbolInfo(node).Symbol ?? model.GetSymbolInfo(node).CandidateSymbols.FirstOrDefault() ?? model.GetDeclaredSymbol(node);
        if (symbol is null) return new JsonObject { ["status"] = "ok", ["found"] = false, ["data"] = new JsonObject(), ["metadata"] = new JsonObject() };
        var signature = symbol.ToDisplayString(SymbolDisplayFormat.CSharpErrorMessageFormat);
        var summary = Summary(symbol);
        var text = summary.Length > 0 ? $"{signature}\n\n{summary}" : signature;
        return new JsonObject
        {
            ["status"] = "ok", ["found"] = true, ["metadata"] = new JsonObject(),
            ["data"] = new JsonObject { ["text/plain"] = text, ["text/markdown"] = $"```csharp\n{signature}\n```\n\n{summary}" },
        };
    }

    static (SemanticModel Model, SyntaxTree Tree) Model(Script<object> submission)
    {
        var compilation = submission.GetCompilation();
        var tree = compilation.SyntaxTrees.Last();
        return (compilation.GetSemanticModel(tree), tree);
    }

    /// <summary>The &lt;summary&gt; of a symbol's XML documentation (from the assembly's .xml file), as plain text.</summary>
    static string Summary(ISymbol symbol)
    {
        var xml = symbol.GetDocumentationCommentXml(expandIncludes: false);
        if (string.IsNullOrWhiteSpace(xml)) xml = XmlDocumentation.For(symbol);
        if (string.IsNullOrWhiteSpace(xml)) return "";
        try
        {
            var summary = XElement.Parse(xml).Element("summary");
            if (summary is null) return "";
            foreach (var reference in summary.Descendants().Where(e => e.Name == "see" || e.Name == "paramref").ToList())
                reference.ReplaceWith((reference.Attribute("cref") ?? reference.Attribute("name"))?.Value.Split(':').Last() ?? "");
            return string.Join(" ", summary.Value.Split((char[])[' ', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries));
        }
        catch (System.Xml.XmlException) { return ""; }
    }
}

/// <summary>
/// Doc comments from the XML files compilers write beside assemblies (ResearchKit.xml, TorchSharp.xml, …): scripting's
/// references carry none, so a symbol's comment is looked up by its documentation id in its assembly's file.
/// </summary>
static class XmlDocumentation
{
    static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Dictionary<string, string>> files = new();

    public static string? For(ISymbol symbol)
    {
        var id = symbol.GetDocumentationCommentId();
        var assembly = symbol.ContainingAssembly?.Name;
        if (id is null || assembly is null) return null;
        var members = files.GetOrAdd(assembly, name =>
        {
            var path = Path.Combine(AppContext.BaseDirectory, name + ".xml");
            try
            {
                return File.Exists(path)
                    ? XDocument.Load(path).Descendants("member").Where(m => m.Attribute("name") is not null)
                        .GroupBy(m => m.Attribute("name")!.Value).ToDictionary(g => g.Key, g => g.First().ToString())
                    : [];
            }
            catch (System.Xml.XmlException) { return []; }
        });
        return members.GetValueOrDefault(id);
    }
}
