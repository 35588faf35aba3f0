using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace ResearchKit.Notebooks;

/// <summary>A parameter declared in the cell tagged "parameters": its name, C# type and default source.</summary>
public sealed record NotebookParameter(string Name, string Type, string DefaultSource);

/// <summary>
/// Papermill's convention for C#: the cell tagged `parameters` declares defaults (`bool Smoke = false;`);
/// values given on the command line are converted to each default's type and assigned in a new cell
/// tagged `injected-parameters` right after it. Unknown names and unconvertible values fail before any cell runs.
/// </summary>
public static class Parameters
{
    static readonly string[] Supported = ["bool", "int", "long", "double", "float", "string", "decimal", "int[]", "long[]", "double[]", "string[]"];

    /// <summary>The variables a parameters cell declares (top-level declarations with an initialiser).</summary>
    public static IReadOnlyList<NotebookParameter> Declared(string source)
    {
        var tree = NotebookSession.ParseCell(NotebookSession.Preprocess(source));
        var result = new List<NotebookParameter>();
        foreach (var declaration in tree.GetRoot().DescendantNodes().OfType<VariableDeclarationSyntax>()
                     .Where(d => d.Parent is FieldDeclarationSyntax or LocalDeclarationStatementSyntax))
            foreach (var variable in declaration.Variables.Where(v => v.Initializer is not null))
            {
                var type = declaration.Type.IsVar ? InferType(variable.Initializer!.Value) : declaration.Type.ToString();
                result.Add(new NotebookParameter(variable.Identifier.Text, type, variable.Initializer!.Value.ToString()));
            }
        return result;
    }

    static string InferType(ExpressionSyntax value) => value switch
    {
        LiteralExpressionSyntax l when l.IsKind(SyntaxKind.TrueLiteralExpression) || l.IsKind(SyntaxKind.FalseLiteralExpression) => "bool",
        LiteralExpressionSyntax l when l.IsKind(SyntaxKind.StringLiteralExpression) => "string",
        LiteralExpressionSyntax l when l.IsKind(SyntaxKind.NumericLiteralExpression) => l.Token.Value switch
        {
            int => "int", long => "long", float => "float", decimal => "decimal", _ => "double",
        },
        PrefixUnaryExpressionSyntax { Operand: LiteralExpressionSyntax inner } => InferType(inner),
        _ => "unknown",
    };

    /// <summary>C# assignments setting the given values (name → text), checked against the declarations.</summary>
    public static string Injection(IReadOnlyList<NotebookParameter> declared, IReadOnlyDictionary<string, string> values)
    {
        var lines = new List<string> { "// Parameters injected with -p (`researchkit notebook run` or `notebook export`), as papermill does" };
        foreach (var (name, text) in values)
        {
            var parameter = declared.FirstOrDefault(p => p.Name == name)
                ?? throw new ResearchKitException($"parameter '{name}' is not declared in the notebook's parameters cell; declared: {string.Join(", ", declared.Select(p => $"{p.Type} {p.Name}"))}");
            if (!Supported.Contains(parameter.Type))
                throw new ResearchKitException($"parameter '{name}' has type {parameter.Type}; -p supports {string.Join(", ", Supported)}");
            lines.Add($"{name} = {Literal(parameter.Type, text, name)};");
        }
        return string.Join("\n", lines) + "\n";
    }

    static string Literal(string type, string text, string name)
    {
        if (type.EndsWith("[]", StringComparison.Ordinal))
        {
            var element = type[..^2];
            var items = ListItems(text.Trim()).Select(t => Literal(element, t, name));
            return $"new {type} {{ {string.Join(", ", items)} }}";
        }
        var inv = CultureInfo.InvariantCulture;
        try
        {
            return type switch
            {
                "bool" => bool.Parse(text) ? "true" : "false",
                "int" => int.Parse(text, inv).ToString(inv),
                "long" => long.Parse(text, inv).ToString(inv) + "L",
                "double" => NonFinite(text, "double") ?? ToDouble(double.Parse(text, NumberStyles.Float, inv)),
                "float" => NonFinite(text, "float") ?? float.Parse(text, NumberStyles.Float, inv).ToString("R", inv) + "f",
                "decimal" => decimal.Parse(text, NumberStyles.Float, inv).ToString(inv) + "m",
                "string" => SymbolDisplay.FormatLiteral(text, quote: true),
                _ => throw new FormatException(),
            };
        }
        catch (Exception e) when (e is FormatException or OverflowException)
        {
            throw new ResearchKitException($"parameter '{name}': '{text}' is not a valid {type}");
        }
    }

    /// <summary>`1,2`, or papermill's and JSON's `[1, 2]` / `["a", "b, c"]`: the items' texts.</summary>
    static IEnumerable<string> ListItems(string text)
    {
        if (text.StartsWith('[') && text.EndsWith(']'))
        {
            try
            {
                if (JsonNode.Parse(text) is JsonArray array)
                    return array.Select(item => item is JsonValue v && v.TryGetValue<string>(out var s) ? s : item?.ToJsonString() ?? "");
            }
            catch (JsonException) { }   // `[a, b]`: unquoted words, split below
            text = text[1..^1];
        }
        return text.Trim().Length == 0 ? [] : text.Split(',').Select(t => t.Trim());
    }

    /// <summary>NaN and ±Infinity (also Python's nan / inf) as C# constants; a bare `NaN` would not compile.</summary>
    static string? NonFinite(string text, string type) => text.Trim().ToLowerInvariant() switch
    {
        "nan" => $"{type}.NaN",
        "infinity" or "+infinity" or "inf" or "+inf" => $"{type}.PositiveInfinity",
        "-infinity" or "-inf" => $"{type}.NegativeInfinity",
        _ => null,
    };

    static string ToDouble(double value)
    {
        var s = value.ToString("R", CultureInfo.InvariantCulture);
        return s.Contains('.') || s.Contains('E') ? s : s + ".0";
    }

    /// <summary>Parses `Name=Value` arguments of -p.</summary>
    public static Dictionary<string, string> ParseAssignments(IEnumerable<string> assignments)
    {
        var result = new Dictionary<string, string>();
        foreach (var a in assignments)
        {
            int eq = a.IndexOf('=');
            if (eq <= 0) throw new ResearchKitException($"-p '{a}': expected Name=Value");
            result[a[..eq].Trim()] = a[(eq + 1)..];
        }
        return result;
    }
}
