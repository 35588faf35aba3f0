using System.CommandLine;
using System.CommandLine.Parsing;
using System.Text.RegularExpressions;

namespace ResearchKit.Cli;

/// <summary>
/// Bad arguments as one line, in the words the rest of the CLI uses: System.CommandLine prints its error and then the whole
/// help text, and names the CLR type a value should parse as ("System.Int32").
/// </summary>
static partial class ParseErrors
{
    /// <summary>"error: …; see `researchkit CMD --help`" for the first parse error, or null when there is none.</summary>
    public static string? OneLine(ParseResult parsed)
    {
        if (parsed.Errors.Count == 0) return null;
        var names = new List<string>();
        for (SymbolResult? r = parsed.CommandResult; r is CommandResult c; r = c.Parent) names.Insert(0, c.Command.Name);
        names[0] = "researchkit";
        return $"error: {Plain(parsed.Errors[0].Message)}; see `{string.Join(" ", names)} --help`";
    }

    static string Plain(string message)
    {
        if (CannotParse().Match(message) is { Success: true } m)
        {
            var type = NullableOf().Match(m.Groups["type"].Value) is { Success: true } n ? n.Groups[1].Value : m.Groups["type"].Value;
            var expected = type switch
            {
                "System.Int32" or "System.Int64" => "a whole number",
                "System.Double" or "System.Single" => "a number",
                var other => other.StartsWith("System.", StringComparison.Ordinal) ? other["System.".Length..] : other,
            };
            return $"{m.Groups["option"].Value}: expected {expected}; got '{m.Groups["value"].Value}'";
        }
        return message.TrimEnd('.').ReplaceLineEndings(" ");
    }

    [GeneratedRegex(@"^Cannot parse argument '(?<value>.*)' for (option|argument) '(?<option>[^']*)' as expected type '(?<type>[^']*)'")]
    private static partial Regex CannotParse();

    [GeneratedRegex(@"^System\.Nullable`1\[(.*)\]$")]
    private static partial Regex NullableOf();
}
