using ResearchKit.Reporting;
using ResearchKit.Training;
using SkiaSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

public class ReportingTests
{
    sealed record Config(double Ratio, int Epochs);
    sealed record Result(double Accuracy, double[] ByLayer);

    [Fact]
    public void Sweep_caches_finished_runs_and_resumes_after_an_interruption()
    {
        var folder = TestData.TempDir();
        var configs = new[] { new Config(0.25, 1), new Config(0.5, 1), new Config(0.75, 1) };
        var calls = new List<double>();
        Result Work(Config c, string dir)
        {
            calls.Add(c.Ratio);
            if (c.Ratio == 0.5 && calls.Count(r => r == 0.5) == 1) throw new InvalidOperationException("interrupted");
            return new Result(c.Ratio + 0.1, [c.Ratio, 2 * c.Ratio]);
        }
        Assert.Throws<InvalidOperationException>(() => Sweep.Run(folder, configs, Work));
        Assert.Single(Directory.GetFiles(folder, "*.json"));                     // the first finished, nothing half-written
        var entries = Sweep.Run(folder, configs, Work);
        Assert.Equal(new[] { 0.25, 0.5, 0.5, 0.75 }, calls);                       // 0.25 was not run again
        Assert.Equal(new[] { 0.35, 0.6, 0.85 }, entries.Select(e => e.Result.Accuracy));
        Sweep.Run(folder, configs, Work);
        Assert.Equal(4, calls.Count);                                              // all cached now
        Assert.Empty(Directory.GetFiles(folder, "*.tmp"));

        var frame = Sweep.ToFrame(entries);
        Assert.Equal(3, frame.RowCount);
        Assert.Equal(new[] { 0.5, 1.0, 1.5 }, frame.GetColumn<double>("byLayer[1]").Values);
        Assert.Equal(new[] { 0.25, 0.5, 0.75 }, frame.GetColumn<double>("ratio").Values);
    }

    [Fact]
    public void Seeded_sweeps_group_runs_by_configuration_and_charts_draw_their_spread_as_error_bars()
    {
        var folder = TestData.TempDir();
        var groups = Sweep.RunSeeds(folder, new[] { new Config(0.25, 1), new Config(0.75, 1) }, [0, 1, 2],
            (c, seed) => c with { Epochs = 10 + seed }, (c, _) => new Result(c.Ratio + c.Epochs / 100.0, []));
        Assert.Equal(2, groups.Count);
        Assert.Equal(new[] { 10, 11, 12 }, groups[1].Runs.Select(r => r.Config.Epochs));
        var stats = groups[1].Stats(r => r.Accuracy);                           // 0.75 + 0.10, 0.11, 0.12
        Assert.Equal(0.86, stats.Mean, 12);
        Assert.Equal(0.01, stats.Std, 12);
        Assert.Equal(6, Directory.GetFiles(folder, "*.json").Length);            // one cached result per configuration and seed

        var chart = Charts.Ablation("t", "x", "y", [ChartSeries.FromSeeds("ours", [0.25, 0.75], groups.Select(g => g.Stats(r => r.Accuracy)).ToArray())]);
        var trace = System.Text.Json.JsonDocument.Parse(Plotly.NET.GenericChart.toFigureJson(chart)).RootElement.GetProperty("data")[0];
        var error = trace.GetProperty("error_y");
        Assert.Equal("data", error.GetProperty("type").GetString());
        Assert.Equal(new[] { 1.0, 1.0 }, error.GetProperty("array").EnumerateArray().Select(e => Math.Round(e.GetDouble(), 9)));   // 100 × std
        Assert.Equal(new[] { 36.0, 86.0 }, trace.GetProperty("y").EnumerateArray().Select(e => Math.Round(e.GetDouble(), 9)));
    }

    [Fact]
    public void A_cached_result_that_is_not_the_configuration_asked_for_is_refused_naming_the_file()
    {
        var folder = TestData.TempDir();
        var configs = new[] { new Config(0.25, 1), new Config(0.75, 1) };
        int runs = 0;
        Result Work(Config c, string _) { runs++; return new Result(c.Ratio, []); }
        Sweep.Run(folder, configs, Work);
        string PathOf(Config c) => Path.Combine(folder, Sweep.Key(c) + ".json");
        string original = File.ReadAllText(PathOf(configs[0]));

        // Another configuration's result copied over this one (the report then showed 0.75 twice).
        File.Copy(PathOf(configs[1]), PathOf(configs[0]), overwrite: true);
        var e = Assert.Throws<ResearchKit.Data.DataFormatException>(() => Sweep.Run(folder, configs, Work));
        Assert.Contains(PathOf(configs[0]), e.Message);
        Assert.Contains("holds the result of another configuration", e.Message);

        foreach (var (content, expected) in new[]
        {
            ("{}", "incomplete sweep result"),
            (original[..(original.Length / 2)], "not a readable sweep result"),
            (original.Replace("\"schema\": 2", "\"schema\": 1"), "a sweep result of format 1"),
        })
        {
            File.WriteAllText(PathOf(configs[0]), content);
            e = Assert.Throws<ResearchKit.Data.DataFormatException>(() => Sweep.Run(folder, configs, Work));
            Assert.Contains(PathOf(configs[0]), e.Message);
            Assert.Contains(expected, e.Message);
            Assert.Contains("delete it to rerun", e.Message);
        }
        Assert.Equal(2, runs);                                                     // nothing was silently re-run or used
        File.Delete(PathOf(configs[0]));
        Assert.Equal(new[] { 0.25, 0.75 }, Sweep.Run(folder, configs, Work).Select(r => r.Result.Accuracy));
        Assert.Equal(3, runs);
    }

    [Fact]
    public async Task A_configuration_another_process_is_running_is_waited_for_not_trained_twice()
    {
        var folder = TestData.TempDir();
        var config = new Config(0.5, 1);
        var messages = new List<string>();
        var held = ResearchKit.Runs.RunLock.Acquire(Sweep.WorkFolder(folder, Sweep.Key(config)));
        var sweep = Task.Run(() => Sweep.Run(folder, [config], (c, _) => new Result(c.Ratio, []),
            new CallbackProgress<SweepProgress>(p => { lock (messages) messages.Add(p.Description); })));
        Thread.Sleep(1500);
        Assert.False(sweep.IsCompleted, "the sweep ran a configuration another process holds");
        lock (messages) Assert.Contains(messages, m => m.Contains("waiting: another process is running it"));
        held.Dispose();
        var entries = await sweep.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(0.5, entries.Single().Result.Accuracy);
    }

    [Fact]
    public void Sweep_keys_depend_on_every_field()
    {
        Assert.Equal(Sweep.Key(new Config(0.5, 1)), Sweep.Key(new Config(0.5, 1)));
        Assert.NotEqual(Sweep.Key(new Config(0.5, 1)), Sweep.Key(new Config(0.5, 2)));
        Assert.NotEqual(Sweep.Key(new Config(0.5, 1)), Sweep.Key(new Config(0.75, 1)));
    }

    [Fact]
    public void Image_grid_places_each_image_at_its_cell_and_scale()
    {
        var black = zeros(2, 3, 4, 4);
        var white = ones(1, 3, 4, 4);
        white[0, 0] = 0;   // cyan: no red
        var grid = ImageGrid.FromRows([("black", black), ("cyan", white)], scale: 2, gap: 1);
        using var bitmap = SKBitmap.Decode(grid.Png);
        int m = grid.LabelMargin;                                                        // row labels sit left of the images
        Assert.Equal((m + 2 * 9 + 1, 2 * 9 + 1), (bitmap.Width, bitmap.Height));
        Assert.Equal(new SKColor(0, 0, 0), bitmap.GetPixel(m + 1 + 9 + 3, 1 + 3));      // second black image
        Assert.Equal(new SKColor(0, 255, 255), bitmap.GetPixel(m + 1, 1 + 9));          // first row-2 image
        Assert.Equal(SKColors.White, bitmap.GetPixel(m + 1 + 9 + 3, 1 + 9 + 3));        // no second image in row 2: background
    }
}
