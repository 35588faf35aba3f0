using ResearchKit.Reporting;

namespace ResearchKit.Notebooks;

/// <summary>
/// The script libraries that outputs need and that a document carries once, so it works offline: plotly.js before the
/// first chart, mermaid.js before the first diagram. An output needs a library when its HTML holds the library's class.
/// </summary>
static class InlinedLibraries
{
    public sealed record Library(string NeededBy, string BeginMarker, string EndMarker, Func<string> Script);

    public static readonly Library[] All =
    [
        new("researchkit-chart", PlotlyHtml.BeginMarker, PlotlyHtml.EndMarker, PlotlyHtml.PlotlyScript),
        new(MermaidHtml.DiagramClass, MermaidHtml.BeginMarker, MermaidHtml.EndMarker, MermaidHtml.Script),
    ];

    /// <summary>The libraries this HTML needs.</summary>
    public static IEnumerable<Library> NeededBy(string html) => All.Where(l => html.Contains(l.NeededBy, StringComparison.Ordinal));

    /// <summary>The HTML without the library copies inlined in it.</summary>
    public static string Strip(string html)
    {
        foreach (var library in All)
        {
            int begin;
            while ((begin = html.IndexOf(library.BeginMarker, StringComparison.Ordinal)) >= 0)
            {
                int end = html.IndexOf(library.EndMarker, begin, StringComparison.Ordinal);
                if (end < 0) break;
                html = html[..begin] + html[(end + library.EndMarker.Length)..];
            }
        }
        return html;
    }
}
