using System.Text;

namespace ResearchKit.Notebooks;

/// <summary>
/// A language's variables, as #!share and #!set read and write them. Values move by reference: they live in one process.
/// </summary>
public interface IVariableKernel
{
    string Name { get; }
    bool TryGet(string name, out object? value);
    void Set(string name, object? value);
    IEnumerable<(string Name, Type Type, object? Value)> Variables();
}

/// <summary>
/// What a cell's parts other than C# do, as in .NET Interactive: markdown and HTML are displayed (markdown rendered
/// to text/html by Markdig, as there), JavaScript is displayed in a script element, a mermaid diagram is drawn by the
/// inlined mermaid.js (<see cref="MermaidHtml"/>), `#!value --name x` keeps the text as a named string, and #!share /
/// #!set copy a value between kernels. #!who and #!whos list variables.
/// </summary>
sealed class PolyglotKernels(NotebookSession session, IVariableKernel csharp, Func<IVariableKernel> fsharp)
{
    readonly ValueKernel values = new();

    IVariableKernel Kernel(string name, int line) => name switch
    {
        "csharp" => csharp,
        "fsharp" => fsharp(),
        "value" => values,
        _ => throw new CellSourceException($"line {line}: the {name} kernel has no variables; #!share and #!set work with csharp, fsharp and value"),
    };

    /// <summary>Displays a markdown, HTML or JavaScript part; stores a value part.</summary>
    public void Show(CodePart part)
    {
        var text = part.Code.TrimStart('\n');
        switch (part.Language)
        {
            case "markdown":
                session.Display(new Html(Markdig.Markdown.ToHtml(text, HtmlReport.Pipeline), text));
                break;
            case "html":
                session.Display(new Html(text));
                break;
            case "javascript":
                session.Display(new ScriptContent(text));
                break;
            case "mermaid":
                try { MermaidHtml.Library(); }   // fetched (once) before the display, so a failure is this cell's one-line error
                catch (ResearchKitException e) { throw new CellSourceException($"line {part.Line}: #!mermaid: {e.Message}"); }
                session.Display(new Html(MermaidHtml.Diagram(text), text));
                break;
            case "value":
                Value(part, text);
                break;
            default:
                throw new InvalidOperationException($"no kernel shows {part.Language}");
        }
    }

    /// <summary>`#!value --name x [--from-file F] [--mime-type M]`: the part's text (or the file's) as a string named x.</summary>
    void Value(CodePart part, string text)
    {
        var name = Required(part.Options, "name", "#!value", part.Line - 1);
        if (part.Options.TryGetValue("from-file", out var file))
        {
            var path = Path.GetFullPath(file, session.WorkingDirectory);
            if (!File.Exists(path)) throw new CellSourceException($"line {part.Line - 1}: #!value --from-file: {path} does not exist");
            text = File.ReadAllText(path);
        }
        else text = text.TrimEnd('\n');
        values.Set(name, text);
        if (part.Options.TryGetValue("mime-type", out var mime) && mime.Length > 0) session.Display(text, [mime]);
        else session.Display(text);
    }

    /// <summary>#!share, #!set, #!who, #!whos: acts in the part's language.</summary>
    public void Run(MagicPart magic)
    {
        var target = Kernel(magic.Language, magic.Line);
        switch (magic.Name)
        {
            case "share":
            {
                var from = Kernel(Required(magic.Options, "from", "#!share", magic.Line), magic.Line);
                if (magic.Arguments.Count != 1) throw new CellSourceException($"line {magic.Line}: #!share needs one variable name, as in `#!share --from csharp x`");
                var name = magic.Arguments[0];
                if (!from.TryGet(name, out var value)) throw new CellSourceException($"line {magic.Line}: #!share: the {from.Name} kernel has no variable '{name}'");
                target.Set(magic.Options.GetValueOrDefault("as") is { Length: > 0 } alias ? alias : name, value);
                break;
            }
            case "set":
            {
                var name = Required(magic.Options, "name", "#!set", magic.Line);
                var text = Required(magic.Options, "value", "#!set", magic.Line);
                object? value = text;
                if (text.StartsWith('@') && text.IndexOf(':') is > 1 and var colon)
                {
                    var source = Kernel(PolyglotCell.Language(text[1..colon]) ?? text[1..colon], magic.Line);
                    if (!source.TryGet(text[(colon + 1)..], out value))
                        throw new CellSourceException($"line {magic.Line}: #!set: the {source.Name} kernel has no variable '{text[(colon + 1)..]}'");
                }
                target.Set(name, value);
                break;
            }
            case "who" or "whos":
            {
                var variables = target.Variables().ToList();
                if (magic.Name == "who") session.Display(string.Join("  ", variables.Select(v => v.Name)));
                else session.Display(MimeFormatter.Table(variables.Select(v => new { v.Name, Type = v.Type.Name, Value = v.Value })));
                break;
            }
        }
    }

    static string Required(IReadOnlyDictionary<string, string> options, string option, string magic, int line) =>
        options.TryGetValue(option, out var value) && value.Length > 0 ? value
            : throw new CellSourceException($"line {line}: {magic} needs --{option}");

    /// <summary>The value kernel: named strings from #!value cells (and whatever #!set or #!share puts there).</summary>
    sealed class ValueKernel : IVariableKernel
    {
        readonly Dictionary<string, object?> stored = new(StringComparer.Ordinal);
        public string Name => "value";
        public bool TryGet(string name, out object? value) => stored.TryGetValue(name, out value);
        public void Set(string name, object? value) => stored[name] = value;
        public IEnumerable<(string Name, Type Type, object? Value)> Variables() =>
            stored.Select(p => (p.Key, p.Value?.GetType() ?? typeof(object), p.Value));
    }
}
