using System.Text.Json;
using System.Text.RegularExpressions;

namespace ResearchKit;

/// <summary>
/// System.Text.Json's errors in a file's own terms: the field and where it sits, not the CLR type it binds to
/// ("JSON deserialization for type 'ResearchKit.Models.MaeConfig' was missing required properties including: 'encoder'").
/// </summary>
public static partial class JsonErrors
{
    /// <summary>One line saying what is wrong with the document, for an exception thrown while deserialising it.</summary>
    public static string Plain(Exception e)
    {
        string where = e is JsonException { Path: { } path } ? path.TrimStart('$').TrimStart('.') : "", at = where.Length > 0 ? where + "." : "";
        var message = e.Message.ReplaceLineEndings(" ");
        if (MissingRequired().Match(message) is { Success: true } missing)
            return $"missing required field {string.Join(", ", missing.Groups["names"].Value.Split(", ").Select(n => $"'{at}{n.Trim('\'')}'"))}";
        if (NullNotAllowed().Match(message) is { Success: true } nulled)
            return $"field '{(where.Length > 0 ? where : nulled.Groups["name"].Value)}' must not be null";
        return message;
    }

    /// <summary>Whether the document lacks a field it must have (rather than being malformed).</summary>
    public static bool IsMissingField(Exception e) => MissingRequired().IsMatch(e.Message);

    [GeneratedRegex(@"was missing required properties including: (?<names>'[^']*'(, '[^']*')*)")]
    private static partial Regex MissingRequired();

    [GeneratedRegex(@"(property|parameter|field) '(?<name>[^']*)' .*doesn't allow (null|getting null|setting null)")]
    private static partial Regex NullNotAllowed();
}
