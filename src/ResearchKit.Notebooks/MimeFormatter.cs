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

/// <summary>Markdown to display as text/markdown (rendered by front ends and by the HTML report).</summary>
public sealed record Markdown(string Content);

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
        Register<GenericChart>(c => new() { ["text/html"] = PlotlyHtml.Chart(c), ["text/plain"] = "Plotly chart" });
        Register<ImageGrid>(g => new() { ["image/png"] = Convert.ToBase64String(g.Png), ["text/plain"] = g.ToString() });
        Register<Html>(h => new() { ["text/html"] = h.Content, ["text/plain"] = h.Text ?? "HTML" });
        Register<Markdown>(m => new() { ["text/markdown"] = m.Content, ["text/plain"] = m.Content });
        Register<Tensor>(t => new() { ["text/html"] = TensorHtml(t), ["text/plain"] = TensorText(t) });
        Register<Frame<int, string>>(f => new() { ["text/html"] = FrameHtml(f), ["text/plain"] = FrameText(f) });
    }

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
        return result;
    }

    static string TensorText(Tensor t) => $"tensor [{string.Join(", ", t.shape)}] {t.dtype} on {t.device}";

    static string TensorHtml(Tensor t)
    {
        var text = new StringBuilder($"<div><code>{WebUtility.HtmlEncode(TensorText(t))}</code>");
        if (t.numel() > 0 && t.is_floating_point())
        {
            using var scope = NewDisposeScope();
            var f = t.detach().to_type(ScalarType.Float64);
            text.Append(CultureInfo.InvariantCulture, $"<br/>min {f.min().item<double>():G4} · max {f.max().item<double>():G4} · mean {f.mean().item<double>():G4} · std {(f.numel() > 1 ? f.std().item<double>() : 0):G4}");
        }
        if (t.numel() <= 64) text.Append("<pre>").Append(WebUtility.HtmlEncode(t.cpu().ToString(TorchSharp.TensorStringStyle.Numpy))).Append("</pre>");
        return text.Append("</div>").ToString();
    }

    static string Cell(object? value) => value switch
    {
        double d when double.IsNaN(d) => "",
        double d => d.ToString(Math.Abs(d) >= 1000 || d == Math.Floor(d) ? "G6" : "0.####", CultureInfo.InvariantCulture),
        null => "",
        _ => value.ToString() ?? "",
    };

    /// <summary>A frame as an HTML table (first 100 rows): Formatting would print Deedle's internals instead.</summary>
    static string FrameHtml(Frame<int, string> frame)
    {
        var html = new StringBuilder("<table class=\"researchkit-table\"><thead><tr><th></th>");
        foreach (var column in frame.ColumnKeys) html.Append("<th>").Append(WebUtility.HtmlEncode(column)).Append("</th>");
        html.Append("</tr></thead><tbody>");
        foreach (var key in frame.RowKeys.Take(100))
        {
            html.Append("<tr><th>").Append(key).Append("</th>");
            var row = frame.Rows[key];
            foreach (var column in frame.ColumnKeys)
                html.Append("<td>").Append(WebUtility.HtmlEncode(Cell(row.TryGet(column).HasValue ? row.TryGet(column).Value : null))).Append("</td>");
            html.Append("</tr>");
        }
        if (frame.RowCount > 100) html.Append($"<tr><td colspan=\"{frame.ColumnCount + 1}\">… {frame.RowCount - 100} more rows</td></tr>");
        return html.Append("</tbody></table>").ToString();
    }

    static string FrameText(Frame<int, string> frame)
    {
        var columns = frame.ColumnKeys.ToList();
        var rows = frame.RowKeys.Take(100).Select(k => columns.Select(c => { var v = frame.Rows[k].TryGet(c); return Cell(v.HasValue ? v.Value : null); }).ToList()).ToList();
        var widths = columns.Select((c, i) => Math.Max(c.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToList();
        var text = new StringBuilder(string.Join("  ", columns.Select((c, i) => c.PadLeft(widths[i])))).AppendLine();
        foreach (var row in rows) text.AppendLine(string.Join("  ", row.Select((v, i) => v.PadLeft(widths[i]))));
        return text.ToString();
    }
}
