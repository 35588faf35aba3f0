using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Plotly.NET;
using SkiaSharp;

namespace ResearchKit.Reporting;

/// <summary>The one typeface and text drawing of the static pictures (chart PNGs, image-grid row labels).</summary>
internal static class ChartText
{
    static readonly SKTypeface Face = Typefaces.DejaVuSans(bold: false);

    public static float Width(string text, float size)
    {
        using var font = new SKFont(Face, size);
        return font.MeasureText(text);
    }

    /// <summary>Draws text with its baseline at y, or with <paramref name="middle"/> centred vertically on y.</summary>
    public static void Draw(SKCanvas canvas, string text, float x, float y, float size, SKColor color,
        SKTextAlign align = SKTextAlign.Left, bool middle = false)
    {
        using var font = new SKFont(Face, size);
        using var paint = new SKPaint { Color = color, IsAntialias = true };
        if (middle) y -= (font.Metrics.Ascent + font.Metrics.Descent) / 2;
        canvas.DrawText(text, x, y, align, font, paint);
    }
}

/// <summary>
/// DejaVu Sans, read from its file. The kit's Skia build has no fontconfig (SkiaSharp.NativeAssets.Linux.NoDependencies:
/// libfontconfig.so.1 is missing on bare servers, containers and GPU machines), so faces are not found by family name;
/// the font files of Debian's fonts-dejavu-core are looked for in the usual folders, and where none is, Skia's default
/// face is used (it never throws; it may draw no glyphs).
/// </summary>
public static class Typefaces
{
    static readonly string[] Folders = ["/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF", "/usr/local/share/fonts",
        "/Library/Fonts", "C:/Windows/Fonts"];

    public static SKTypeface DejaVuSans(bool bold)
    {
        var file = bold ? "DejaVuSans-Bold.ttf" : "DejaVuSans.ttf";
        foreach (var folder in Folders)
            if (File.Exists(Path.Combine(folder, file)) && SKTypeface.FromFile(Path.Combine(folder, file)) is { } face) return face;
        return SKTypeface.FromFamilyName("DejaVu Sans", bold ? SKFontStyle.Bold : SKFontStyle.Normal) ?? SKTypeface.Default;
    }
}

/// <summary>
/// One axis as drawn. Min and Max are in axis units: log10 of the value on a log axis, the category's index
/// (order of first appearance) on a categorical one.
/// </summary>
public sealed record StaticAxis(string Name, double Min, double Max, bool Log, IReadOnlyList<string> Categories)
{
    /// <summary>Where a data value falls along the axis: 0 at Min, 1 at Max; NaN where it cannot be drawn (≤ 0 on a log axis).</summary>
    public double Fraction(double value) => UnitFraction(Log ? (value > 0 ? Math.Log10(value) : double.NaN) : value);

    /// <summary>Where a position in axis units falls: 0 at Min, 1 at Max.</summary>
    public double UnitFraction(double units) => (units - Min) / (Max - Min);
}

/// <summary>One subplot: its plot area in pixels and its axes.</summary>
public sealed record StaticPanel(SKRect Area, StaticAxis X, StaticAxis Y)
{
    /// <summary>The pixel of a data point (x is the category's index on a categorical axis); NaN where it cannot be drawn.</summary>
    public SKPoint DataToPixel(double x, double y) =>
        new(Area.Left + (float)(X.Fraction(x) * Area.Width), Area.Bottom - (float)(Y.Fraction(y) * Area.Height));
}

/// <summary>A chart drawn to PNG, with the geometry it was drawn with.</summary>
public sealed record StaticChartImage(byte[] Png, int Width, int Height, IReadOnlyList<StaticPanel> Panels);

/// <summary>
/// A PNG of a Plotly figure for viewers that run no JavaScript (GitHub, nbviewer). Reads the figure JSON, so any
/// GenericChart works: scatter and vertical bar traces are drawn; other trace types get their axes and a note.
/// </summary>
public static class StaticChart
{
    // plotly.js's default colorway, for figures whose layout and template set none.
    static readonly string[] Colorway = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
    static readonly SKColor Ink = new(0x44, 0x44, 0x44), GridLine = new(0xe5, 0xe5, 0xe5);
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    static readonly Regex Rgb = new(@"^rgba?\(\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*(?:,\s*([\d.]+)\s*)?\)$");

    // JSON access that never throws: a missing or mistyped field reads as null, NaN or empty.
    static JsonNode? At(JsonNode? node, string key) => node is JsonObject o && o.TryGetPropertyValue(key, out var v) ? v : null;
    static string? Str(JsonNode? node) => node is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
    static bool? Bool(JsonNode? node) => node is JsonValue v && v.TryGetValue<bool>(out var b) ? b : null;
    static JsonNode?[] Arr(JsonNode? node) => node is JsonArray a ? [.. a] : [];
    static string Title(JsonNode? node) => Str(node) ?? Str(At(node, "text")) ?? "";
    static double Or(double value, double fallback) => double.IsFinite(value) ? value : fallback;

    // Plotly.NET writes NaN as the string "NaN"; null and unparseable entries are missing points too.
    static double Num(JsonNode? node) =>
        node is JsonValue v && (v.TryGetValue<double>(out var d) || double.TryParse(Str(node), NumberStyles.Float, Inv, out d)) ? d : double.NaN;

    /// <summary>A string that is not a number makes its axis categorical; there every value is a category, numbers by their text.</summary>
    static bool IsCategory(JsonNode? node) => Str(node) is { } s && !double.TryParse(s, NumberStyles.Float, Inv, out _);
    static string? Key(JsonNode? node) => Str(node) ?? (node is JsonValue ? Num(node).ToString(Inv) : null);

    static SKColor? ParseColor(string? text)
    {
        if (string.IsNullOrWhiteSpace(text)) return null;
        if (SKColor.TryParse(text, out var hex)) return hex;
        var rgb = Rgb.Match(text.Trim());   // Plotly.NET writes "rgba(18, 52, 86, 1.0)"
        byte Channel(int i, double scale = 1) => (byte)Math.Clamp(double.Parse(rgb.Groups[i].Value, Inv) * scale, 0, 255);
        if (rgb.Success) return new SKColor(Channel(1), Channel(2), Channel(3), rgb.Groups[4].Success ? Channel(4, 255) : (byte)255);
        var named = System.Drawing.Color.FromName(text.Trim());
        return named.IsKnownColor ? new SKColor(named.R, named.G, named.B, named.A) : null;
    }

    /// <summary>On and off lengths of a Plotly dash name; d is the line width, at least 3 px (plotly.js scales dashes with it).</summary>
    static float[]? DashPattern(string? dash, float d) => dash switch
    {
        "dot" => [d, d], "dash" => [3 * d, 3 * d], "longdash" => [5 * d, 5 * d],
        "dashdot" => [3 * d, d, d, d], "longdashdot" => [5 * d, 2 * d, d, 2 * d], _ => null,
    };

    sealed record Trace(string Type, string Name, bool InLegend, string XRef, string YRef, JsonNode?[] X, double[] Y,
        SKColor LineColor, SKColor MarkerColor, bool Lines, bool Markers, float[]? Dash, float LineWidth, float MarkerSize,
        double[]? Plus, double[]? Minus, SKColor ErrorColor, float ErrorWidth)
    { public bool Drawn => Type is "scatter" or "scattergl" or "bar"; }

    static Trace ReadTrace(JsonNode? t, int index, string[] colorway)
    {
        var type = Str(At(t, "type")) ?? "scatter";
        if (type == "bar" && Str(At(t, "orientation")) == "h") type = "horizontal bar";
        var y = Arr(At(t, "y")).Select(Num).ToArray();
        // Without x, Plotly plots against the point index.
        var x = At(t, "x") is JsonArray xs ? [.. xs] : y.Select((_, i) => (JsonNode?)JsonValue.Create((double)i)).ToArray();
        var fallback = ParseColor(colorway[index % colorway.Length]) ?? SKColors.Gray;
        SKColor? line = ParseColor(Str(At(At(t, "line"), "color"))), marker = ParseColor(Str(At(At(t, "marker"), "color")));
        var mode = Str(At(t, "mode")) ?? (y.Length <= 20 ? "lines+markers" : "lines");   // plotly.js's default
        float width = (float)Or(Num(At(At(t, "line"), "width")), 2);
        var err = At(t, "error_y");
        bool errorsGiven = Bool(At(err, "visible")) != false && (Str(At(err, "type")) ?? "data") == "data";   // constant, percent: not drawn
        double[]? plus = errorsGiven && At(err, "array") is JsonArray p ? p.Select(Num).ToArray() : null;
        // As in plotly.js, an arrayminus makes the bars asymmetric unless symmetric says otherwise.
        double[]? minus = At(err, "arrayminus") is JsonArray m && Bool(At(err, "symmetric")) != true ? m.Select(Num).ToArray() : plus;
        var name = Str(At(t, "name"));
        return new Trace(type, name ?? $"trace {index}", Bool(At(t, "showlegend")) != false, Str(At(t, "xaxis")) ?? "x", Str(At(t, "yaxis")) ?? "y",
            x, y, line ?? marker ?? fallback, marker ?? line ?? fallback, mode.Contains("lines"), mode.Contains("markers"),
            DashPattern(Str(At(At(t, "line"), "dash")), Math.Max(width, 3)), width, (float)Or(Num(At(At(t, "marker"), "size")), 6),
            plus, minus, ParseColor(Str(At(err, "color"))) ?? line ?? marker ?? fallback, (float)Or(Num(At(err, "width")), 4));
    }

    /// <summary>Smallest gap between distinct x positions: one bar slot (1 on a categorical axis).</summary>
    static double Spacing(IEnumerable<double> xs)
    {
        var sorted = xs.Where(double.IsFinite).Distinct().Order().ToArray();
        var gaps = sorted.Zip(sorted.Skip(1), (a, b) => b - a).ToArray();
        return gaps.Length > 0 ? gaps.Min() : 1;
    }

    static StaticAxis BuildAxis(string name, JsonNode? style, IReadOnlyList<Trace> traces, bool isX)
    {
        bool log = Str(At(style, "type")) == "log";
        var categories = isX && traces.Any(t => t.X.Any(IsCategory)) ? traces.SelectMany(t => t.X).Select(Key).OfType<string>().Distinct().ToList() : [];
        if (categories.Count > 0) return new(name, -0.5, categories.Count - 0.5, false, categories);
        var range = Arr(At(style, "range")).Select(Num).ToArray();
        if (range.Length == 2 && range.All(double.IsFinite) && range[0] != range[1]) return new(name, range[0], range[1], log, []);
        var values = isX ? traces.SelectMany(XExtent) : traces.SelectMany(t => t.Y.SelectMany((v, i) => new[] { v + Err(t.Plus, i), v - Err(t.Minus, i) }));
        var units = values.Select(v => log ? (v > 0 ? Math.Log10(v) : double.NaN) : v).Where(double.IsFinite).ToArray();
        bool bars = !isX && !log && traces.Any(t => t.Type == "bar");   // bars start at 0, so the axis shows 0 unpadded
        if (bars) units = [.. units, 0];
        if (units.Length == 0) return new(name, 0, 1, log, []);
        double lo = units.Min(), hi = units.Max(), pad = hi > lo ? 0.05 * (hi - lo) : log ? 0.5 : Math.Max(Math.Abs(lo) * 0.1, 0.5);
        return new(name, bars && lo == 0 ? 0 : lo - pad, bars && hi == 0 ? 0 : hi + pad, log, []);

        static double Err(double[]? a, int i) => a is not null && i < a.Length && double.IsFinite(a[i]) ? a[i] : 0;
        static IEnumerable<double> XExtent(Trace t)   // a bar reaches half a slot either side of its x
        {
            var xs = t.X.Select(Num).ToArray();
            double half = t.Type == "bar" ? Spacing(xs) / 2 : 0;
            return xs.SelectMany(v => new[] { v - half, v + half });
        }
    }

    /// <summary>Each x value's position on its axis: the number, or the category's index.</summary>
    static double[] Positions(StaticAxis axis, Trace t)
    {
        if (axis.Categories.Count == 0) return t.X.Select(Num).ToArray();
        var index = axis.Categories.Select((c, i) => (c, i)).ToDictionary(p => p.c, p => (double)p.i);
        return t.X.Select(v => Key(v) is { } k && index.TryGetValue(k, out var i) ? i : double.NaN).ToArray();
    }

    static double NiceStep(double span, int count)
    {
        double raw = span / Math.Max(1, count), magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw))), f = raw / magnitude;
        return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * magnitude;
    }

    static string Label(double value, double step) =>
        Math.Round(value, Math.Clamp((int)Math.Ceiling(-Math.Log10(step) - 1e-9), 0, 12)).ToString("0.############", Inv);

    /// <summary>Tick positions in axis units with their labels: 1-2-5 steps, whole decades on a log axis spanning two.</summary>
    static IEnumerable<(double Units, string Label)> Ticks(StaticAxis axis, float pixels)
    {
        int count = Math.Max(2, (int)(pixels / 55));
        double lo = Math.Min(axis.Min, axis.Max), hi = Math.Max(axis.Min, axis.Max);
        if (axis.Categories.Count > 0)
        {
            int stride = (int)Math.Ceiling(axis.Categories.Count / (pixels / 40.0));
            for (int i = 0; i < axis.Categories.Count; i += Math.Max(1, stride)) yield return (i, axis.Categories[i]);
            yield break;
        }
        bool decades = axis.Log && Math.Floor(hi) - Math.Ceiling(lo) >= 1;   // at least two whole decades to label
        double step = decades ? Math.Max(1, NiceStep(hi - lo, count)) : NiceStep(axis.Log ? Math.Pow(10, hi) - Math.Pow(10, lo) : hi - lo, count);
        if (!double.IsFinite(step) || step <= 0) yield break;
        double from = axis.Log && !decades ? Math.Pow(10, lo) : lo, to = axis.Log && !decades ? Math.Pow(10, hi) : hi;
        double first = Math.Ceiling(from / step) * step;
        for (int k = 0; k < 100; k++)   // bounded: a step lost in rounding would loop forever
        {
            double v = first + k * step;
            if (v > to + step * 1e-9) break;
            if (decades) yield return (v, Label(Math.Pow(10, v), Math.Pow(10, v)));
            else if (!axis.Log) yield return (v, Label(Math.Abs(v) < step * 1e-9 ? 0 : v, step));
            else if (v > 0) yield return (Math.Log10(v), Label(v, step));
        }
    }

    static SKPaint Stroke(SKColor color, float width, float[]? dash = null) => new()
    {
        Color = color, StrokeWidth = width, IsStroke = true, IsAntialias = true,
        PathEffect = dash is null ? null : SKPathEffect.CreateDash(dash, 0),
    };

    static void DrawAxes(SKCanvas canvas, StaticPanel p, string xTitle, string yTitle)
    {
        using var grid = Stroke(GridLine, 1);
        using var ink = Stroke(Ink, 1);
        var a = p.Area;
        foreach (var (units, label) in Ticks(p.X, a.Width))
        {
            float x = a.Left + (float)(p.X.UnitFraction(units) * a.Width);
            canvas.DrawLine(x, a.Top, x, a.Bottom, grid);
            ChartText.Draw(canvas, label, x, a.Bottom + 16, 11, Ink, SKTextAlign.Center);
        }
        foreach (var (units, label) in Ticks(p.Y, a.Height))
        {
            float y = a.Bottom - (float)(p.Y.UnitFraction(units) * a.Height);
            canvas.DrawLine(a.Left, y, a.Right, y, grid);
            ChartText.Draw(canvas, label, a.Left - 6, y, 11, Ink, SKTextAlign.Right, middle: true);
        }
        canvas.DrawLine(a.Left, a.Bottom, a.Right, a.Bottom, ink);
        canvas.DrawLine(a.Left, a.Top, a.Left, a.Bottom, ink);
        ChartText.Draw(canvas, xTitle, a.MidX, a.Bottom + 38, 13, Ink, SKTextAlign.Center);
        canvas.Save();
        canvas.RotateDegrees(-90, a.Left - 48, a.MidY);
        ChartText.Draw(canvas, yTitle, a.Left - 48, a.MidY, 13, Ink, SKTextAlign.Center, middle: true);
        canvas.Restore();
    }

    static void DrawErrors(SKCanvas canvas, StaticPanel p, Trace t, double[] xs)
    {
        if (t.Plus is null) return;
        using var paint = Stroke(t.ErrorColor, 2);
        for (int i = 0; i < Math.Min(xs.Length, t.Y.Length); i++)
        {
            double plus = i < t.Plus.Length ? t.Plus[i] : double.NaN, minus = t.Minus is not null && i < t.Minus.Length ? t.Minus[i] : plus;
            var top = p.DataToPixel(xs[i], t.Y[i] + plus);
            var bottom = p.DataToPixel(xs[i], t.Y[i] - minus);
            if (!float.IsFinite(top.X) || !float.IsFinite(top.Y)) continue;
            if (!float.IsFinite(bottom.Y)) bottom.Y = p.Area.Bottom;   // y − error ≤ 0 on a log axis
            canvas.DrawLine(top, bottom, paint);
            canvas.DrawLine(top.X - t.ErrorWidth, top.Y, top.X + t.ErrorWidth, top.Y, paint);
            canvas.DrawLine(top.X - t.ErrorWidth, bottom.Y, top.X + t.ErrorWidth, bottom.Y, paint);
        }
    }

    static void DrawScatter(SKCanvas canvas, StaticPanel p, Trace t, double[] xs)
    {
        var points = t.Y.Take(xs.Length).Select((y, i) => p.DataToPixel(xs[i], y)).ToArray();
        static bool Finite(SKPoint q) => float.IsFinite(q.X) && float.IsFinite(q.Y);
        if (t.Lines)
        {
            using var path = new SKPathBuilder();
            for (int i = 0; i < points.Length; i++)   // a missing point breaks the line
                if (Finite(points[i]))
                    if (i > 0 && Finite(points[i - 1])) path.LineTo(points[i]); else path.MoveTo(points[i]);
            using var paint = Stroke(t.LineColor, t.LineWidth, t.Dash);
            using var drawn = path.Detach();
            canvas.DrawPath(drawn, paint);
        }
        DrawErrors(canvas, p, t, xs);
        if (!t.Markers) return;
        using var fill = new SKPaint { Color = t.MarkerColor, IsAntialias = true };
        foreach (var q in points.Where(Finite)) canvas.DrawCircle(q, t.MarkerSize / 2, fill);
    }

    /// <summary>Bar traces of one panel share each x slot side by side (Plotly's barmode 'group').</summary>
    static void DrawBars(SKCanvas canvas, StaticPanel p, Trace t, double[] xs, int slot, int slots)
    {
        double spacing = Spacing(xs), width = 0.8 * spacing / slots;
        float baseline = p.Y.Log ? p.Area.Bottom : Math.Clamp(p.DataToPixel(0, 0).Y, p.Area.Top, p.Area.Bottom);
        using var fill = new SKPaint { Color = t.MarkerColor, IsAntialias = true };
        var centres = xs.Select(x => x - 0.4 * spacing + (slot + 0.5) * width).ToArray();
        for (int i = 0; i < Math.Min(xs.Length, t.Y.Length); i++)
        {
            SKPoint left = p.DataToPixel(centres[i] - width / 2, t.Y[i]), right = p.DataToPixel(centres[i] + width / 2, t.Y[i]);
            if (float.IsFinite(left.X) && float.IsFinite(left.Y)) canvas.DrawRect(SKRect.Create(left.X, Math.Min(left.Y, baseline), right.X - left.X, Math.Abs(baseline - left.Y)), fill);
        }
        DrawErrors(canvas, p, t, centres);
    }

    /// <summary>An axis's [start, end] on the paper: its domain if given, else its cell of layout.grid (rows top to bottom).</summary>
    static (double, double) Domain(JsonNode? style, JsonNode? grid, string axis, bool isX)
    {
        var given = Arr(At(style, "domain")).Select(Num).ToArray();
        if (given.Length == 2 && given.All(double.IsFinite)) return (given[0], given[1]);
        int cols = Math.Max(1, (int)Or(Num(At(grid, "columns")), 1)), n = isX ? cols : Math.Max(1, (int)Or(Num(At(grid, "rows")), 1));
        int cell = (int.TryParse(axis.AsSpan(1), out var k) ? k : 1) - 1;
        int i = Math.Clamp(Str(At(grid, "pattern")) == "coupled" ? cell : isX ? cell % cols : cell / cols, 0, n - 1);
        if (!isX && Str(At(grid, "roworder")) == "bottom to top") i = n - 1 - i;
        double gap = Or(Num(At(grid, isX ? "xgap" : "ygap")), isX ? 0.2 : 0.3), size = 1 / (n + (n - 1) * gap), start = i * size * (1 + gap);
        return isX ? (start, start + size) : (1 - start - size, 1 - start);
    }

    static string AxisKey(string axis) => axis.Length > 0 ? axis[..1] + "axis" + axis[1..] : axis;   // "x2" → "xaxis2"

    /// <summary>Draws the figure JSON (keys data and layout); width and height 0 take the layout's, else 700×420.</summary>
    public static StaticChartImage Render(string figureJson, int width = 0, int height = 0)
    {
        var root = JsonNode.Parse(figureJson);
        var layout = At(root, "layout");
        int w = width > 0 ? width : (int)Or(Num(At(layout, "width")), 700), h = height > 0 ? height : (int)Or(Num(At(layout, "height")), 420);
        // The layout's colorway, else its template's (Plotly.NET's default template sets one), so colours match the live chart.
        var custom = Arr(At(layout, "colorway") ?? At(At(At(layout, "template"), "layout"), "colorway")).Select(Str).OfType<string>().ToArray();
        var traces = Arr(At(root, "data")).Select((t, i) => ReadTrace(t, i, custom.Length > 0 ? custom : Colorway)).ToList();
        var legend = (Bool(At(layout, "showlegend")) ?? traces.Count > 1) ? traces.Where(t => t.InLegend).ToList() : [];
        float legendWidth = legend.Count == 0 ? 0 : legend.Max(t => ChartText.Width(t.Name, 12)) + 50;
        var title = Title(At(layout, "title"));
        var notes = Arr(At(layout, "annotations")).Where(a => Str(At(a, "xref")) == "paper" && Str(At(a, "yref")) == "paper").ToList();
        float top = 25 + (title.Length > 0 ? 35 : 0) + (notes.Count > 0 ? 22 : 0);
        var region = new SKRect(75, top, Math.Max(85, w - 25 - legendWidth), Math.Max(top + 10, h - 55));

        using var bitmap = new SKBitmap(w, h, SKColorType.Rgba8888, SKAlphaType.Premul);
        using var canvas = new SKCanvas(bitmap);
        canvas.Clear(SKColors.White);
        var panels = new List<StaticPanel>();
        foreach (var (xRef, yRef) in traces.Select(t => (t.XRef, t.YRef)).Distinct().DefaultIfEmpty(("x", "y")))
        {
            JsonNode? xStyle = At(layout, AxisKey(xRef)), yStyle = At(layout, AxisKey(yRef)), grid = At(layout, "grid");
            var ((x0, x1), (y0, y1)) = (Domain(xStyle, grid, xRef, true), Domain(yStyle, grid, yRef, false));
            var area = new SKRect(region.Left + (float)x0 * region.Width, region.Bottom - (float)y1 * region.Height,
                region.Left + (float)x1 * region.Width, region.Bottom - (float)y0 * region.Height);
            var panel = new StaticPanel(area, BuildAxis(xRef, xStyle, traces.Where(t => t.Drawn && t.XRef == xRef).ToList(), true),
                BuildAxis(yRef, yStyle, traces.Where(t => t.Drawn && t.YRef == yRef).ToList(), false));
            panels.Add(panel);
            DrawAxes(canvas, panel, Title(At(xStyle, "title")), Title(At(yStyle, "title")));
            var mine = traces.Where(t => t.XRef == xRef && t.YRef == yRef).ToList();
            var bars = mine.Where(t => t.Type == "bar").ToList();
            canvas.Save();
            canvas.ClipRect(area);
            foreach (var t in mine.Where(t => t.Drawn))
            {
                var xs = Positions(panel.X, t);
                if (t.Type == "bar") DrawBars(canvas, panel, t, xs, bars.IndexOf(t), bars.Count); else DrawScatter(canvas, panel, t, xs);
            }
            canvas.Restore();
            var skipped = mine.Where(t => !t.Drawn).Select(t => t.Type).Distinct().ToList();
            if (skipped.Count > 0)
                ChartText.Draw(canvas, $"(static preview: {string.Join(", ", skipped)} traces not drawn)", area.MidX, area.MidY, 12, Ink, SKTextAlign.Center, middle: true);
        }

        if (title.Length > 0) ChartText.Draw(canvas, title, w / 2f, 30, 17, Ink, SKTextAlign.Center);
        foreach (var note in notes)   // subplot titles: paper coordinates, anchored at the bottom by default
            ChartText.Draw(canvas, Title(At(note, "text")), region.Left + (float)Or(Num(At(note, "x")), 0.5) * region.Width,
                region.Bottom - (float)Or(Num(At(note, "y")), 1) * region.Height - 6, 14, Ink, SKTextAlign.Center);
        for (int i = 0; i < legend.Count; i++)
        {
            var t = legend[i];
            float x = region.Right + 15, y = region.Top + 10 + 20 * i;
            using var paint = Stroke(t.LineColor, t.LineWidth, t.Dash);
            using var fill = new SKPaint { Color = t.MarkerColor, IsAntialias = true };
            if (!t.Drawn || t.Type == "bar") canvas.DrawRect(x + 6, y - 6, 12, 12, fill);
            if (t.Drawn && t.Type != "bar" && t.Lines) canvas.DrawLine(x, y, x + 24, y, paint);
            if (t.Drawn && t.Type != "bar" && t.Markers) canvas.DrawCircle(x + 12, y, t.MarkerSize / 2, fill);
            ChartText.Draw(canvas, t.Name, x + 32, y, 12, Ink, middle: true);
        }
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        return new StaticChartImage(data.ToArray(), w, h, panels);
    }

    /// <summary>Draws a chart; width and height 0 take the layout's, else 700×420.</summary>
    public static StaticChartImage Render(GenericChart chart, int width = 0, int height = 0) =>
        Render(GenericChart.toFigureJson(chart), width, height);

    /// <summary>The chart as PNG bytes (see <see cref="Render(GenericChart, int, int)"/>).</summary>
    public static byte[] Png(GenericChart chart, int width = 0, int height = 0) => Render(chart, width, height).Png;
}
