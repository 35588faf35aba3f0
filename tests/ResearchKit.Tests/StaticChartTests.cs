using Plotly.NET;
using Plotly.NET.CSharp;
using ResearchKit.Reporting;
using SkiaSharp;
using static TorchSharp.torch;
using Chart = Plotly.NET.CSharp.Chart;

namespace ResearchKit.Tests;

/// <summary>The static PNG of a chart, checked by decoding it: colours where the data are, none where they are not.</summary>
public class StaticChartTests
{
    // Plotly.NET's default template sets the colorway (#636efa, #ef553b, …); figure JSON without one gets plotly.js's (#1f77b4, …).
    static readonly SKColor Blue = SKColor.Parse("#636efa"), Orange = SKColor.Parse("#ef553b"), PlainBlue = SKColor.Parse("#1f77b4");

    // Antialiasing blends edges with white: a tolerance on the summed channel distance.
    static bool Near(SKColor a, SKColor b) => Math.Abs(a.Red - b.Red) + Math.Abs(a.Green - b.Green) + Math.Abs(a.Blue - b.Blue) <= 60;

    static bool ColorWithin(SKBitmap bitmap, SKPoint at, SKColor color, int radius = 3)
    {
        for (int dy = -radius; dy <= radius; dy++)
            for (int dx = -radius; dx <= radius; dx++)
            {
                int x = (int)MathF.Round(at.X) + dx, y = (int)MathF.Round(at.Y) + dy;
                if (x >= 0 && y >= 0 && x < bitmap.Width && y < bitmap.Height && Near(bitmap.GetPixel(x, y), color)) return true;
            }
        return false;
    }

    static int Count(SKBitmap bitmap, SKRectI area, Func<SKColor, bool> match)
    {
        int n = 0;
        for (int y = Math.Max(0, area.Top); y < Math.Min(bitmap.Height, area.Bottom); y++)
            for (int x = Math.Max(0, area.Left); x < Math.Min(bitmap.Width, area.Right); x++)
                if (match(bitmap.GetPixel(x, y))) n++;
        return n;
    }

    static SKRectI Box(StaticPanel p, double x0, double y0, double x1, double y1)
    {
        SKPoint a = p.DataToPixel(x0, y0), b = p.DataToPixel(x1, y1);
        return SKRectI.Round(new SKRect(Math.Min(a.X, b.X), Math.Min(a.Y, b.Y), Math.Max(a.X, b.X), Math.Max(a.Y, b.Y)));
    }

    static bool Dark(SKColor c) => c.Red + c.Green + c.Blue < 3 * 128;

    [Fact]
    public void StaticChart_line_is_drawn_through_its_points_on_a_white_background()
    {
        double[] x = [0, 1, 2, 3], y = [1, 4, 2, 3];
        var image = StaticChart.Render(Chart.Line<double, double, string>(x, y), 640, 400);
        using var bitmap = SKBitmap.Decode(image.Png);
        Assert.Equal((640, 400), (bitmap.Width, bitmap.Height));
        var panel = Assert.Single(image.Panels);
        for (int i = 0; i < x.Length; i++) Assert.True(ColorWithin(bitmap, panel.DataToPixel(x[i], y[i]), Blue), $"point {i}");
        Assert.True(ColorWithin(bitmap, panel.DataToPixel(0.5, 2.5), Blue));            // on the segment between points 0 and 1
        var away = Box(panel, 2.2, 3.5, 2.8, 4.0);                                      // the line runs at y 2.2–2.8 here
        Assert.Equal(0, Count(bitmap, away, c => Near(c, Blue)));
        Assert.True(Count(bitmap, away, c => c == SKColors.White) > 0.8 * away.Width * away.Height);
        Assert.Equal(SKColors.White, bitmap.GetPixel(2, 2));                            // figure corner
        using var layoutSized = SKBitmap.Decode(StaticChart.Png(Chart.Line<double, double, string>(x, y)));
        Assert.Equal((600, 600), (layoutSized.Width, layoutSized.Height));             // width 0: the layout's (Plotly.NET's default 600×600)
    }

    [Fact]
    public void StaticChart_error_bars_reach_y_plus_and_minus_the_error_and_no_further()
    {
        var chart = Charts.Ablation("t", "x", "acc", [new ChartSeries("ours", [1, 2, 3], [10, 20, 15], [1, 2, 1])]);
        var image = StaticChart.Render(chart, 700, 600);
        using var bitmap = SKBitmap.Decode(image.Png);
        var panel = Assert.Single(image.Panels);
        foreach (var y in new[] { 21.8, 18.2, 21.0, 19.0 }) Assert.True(ColorWithin(bitmap, panel.DataToPixel(2, y), Blue, 2), $"y {y}");
        foreach (var y in new[] { 22.4, 17.6 }) Assert.False(ColorWithin(bitmap, panel.DataToPixel(2, y), Blue, 2), $"y {y}");

        // Asymmetric: arrayminus with symmetric = false, from figure JSON.
        var json = """{"data":[{"type":"scatter","mode":"markers","x":[1,2,3],"y":[10,20,15],"error_y":{"array":[1,1,1],"arrayminus":[4,4,4],"symmetric":false}}],"layout":{}}""";
        var asym = StaticChart.Render(json, 700, 600);
        using var asymBitmap = SKBitmap.Decode(asym.Png);
        var p = Assert.Single(asym.Panels);
        Assert.True(ColorWithin(asymBitmap, p.DataToPixel(2, 16.3), PlainBlue, 2));
        Assert.False(ColorWithin(asymBitmap, p.DataToPixel(2, 21.6), PlainBlue, 2));
        Assert.False(ColorWithin(asymBitmap, p.DataToPixel(2, 15.4), PlainBlue, 2));
    }

    [Fact]
    public void StaticChart_ablation_with_paper_draws_each_panel_its_own_traces()
    {
        var chart = Charts.Ablation("Mask ratio", "ratio", "acc", [new ChartSeries("ours", [0.25, 0.5, 0.75], [40, 55, 50], [2, 3, 2])],
            [new ChartSeries("MAE", [0.25, 0.5, 0.75], [80, 84, 85])]);
        var image = StaticChart.Render(chart);
        using var bitmap = SKBitmap.Decode(image.Png);
        Assert.Equal((1000, 420), (bitmap.Width, bitmap.Height));                       // the chart's own size
        Assert.Equal(2, image.Panels.Count);
        var (left, right) = (image.Panels[0], image.Panels[1]);
        Assert.False(left.Area.IntersectsWith(right.Area));
        Assert.True(left.Area.Right < right.Area.Left);
        Assert.True(Count(bitmap, SKRectI.Round(left.Area), c => Near(c, Blue)) > 50);
        Assert.Equal(0, Count(bitmap, SKRectI.Round(left.Area), c => Near(c, Orange)));
        Assert.True(Count(bitmap, SKRectI.Round(right.Area), c => Near(c, Orange)) > 50);
        Assert.Equal(0, Count(bitmap, SKRectI.Round(right.Area), c => Near(c, Blue)));
        Assert.True(ColorWithin(bitmap, right.DataToPixel(0.5, 84), Orange));
        Assert.True(ColorWithin(bitmap, left.DataToPixel(0.5, 55), Blue));
        // Legend right of the panels: a sample of each trace's colour.
        var legend = SKRectI.Round(new SKRect(right.Area.Right, 0, bitmap.Width, bitmap.Height));
        Assert.True(Count(bitmap, legend, c => Near(c, Blue)) > 0 && Count(bitmap, legend, c => Near(c, Orange)) > 0);
        // Subplot titles sit above the panels: dark text in the band between the chart title and the panel tops.
        Assert.True(Count(bitmap, SKRectI.Round(new SKRect(left.Area.Left, left.Area.Top - 22, left.Area.Right, left.Area.Top - 2)), Dark) > 20);
    }

    [Fact]
    public void StaticChart_bars_on_a_categorical_axis_fill_from_zero_to_their_value()
    {
        var image = StaticChart.Render(Chart.Column<double, string, string>(new double[] { 3, 1, 2 }, new[] { "a", "b", "c" }), 600, 400);
        using var bitmap = SKBitmap.Decode(image.Png);
        var panel = Assert.Single(image.Panels);
        Assert.Equal(["a", "b", "c"], panel.X.Categories);
        Assert.Equal(0, panel.Y.Min);
        Assert.Equal(Blue, bitmap.GetPixel((int)panel.DataToPixel(0, 1.5).X, (int)panel.DataToPixel(0, 1.5).Y));
        Assert.Equal(Blue, bitmap.GetPixel((int)panel.DataToPixel(1, 0.5).X, (int)panel.DataToPixel(1, 0.5).Y));
        Assert.False(ColorWithin(bitmap, panel.DataToPixel(1, 1.5), Blue, 2));       // above bar b (height 1)
        Assert.False(ColorWithin(bitmap, panel.DataToPixel(0.5, 0.5), Blue, 2));     // the gap between bars a and b
        Assert.True(ColorWithin(bitmap, panel.DataToPixel(2, 1.9), Blue, 1));
        Assert.False(ColorWithin(bitmap, panel.DataToPixel(2, 2.2), Blue, 1));
    }

    [Fact]
    public void StaticChart_categorical_scatter_places_points_in_order_of_first_appearance()
    {
        var image = StaticChart.Render(Chart.Point<string, double, string>(new[] { "small", "base", "large" }, new double[] { 1, 2, 3 }), 600, 400);
        using var bitmap = SKBitmap.Decode(image.Png);
        var panel = Assert.Single(image.Panels);
        Assert.Equal(["small", "base", "large"], panel.X.Categories);
        for (int i = 0; i < 3; i++) Assert.True(ColorWithin(bitmap, panel.DataToPixel(i, i + 1), Blue, 1));
        Assert.False(ColorWithin(bitmap, panel.DataToPixel(0, 3), Blue, 3));
    }

    [Fact]
    public void StaticChart_log_axis_puts_decades_equally_far_apart()
    {
        var chart = Chart.Line<double, double, string>([1, 2, 3], [10, 100, 1000]).WithYAxisStyle<double, double, string>(AxisType: StyleParam.AxisType.Log);
        var image = StaticChart.Render(chart, 600, 400);
        using var bitmap = SKBitmap.Decode(image.Png);
        var panel = Assert.Single(image.Panels);
        Assert.True(panel.Y.Log);
        float y10 = panel.DataToPixel(1, 10).Y, y100 = panel.DataToPixel(1, 100).Y, y1000 = panel.DataToPixel(1, 1000).Y;
        Assert.True(y10 - y100 > 50);
        Assert.Equal(y10 - y100, y100 - y1000, 0.01);
        Assert.True(ColorWithin(bitmap, panel.DataToPixel(1.5, Math.Sqrt(10 * 100)), Blue));   // the line is straight in log space
        Assert.True(float.IsNaN(panel.DataToPixel(1, 0).Y));
    }

    [Fact]
    public void StaticChart_missing_points_break_the_line()
    {
        var image = StaticChart.Render(Chart.Line<double, double, string>([0, 1, 2, 3, 4], [1, 2, double.NaN, 3, 4]), 600, 400);
        using var bitmap = SKBitmap.Decode(image.Png);
        var panel = Assert.Single(image.Panels);
        Assert.True(ColorWithin(bitmap, panel.DataToPixel(0.5, 1.5), Blue));
        Assert.True(ColorWithin(bitmap, panel.DataToPixel(3.5, 3.5), Blue));
        Assert.False(ColorWithin(bitmap, panel.DataToPixel(2, 2.5), Blue));           // no line bridging the gap
    }

    [Fact]
    public void StaticChart_unsupported_traces_and_missing_fields_render_axes_and_a_note()
    {
        var heatmap = Chart.Heatmap<double, int, int, string>([[1.0, 2.0], [3.0, 4.0]]);
        var image = StaticChart.Render(heatmap, 500, 300);
        using var bitmap = SKBitmap.Decode(image.Png);
        Assert.Equal((500, 300), (bitmap.Width, bitmap.Height));
        var panel = Assert.Single(image.Panels);
        var inside = SKRectI.Round(panel.Area);
        inside.Inflate(-5, -5);                                                         // clear of the axis lines
        Assert.True(Count(bitmap, inside, Dark) > 50);                                  // the note "(static preview: heatmap traces not drawn)"
        Assert.NotEmpty(StaticChart.Png(heatmap));

        var odd = """{"data":[{"type":"sunburst"},{},{"type":"scatter","x":"oops","y":[1,null,"NaN",2],"marker":{"color":[1,2]}},{"type":"bar","orientation":"h","x":[1]}],"layout":{"title":5,"grid":{"rows":"two"},"xaxis":"x"}}""";
        using var decoded = SKBitmap.Decode(StaticChart.Render(odd).Png);
        Assert.Equal((700, 420), (decoded.Width, decoded.Height));
        using var empty = SKBitmap.Decode(StaticChart.Render("""{"data":[],"layout":{}}""").Png);
        Assert.Equal(700, empty.Width);
    }

    [Fact]
    public void StaticChart_image_grid_draws_row_labels_in_a_left_margin()
    {
        var white = ones(2, 1, 8, 8);
        int scale = 3, gap = 2, rowHeight = 8 * scale, cellH = rowHeight + gap, imagesWidth = 2 * (8 * scale + gap) + gap;
        var grid = ImageGrid.FromRows([("original", white), ("reconstruction", white), ("", white)], scale, gap);
        using var bitmap = SKBitmap.Decode(grid.Png);
        Assert.True(grid.LabelMargin > 40);                                            // "reconstruction" is wide
        Assert.Equal((grid.LabelMargin + imagesWidth, 3 * cellH + gap), (grid.Width, grid.Height));
        Assert.Equal((grid.Width, grid.Height), (bitmap.Width, bitmap.Height));
        SKRectI Margin(int row) => new(0, gap + row * cellH, grid.LabelMargin, gap + row * cellH + rowHeight);
        Assert.True(Count(bitmap, Margin(0), Dark) > 10);
        Assert.True(Count(bitmap, Margin(1), Dark) > 10);
        Assert.Equal(0, Count(bitmap, Margin(2), Dark));                               // empty label: nothing drawn
        Assert.Equal(0, Count(bitmap, new SKRectI(grid.LabelMargin, 0, grid.Width, grid.Height), Dark));   // images untouched by text

        var unlabelled = ImageGrid.FromRows([("", white), ("", white)], scale, gap);
        using var plain = SKBitmap.Decode(unlabelled.Png);
        Assert.Equal((0, imagesWidth), (unlabelled.LabelMargin, plain.Width));
        Assert.Equal(0, Count(plain, new SKRectI(0, 0, plain.Width, plain.Height), Dark));
    }
}
