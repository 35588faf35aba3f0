using System.Globalization;
using System.Net;
using System.Text;
using Deedle;
using Microsoft.DotNet.Interactive.Formatting;
using Plotly.NET;
using ResearchKit.Reporting;
using static TorchSharp.torch;

namespace ResearchKit.Notebooks;

/// <summary>Raw HTML to display as text/html.</summary>
public sealed record Html(string Content, string? Text = null);

/// <summary>JavaScript for the front end to run: text/html holding a script element, as .NET Interactive's Javascript() displays.</summary>
public sealed record ScriptContent(string Code);

/// <summary>LaTeX shown as written (text/latex), as .NET Interactive's LaTeXString: `new LaTeXString(@"\begin{align}…")`.</summary>
public sealed record LaTeXString(string Content)
{
    public override string ToString() => Content;
}

/// <summary>A formula shown as display maths (text/latex between $$), as .NET Interactive's MathString.</summary>
public sealed record MathString(string Content)
{
    public override string ToString() => $"$${Content}$$";
}

/// <summary>Rows to show as a table with a CSV copy (text/html and text/csv), as .NET Interactive's DisplayTable().</summary>
public sealed record TableContent(string Html, string Csv, string Text);

/// <summary>
/// One formatter registry for every output: a value becomes a mime bundle with text/plain always, plus
/// text/html (charts, frames, tensors, records), image/png (image grids) or text/markdown. Formatters
/// registered for a type win over the defaults; the rest falls back to .NET Interactive's Formatting.
/// </summary>
public static class MimeFormatter
{
    static readonly List<(Type Type, Func<object, Dictionary<string, string>> Format)> registered = [];

    static MimeFormatter()
    {
        Register<GenericChart>(MimeBundles.Chart);
        Register<ImageGrid>(MimeBundles.Image);
        Register<Html>(h => new() { ["text/html"] = h.Content, ["text/plain"] = h.Text ?? "HTML" });
        Register<Markdown>(m => new() { ["text/markdown"] = m.Content, ["text/plain"] = m.Content });
        Register<ScriptContent>(j => new() { ["text/html"] = $"<script type=\"text/javascript\">{j.Code}</script>", ["text/plain"] = j.Code });
        Register<LaTeXString>(l => new() { ["text/latex"] = l.ToString(), ["text/plain"] = l.ToString() });
        Register<MathString>(m => new() { ["text/latex"] = m.ToString(), ["text/plain"] = m.ToString() });
        Register<TableContent>(t => new() { ["text/html"] = t.Html, ["text/csv"] = t.Csv, ["text/plain"] = t.Text });
        Register<Tensor>(MimeBundles.Tensor);
        // Any other Deedle series or frame: its own compact text (head and tail), not Formatting's walk of its object graph.
        Register<Deedle.Internal.IFsiFormattable>(d => new() { ["text/html"] = $"<pre>{WebUtility.HtmlEncode(d.Format())}</pre>", ["text/plain"] = d.Format() });
        Register<Frame<int, string>>(MimeBundles.Frame);
    }

    /// <summary>Past this many characters a default display is replaced by a summary: an output must stay readable and loadable.</summary>
    public const int DisplayLimit = 100_000;

    /// <summary>Formats values of type T (and subtypes) with <paramref name="format"/>: mime type → content.</summary>
    public static void Register<T>(Func<T, Dictionary<string, string>> format) =>
        registered.Insert(0, (typeof(T), o => format((T)o)));

    /// <summary>The mime bundle of a value; text/plain is always present.</summary>
    public static Dictionary<string, string> Format(object? value)
    {
        if (value is null) return new() { ["text/plain"] = "null" };
        foreach (var (type, format) in registered)
            if (type.IsInstanceOfType(value))
            {
                var bundle = format(value);
                bundle.TryAdd("text/plain", value.ToString() ?? "");
                return bundle;
            }
        var result = new Dictionary<string, string> { ["text/plain"] = value.ToDisplayString("text/plain") };
        if (value is not (string or IFormattable or bool))
            result["text/html"] = value.ToDisplayString("text/html");
        if (value is not string && result.Values.Any(v => v.Length > DisplayLimit)) return Summary(value, result.Values.Max(v => v.Length));
        return result;
    }

    /// <summary>
    /// Rows as a table: one column per public property or field of the element type (a scalar sequence is one column,
    /// "value"), at most <paramref name="limit"/> rows shown and a count of the rest. Cells use the default text format.
    /// </summary>
    public static TableContent Table<T>(IEnumerable<T> rows, int limit = 100)
    {
        var type = typeof(T) == typeof(object) ? rows.FirstOrDefault()?.GetType() ?? typeof(object) : typeof(T);
        bool scalar = type.IsPrimitive || type == typeof(string) || type == typeof(decimal) || type.IsEnum;
        var members = scalar ? [] : type.GetProperties().Where(p => p.GetIndexParameters().Length == 0).Cast<System.Reflection.MemberInfo>()
            .Concat(type.GetFields()).ToList();
        var names = scalar || members.Count == 0 ? ["value"] : members.Select(m => m.Name).ToList();
        object? Get(object? row, int i) => members.Count == 0 ? row
            : members[i] is System.Reflection.PropertyInfo p ? p.GetValue(row) : ((System.Reflection.FieldInfo)members[i]).GetValue(row);
        // Every row formatted once: the CSV has them all, the HTML and the text the first `limit`.
        var all = rows.Select(r => names.Select((_, i) => Get(r, i)?.ToDisplayString("text/plain") ?? "").ToList()).ToList();
        var cells = all.Take(limit).ToList();
        var html = new StringBuilder("<table><thead><tr>");
        foreach (var name in names) html.Append("<th>").Append(WebUtility.HtmlEncode(name)).Append("</th>");
        html.Append("</tr></thead><tbody>");
        foreach (var row in cells) html.Append("<tr>").AppendJoin("", row.Select(c => $"<td>{WebUtility.HtmlEncode(c)}</td>")).Append("</tr>");
        if (all.Count > limit) html.Append($"<tr><td colspan=\"{names.Count}\">… {all.Count - limit} more rows</td></tr>");
        html.Append("</tbody></table>");
        static string Csv(string field) => field.IndexOfAny([',', '"', '\n', '\r']) < 0 ? field : $"\"{field.Replace("\"", "\"\"")}\"";
        var csv = new StringBuilder().AppendJoin(",", names.Select(Csv)).Append('\n');
        foreach (var row in all) csv.AppendJoin(",", row.Select(Csv)).Append('\n');
        var widths = names.Select((n, i) => Math.Max(n.Length, cells.Count == 0 ? 0 : cells.Max(r => r[i].Length))).ToList();
        var text = new StringBuilder().AppendJoin("  ", names.Select((n, i) => n.PadRight(widths[i]))).Append('\n');
        foreach (var row in cells) text.AppendJoin("  ", row.Select((c, i) => c.PadRight(widths[i]))).Append('\n');
        if (all.Count > limit) text.Append($"… {all.Count - limit} more rows\n");
        return new TableContent(html.ToString(), csv.ToString(), text.ToString());
    }

    /// <summary>The type, the item count and the first items: what a reader needs when the full display would be huge.</summary>
    static Dictionary<string, string> Summary(object value, int size)
    {
        var text = new StringBuilder($"{TypeName(value.GetType())}");
        if (value is System.Collections.ICollection collection) text.Append($" with {collection.Count:N0} items");
        if (value is System.Collections.IEnumerable items)
        {
            var first = items.Cast<object?>().Take(11).ToList();
            text.Append(": [").Append(string.Join(", ", first.Take(10).Select(i => Shorten(i?.ToString() ?? "null", 80)))).Append(first.Count > 10 ? ", …]" : "]");
        }
        else text.Append(": ").Append(Shorten(value.ToString() ?? "", 400));
        text.Append($" (its full display would be {size / 1024.0:N0} KB; display parts of it instead)");
        var plain = text.ToString();
        return new() { ["text/plain"] = plain, ["text/html"] = $"<code>{WebUtility.HtmlEncode(plain)}</code>" };
    }

    static string Shorten(string text, int length) => text.Length <= length ? text : text[..(length - 1)] + "…";

    static string TypeName(Type type) => type.IsGenericType
        ? $"{type.Name[..type.Name.IndexOf('`')]}<{string.Join(", ", type.GetGenericArguments().Select(TypeName))}>"
        : type.Name;

    /// <summary>The mime type of a plotly figure (<see cref="MimeBundles.PlotlyMime"/>).</summary>
    public const string PlotlyMime = MimeBundles.PlotlyMime;
}
