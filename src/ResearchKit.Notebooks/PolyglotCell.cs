using System.Text;
using System.Text.RegularExpressions;

namespace ResearchKit.Notebooks;

/// <summary>One run of a cell's lines in one language, or one magic that acts on the session (#!share, #!set).</summary>
public abstract record CellPart(int Line);

/// <summary>Lines for one kernel: code (csharp, fsharp), content to display (markdown, html, javascript), or a value's text.</summary>
/// <param name="Code">The part's lines, preceded by blank lines so that line N of the cell is line N of the part.</param>
/// <param name="Options">The options of the magic that opened the part (`#!value --name x`); empty for code.</param>
public sealed record CodePart(string Language, string Code, int Line, IReadOnlyDictionary<string, string> Options) : CellPart(Line)
{
    public bool IsBlank => string.IsNullOrWhiteSpace(Code);
}

/// <summary>A magic line run in the language that is current where it stands: `#!share --from value x`, `#!set --name x --value 3`.</summary>
public sealed record MagicPart(string Name, string Language, int Line, IReadOnlyDictionary<string, string> Options, IReadOnlyList<string> Arguments) : CellPart(Line);

/// <summary>
/// Polyglot Notebooks' cell grammar, which .NET Interactive notebooks are written in: a line starting with `#!name`
/// is a magic. A language magic (#!csharp, #!fsharp, #!markdown, #!html, #!javascript, #!mermaid, #!value) sends
/// the lines after it to that kernel; #!share, #!set, #!who and #!whos act where they stand; #!time times the cell.
/// Names are those of .NET Interactive's kernels and their aliases (c#, f#, js, md).
/// </summary>
public sealed partial record PolyglotCell(IReadOnlyList<CellPart> Parts, bool Timed)
{
    public static readonly IReadOnlySet<string> Languages = new HashSet<string> { "csharp", "fsharp", "markdown", "html", "javascript", "mermaid", "value" };

    static readonly Dictionary<string, string> Aliases = new(StringComparer.OrdinalIgnoreCase)
    {
        ["csharp"] = "csharp", ["c#"] = "csharp", ["cs"] = "csharp",
        ["fsharp"] = "fsharp", ["f#"] = "fsharp", ["fs"] = "fsharp",
        ["markdown"] = "markdown", ["md"] = "markdown",
        ["html"] = "html", ["javascript"] = "javascript", ["js"] = "javascript", ["mermaid"] = "mermaid", ["value"] = "value",
    };

    // Source-generated: a compiled Regex emits IL at start-up, 20-40 ms of the kernel's ready time.
    [GeneratedRegex(@"^#!(\S+)(.*)$")]
    private static partial Regex MagicLine();

    /// <summary>A kernel name as Polyglot metadata or a magic writes it, in its canonical form; null when unknown.</summary>
    public static string? Language(string name) => Aliases.GetValueOrDefault(name.Trim());

    /// <summary>Splits a cell; <paramref name="language"/> is the cell's own (Polyglot's kernelName metadata, or C#).</summary>
    public static PolyglotCell Parse(string source, string language = "csharp")
    {
        var lines = source.Replace("\r\n", "\n").Split('\n');
        var parts = new List<CellPart>();
        bool timed = false;
        string current = Language(language) ?? throw new CellSourceException($"'{language}' is not a kernel ResearchKit has (it has {string.Join(", ", Languages.Order())})");
        var options = (IReadOnlyDictionary<string, string>)new Dictionary<string, string>();
        int start = 0;   // first line (0-based) of the part being collected
        bool opened = false;   // whether a magic opened it (`#!value --name x` with no text is still a value)

        void Close(int end)
        {
            var code = new StringBuilder();
            for (int i = 0; i < end; i++) code.Append(i < start ? "" : lines[i]).Append(i < end - 1 ? "\n" : "");
            var part = new CodePart(current, code.ToString(), start + 1, options);
            // Code that is only blank lines is no part; a value a magic opened is one even when empty.
            if (!part.IsBlank || (current is "value" && opened)) parts.Add(part);
        }

        for (int i = 0; i < lines.Length; i++)
        {
            var match = MagicLine().Match(lines[i]);
            if (!match.Success) continue;
            var name = match.Groups[1].Value;
            var (named, positional) = Arguments(match.Groups[2].Value, i + 1, name);
            if (Language(name) is { } next)
            {
                Close(i);
                current = next;
                options = named;
                start = i + 1;
                opened = true;
                continue;
            }
            switch (name.ToLowerInvariant())
            {
                case "time":
                    timed = true;
                    break;
                case "share" or "set" or "who" or "whos":
                    Close(i);
                    parts.Add(new MagicPart(name.ToLowerInvariant(), current, i + 1, named, positional));
                    options = new Dictionary<string, string>();
                    opened = false;
                    break;
                default:
                    throw new CellSourceException($"line {i + 1}: '#!{name}' is not a magic ResearchKit knows; it has #!{string.Join(", #!", Languages.Order())}, #!share, #!set, #!who, #!whos and #!time");
            }
            start = i + 1;
            lines[i] = "";
        }
        Close(lines.Length);
        return new PolyglotCell(parts, timed);
    }

    /// <summary>`--name x --value "a b" y` → ({name: x, value: "a b"}, [y]); a flag without a value maps to "".</summary>
    static (Dictionary<string, string> Named, List<string> Positional) Arguments(string text, int line, string magic)
    {
        var tokens = new List<string>();
        var token = new StringBuilder();
        bool quoted = false, any = false;
        foreach (char c in text)
        {
            if (c == '"') { quoted = !quoted; any = true; continue; }
            if (char.IsWhiteSpace(c) && !quoted)
            {
                if (any) tokens.Add(token.ToString());
                token.Clear();
                any = false;
                continue;
            }
            token.Append(c);
            any = true;
        }
        if (quoted) throw new CellSourceException($"line {line}: #!{magic} has an unclosed quote");
        if (any) tokens.Add(token.ToString());
        var named = new Dictionary<string, string>(StringComparer.Ordinal);
        var positional = new List<string>();
        for (int i = 0; i < tokens.Count; i++)
        {
            if (!tokens[i].StartsWith("--", StringComparison.Ordinal)) { positional.Add(tokens[i]); continue; }
            bool hasValue = i + 1 < tokens.Count && !tokens[i + 1].StartsWith("--", StringComparison.Ordinal);
            named[tokens[i][2..]] = hasValue ? tokens[++i] : "";
        }
        return (named, positional);
    }
}
