using System.Globalization;
using System.Net;
using System.Text;
using Deedle;
using Plotly.NET;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Reporting;

/// <summary>Markdown to display as text/markdown (rendered by front ends and by the HTML report): a notebook's verdict.</summary>
public sealed record Markdown(string Content);

/// <summary>
/// The mime bundles (mime type → content) of the kit's own values: charts, image grids, tensors and result frames. One
/// definition for every notebook host: our engine's formatter and the .NET Interactive extension both register these.
/// </summary>
public static class MimeBundles
{
    /// <summary>
    /// A chart for every viewer: the plotly figure (JupyterLab, VS Code), HTML that draws it (Jupyter Notebook, nbconvert,
    /// our report) and a PNG for viewers that run no script (GitHub). See <see cref="PlotlyHtml"/>.
    /// </summary>
    public static Dictionary<string, string> Chart(GenericChart chart)
    {
        var figure = GenericChart.toFigureJson(chart);   // serialised once for the three forms
        var png = StaticChart.Render(figure).Png;
        return new()
        {
            [PlotlyMime] = PlotlyHtml.FigureJson(figure),
            ["text/html"] = PlotlyHtml.Chart(figure, staticPng: png),
            ["image/png"] = Convert.ToBase64String(png),
            ["text/plain"] = "Plotly chart",
        };
    }

    /// <summary>The mime type of a plotly figure, which JupyterLab and VS Code draw natively.</summary>
    public const string PlotlyMime = "application/vnd.plotly.v1+json";

    /// <summary>An image grid as a PNG.</summary>
    public static Dictionary<string, string> Image(ImageGrid grid) =>
        new() { ["image/png"] = Convert.ToBase64String(grid.Png), ["text/plain"] = grid.ToString() };

    /// <summary>A tensor's shape, dtype and device, its statistics when floating, and its values when small.</summary>
    public static Dictionary<string, string> Tensor(torch.Tensor t) => new() { ["text/html"] = TensorHtml(t), ["text/plain"] = TensorText(t) };

    /// <summary>A frame as a table (first 100 rows): generic formatters would print Deedle's internals instead.</summary>
    public static Dictionary<string, string> Frame(Frame<int, string> frame) => new() { ["text/html"] = FrameHtml(frame), ["text/plain"] = FrameText(frame) };

    /// <summary>A tensor's text form: shape, dtype and device.</summary>
    internal static string TensorText(torch.Tensor t) => $"tensor [{string.Join(", ", t.shape)}] {t.dtype} on {t.device}";

    /// <summary>A small tensor's values (numpy style), shown beside its summary; null past 64 elements.</summary>
    internal static string? TensorValues(torch.Tensor t)
    {
        if (t.numel() > 64) return null;
        using var scope = NewDisposeScope();   // the host copy of a device tensor
        return t.cpu().ToString(TorchSharp.TensorStringStyle.Numpy);
    }

    static string TensorHtml(torch.Tensor t)
    {
        var text = new StringBuilder($"<div><code>{WebUtility.HtmlEncode(TensorText(t))}</code>");
        if (t.numel() > 0 && t.is_floating_point())
        {
            using var scope = NewDisposeScope();
            var f = t.detach().to_type(ScalarType.Float64);
            text.Append(CultureInfo.InvariantCulture, $"<br/>min {f.min().item<double>():G4} · max {f.max().item<double>():G4} · mean {f.mean().item<double>():G4} · std {(f.numel() > 1 ? f.std().item<double>() : 0):G4}");
        }
        if (TensorValues(t) is { } values) text.Append("<pre>").Append(WebUtility.HtmlEncode(values)).Append("</pre>");
        return text.Append("</div>").ToString();
    }

    static string Cell(object? value) => value switch
    {
        double d when double.IsNaN(d) => "",
        double d => d.ToString(Math.Abs(d) >= 1000 || d == Math.Floor(d) ? "G6" : "0.####", CultureInfo.InvariantCulture),
        null => "",
        _ => value.ToString() ?? "",
    };

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

    internal static string FrameText(Frame<int, string> frame)
    {
        var columns = frame.ColumnKeys.ToList();
        var rows = frame.RowKeys.Take(100).Select(k => columns.Select(c => { var v = frame.Rows[k].TryGet(c); return Cell(v.HasValue ? v.Value : null); }).ToList()).ToList();
        var widths = columns.Select((c, i) => Math.Max(c.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToList();
        var text = new StringBuilder(string.Join("  ", columns.Select((c, i) => c.PadLeft(widths[i])))).AppendLine();
        foreach (var row in rows) text.AppendLine(string.Join("  ", row.Select((v, i) => v.PadLeft(widths[i]))));
        return text.ToString();
    }
}
