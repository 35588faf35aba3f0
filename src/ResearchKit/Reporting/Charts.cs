using System.Text;
using System.Text.Json.Nodes;
using Plotly.NET;
using Plotly.NET.CSharp;
using Chart = Plotly.NET.CSharp.Chart;

namespace ResearchKit.Reporting;

/// <summary>One line of an ablation chart: y against x, with optional ± error bars (e.g. the standard deviation over seeds).</summary>
public sealed record ChartSeries(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y, IReadOnlyList<double>? ErrorY = null)
{
    /// <summary>A series of means with standard-deviation error bars, from values measured over seeds (scaled, e.g. 100 for %).</summary>
    public static ChartSeries FromSeeds(string name, IReadOnlyList<double> x, IReadOnlyList<SeedStats> y, double scale = 100) =>
        new(name, x, y.Select(s => s.Mean * scale).ToArray(), y.Any(s => s.Count > 1) ? y.Select(s => s.Std * scale).ToArray() : null);
}

/// <summary>
/// The chart kinds the notebooks use, built with Plotly.NET. Render with <see cref="PlotlyHtml"/>
/// (plotly.js inlined once per document, never fetched from a CDN).
/// </summary>
public static class Charts
{
    /// <summary>Training loss per step, with a moving average over <paramref name="window"/> steps.</summary>
    public static GenericChart LossCurve(IReadOnlyList<double> losses, string title = "Pre-training loss", int window = 20) =>
        LossCurves([("loss", losses)], title, window);

    /// <summary>Several loss curves on one chart (e.g. one per mask ratio).</summary>
    public static GenericChart LossCurves(IEnumerable<(string Name, IReadOnlyList<double> Losses)> curves, string title = "Pre-training loss", int window = 20)
    {
        var lines = curves.Select(c =>
        {
            var smooth = MovingAverage(c.Losses, window);
            return Chart.Line<int, double, string>(Enumerable.Range(1, smooth.Length), smooth, Name: c.Name, ShowMarkers: false);
        });
        return Chart.Combine(lines)
            .WithXAxisStyle<double, double, string>(TitleText: "step")
            .WithYAxisStyle<double, double, string>(TitleText: "loss (moving average)")
            .Titled(title);
    }

    /// <summary>
    /// A metric against an ablated parameter, one line per series; with <paramref name="paper"/>, the paper's
    /// published numbers beside ours in a second panel (their scale differs: never on one axis as if comparable).
    /// </summary>
    public static GenericChart Ablation(string title, string xTitle, string yTitle, IEnumerable<ChartSeries> ours,
        IEnumerable<ChartSeries>? paper = null, string paperTitle = "paper")
    {
        var left = Chart.Combine(ours.Select(s => WithErrors(Chart.Line<double, double, string>(s.X, s.Y, Name: s.Name, ShowMarkers: true), s.ErrorY)))
            .WithXAxisStyle<double, double, string>(TitleText: xTitle)
            .WithYAxisStyle<double, double, string>(TitleText: yTitle);
        if (paper is null) return left.Titled(title);
        var right = Chart.Combine(paper.Select(s => Chart.Line<double, double, string>(s.X, s.Y, Name: $"{paperTitle}: {s.Name}", ShowMarkers: true,
                LineDash: StyleParam.DrawingStyle.Dash)))
            .WithXAxisStyle<double, double, string>(TitleText: xTitle)
            .WithYAxisStyle<double, double, string>(TitleText: $"{paperTitle} (%)");
        return Chart.Grid([left, right], 1, 2, SubPlotTitles: new[] { "ResearchKit (this run)", paperTitle }).Titled(title).WithSize(Width: 1000, Height: 420);
    }

    /// <summary>
    /// Categorical ablation (e.g. BEiT's Table 4): one marker per category and series, ours with seed error bars, on an
    /// axis fitted to the values (the differences are often a point or two: bars from zero would hide them); with
    /// <paramref name="paper"/>, the paper's numbers in a second panel over the same categories. A series shorter than
    /// the categories covers the first ones only (e.g. no fine-tuning for a raw-pixel floor); NaN values are left out
    /// (a variant the paper has no number for).
    /// </summary>
    public static GenericChart Comparison(string title, string yTitle, IReadOnlyList<string> categories, IEnumerable<(string Name, IReadOnlyList<SeedStats> Values)> ours,
        IEnumerable<(string Name, IReadOnlyList<double> Values)>? paper = null, string paperTitle = "paper", double scale = 100)
    {
        var left = Chart.Combine(ours.Select(s =>
            {
                var shown = categories.Zip(s.Values).Where(p => double.IsFinite(p.Second.Mean)).ToList();
                return WithErrors(Chart.Point<string, double, string>(shown.Select(p => p.First).ToArray(), shown.Select(p => scale * p.Second.Mean).ToArray(), Name: s.Name),
                    shown.Select(p => scale * p.Second.Std).ToArray());
            }))
            .WithYAxisStyle<double, double, string>(TitleText: yTitle);
        if (paper is null) return left.Titled(title);
        var right = Chart.Combine(paper.Select(s =>
            {
                var shown = categories.Zip(s.Values).Where(p => double.IsFinite(p.Second)).ToList();   // NaN: the paper has no such row
                return Chart.Point<string, double, string>(shown.Select(p => p.First).ToArray(), shown.Select(p => p.Second).ToArray(), Name: $"{paperTitle}: {s.Name}");
            }))
            .WithYAxisStyle<double, double, string>(TitleText: $"{paperTitle} (%)");
        return Chart.Grid([left, right], 1, 2, SubPlotTitles: new[] { "ResearchKit (this run)", paperTitle }).Titled(title).WithSize(Width: 1100, Height: 440);
    }

    /// <summary>Adds symmetric y error bars to a single-trace chart (Plotly.NET's F# Error.init takes every optional argument).</summary>
    static GenericChart WithErrors(GenericChart chart, IReadOnlyList<double>? errors)
    {
        if (errors is null) return chart;
        var error = Plotly.NET.TraceObjects.Error.init<double, double>(Visible: true, Type: StyleParam.ErrorType.Data, Symmetric: true, Array: errors.ToArray(),
            Arrayminus: null, ArrayEncoded: null, ArrayminusEncoded: null, Value: null, Valueminus: null, Traceref: null, Tracerefminus: null,
            Copy_ystyle: null, Color: null, Thickness: null, Width: null);
        return Plotly.NET.Chart.withYError(error).Invoke(chart);
    }

    /// <summary>Sets the chart's title (Plotly.NET's withTitle is an F# curried function).</summary>
    public static GenericChart Titled(this GenericChart chart, string title) =>
        Plotly.NET.Chart.withTitle(title, null).Invoke(chart);

    static double[] MovingAverage(IReadOnlyList<double> values, int window)
    {
        var result = new double[values.Count];
        double sum = 0;
        for (int i = 0; i < values.Count; i++)
        {
            sum += values[i];
            if (i >= window) sum -= values[i - window];
            result[i] = sum / Math.Min(i + 1, window);
        }
        return result;
    }
}

/// <summary>
/// Chart outputs that work offline and in every front end: the figure as `application/vnd.plotly.v1+json` (JupyterLab,
/// VS Code), and HTML — a div holding a static PNG (for viewers that run no script, e.g. GitHub) that a script
/// replaces with the interactive chart. plotly.js (2.28, embedded in Plotly.NET) is inlined by <see cref="PlotlyScript"/>
/// once per document; charts drawn before it loads wait in a queue.
/// </summary>
public static class PlotlyHtml
{
    /// <summary>Markers around the inlined library, so a report can strip per-output copies and keep one.</summary>
    public const string BeginMarker = "<!--researchkit:plotly.js-->", EndMarker = "<!--/researchkit:plotly.js-->";

    static readonly Lazy<string> Library = new(() =>
    {
        var assembly = typeof(GenericChart).Assembly;
        var name = assembly.GetManifestResourceNames().Single(n => n.EndsWith(".min.js", StringComparison.Ordinal));
        using var reader = new StreamReader(assembly.GetManifestResourceStream(name)!);
        return reader.ReadToEnd();
    });

    /// <summary>
    /// The whole plotly.js in a script tag that also draws queued charts. plotly.js's module header registers with
    /// require.js when a page has it (Jupyter Notebook, nbconvert's HTML) and then never sets window.Plotly; run inside
    /// a function whose `define`, `module` and `exports` are undefined, it always sets window.Plotly.
    /// </summary>
    public static string PlotlyScript() =>
        $"{BeginMarker}<script type=\"text/javascript\">(function(define,module,exports){{{Library.Value}\n}}).call(window);\n" +
        $"(window.__researchkitCharts||[]).forEach(function(d){{d()}});window.__researchkitCharts=[];</script>{EndMarker}";

    /// <summary>The figure for `application/vnd.plotly.v1+json`: data, layout and config.</summary>
    public static string FigureJson(GenericChart chart) => FigureJson(GenericChart.toFigureJson(chart));

    /// <summary>The same, from the figure's JSON (`GenericChart.toFigureJson`).</summary>
    public static string FigureJson(string figureJson)
    {
        var figure = JsonNode.Parse(figureJson)!.AsObject();
        return new JsonObject { ["data"] = figure["data"]?.DeepClone(), ["layout"] = figure["layout"]?.DeepClone(), ["config"] = new JsonObject { ["responsive"] = true } }.ToJsonString();
    }

    /// <summary>A chart's div (with the static picture, when given, until the script draws) and drawing script, without plotly.js.</summary>
    public static string Chart(GenericChart chart, string? id = null, byte[]? staticPng = null) =>
        Chart(GenericChart.toFigureJson(chart), id, staticPng);

    /// <summary>The same, from the figure's JSON (`GenericChart.toFigureJson`).</summary>
    public static string Chart(string figure, string? id = null, byte[]? staticPng = null)
    {
        id ??= "chart-" + Guid.NewGuid().ToString("N")[..12];
        var html = new StringBuilder();
        html.Append($"<div id=\"{id}\" class=\"researchkit-chart\" style=\"min-height:420px\">");
        if (staticPng is not null) html.Append($"<img alt=\"chart (static picture)\" style=\"max-width:100%\" src=\"data:image/png;base64,{Convert.ToBase64String(staticPng)}\"/>");
        html.Append("</div>");
        html.Append("<script type=\"text/javascript\">(function(){var f=").Append(figure).Append(';');
        html.Append($"var d=function(){{var g=document.getElementById('{id}');if(!g)return;g.innerHTML='';Plotly.newPlot(g,f.data,f.layout,{{responsive:true}});}};");
        html.Append("if(window.Plotly){d();}else{(window.__researchkitCharts=window.__researchkitCharts||[]).push(d);}})();</script>");
        return html.ToString();
    }
}
