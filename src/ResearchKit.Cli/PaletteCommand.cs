using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using ResearchKit.Data;
using ResearchKit.Reporting;
using ResearchKit.Runs;
using ResearchKit.Tokenizers;
using static TorchSharp.torch;

namespace ResearchKit.Cli;

/// <summary>`palette fit|info|bench`: iGPT's colour tokenizer, fitted once and shared by runs (samples and completions: `show`).</summary>
static class PaletteCommand
{
    static Option<int> SizeOption() => new("--size") { Description = "side the images are down-sampled to before clustering (the iGPT run's --resolution; tiny preset: 14)", DefaultValueFactory = _ => 14 };
    static Option<int> ImagesOption() => new("--images") { Description = "training images whose pixels are clustered", DefaultValueFactory = _ => ColorPalette.DefaultFitImages };
    static Option<int> InitsOption() => new("--inits") { Description = "k-means++ seedings run to convergence, the best kept (scikit-learn's n_init)", DefaultValueFactory = _ => ColorPalette.DefaultInits };

    public static Command Palette()
    {
        var command = new Command("palette", "iGPT's colour palette: k-means over pixel colours, one token per pixel");
        command.Subcommands.Add(Fit());
        command.Subcommands.Add(Info());
        command.Subcommands.Add(Bench());
        return command;
    }

    static Command Fit()
    {
        var dataset = Commands.DatasetOption();
        var k = new Option<int>("--k") { Description = "colours (paper: 512 for RGB; tiny preset: 16 grey levels)", Required = true };
        var size = SizeOption();
        var images = ImagesOption();
        var inits = InitsOption();
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 0 };
        var outFile = new Option<string>("--out") { Description = "palette file (JSON); pass it to `pretrain --method igpt --palette FILE`", Required = true };
        var command = new Command("fit", "Fit a palette on a sample of training pixels (k-means, k-means++ seeding)") { dataset, k, size, images, inits, seed, outFile };
        command.SetAction(r =>
        {
            var path = OutputPath.File(r.GetValue(outFile)!);   // before the fit: a folder here would lose its work
            var (palette, _) = FitOn(r.GetValue(dataset)!, r.GetValue(k), r.GetValue(size), r.GetValue(images), r.GetValue(seed), r.GetValue(inits));
            palette.Save(path);
            var f = palette.Fit!;
            Console.WriteLine($"fitted {palette.K} colours to {f.Pixels} pixels ({f.DistinctColors} distinct) of {f.Images} {f.Dataset} images at {f.Resolution}×{f.Resolution} " +
                $"in {f.Seconds:F2} s: {f.Iterations} iterations, quantisation PSNR {f.Psnr:F1} dB; saved to {path}");
            return 0;
        });
        return command;
    }

    /// <summary>The first <paramref name="images"/> training images' pixels, down-sampled: [N, C] in [0, 1], and the palette fitted to them.</summary>
    static (ColorPalette Palette, Tensor Pixels) FitOn(string dataset, int k, int size, int images, int seed, int inits)
    {
        Commands.Positive("--images", images);
        using var data = DatasetCatalog.Load(dataset, images, 1);
        if (size < 1 || size > data.Train.Height) throw new ResearchKitException($"--size: expected 1 … {data.Train.Height} (the image side); got {size}");
        var pixels = ColorPalette.PixelsAt(data.Train.Images, size);
        return (ColorPalette.FitPixels(pixels, k, seed, inits).FittedOn(dataset, size, (int)data.Train.Count), pixels);
    }

    static Command Info()
    {
        var file = new Argument<string>("file") { Description = "palette file written by `palette fit`" };
        var json = new Option<bool>("--json");
        var command = new Command("info", "A palette's colours and how it was fitted") { file, json };
        command.SetAction(r =>
        {
            var palette = ColorPalette.Load(r.GetValue(file)!);
            var f = palette.Fit;
            if (r.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new { k = palette.K, channels = palette.Channels, colors = palette.ColorRows(), fit = f },
                    new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.CamelCase }));
                return 0;
            }
            Console.WriteLine($"{palette.K} colours × {palette.Channels} channel{(palette.Channels == 1 ? "" : "s")}");
            if (f is not null)
                Console.WriteLine($"fitted on {f.Pixels} pixels ({f.DistinctColors} distinct) of {f.Images} {f.Dataset} images at {f.Resolution}×{f.Resolution}, seed {f.Seed}: " +
                    $"inertia {f.Inertia:G6} (best of {f.Inits} seedings), {f.Iterations} iterations, {f.Seconds:F2} s, quantisation PSNR {f.Psnr:F1} dB");
            Console.WriteLine("colours (0 … 255):");
            foreach (var (row, i) in palette.ColorRows().Select((row, i) => (row, i)))
                Console.WriteLine($"{i,5}  {string.Join(" ", row.Select(v => $"{v * 255,5:F1}"))}");
            return 0;
        });
        return command;
    }

    /// <summary>scikit-learn's KMeans on the same pixels, timed around fit() only; prints one JSON line.</summary>
    const string SklearnScript = """
        import json, sys, time
        import numpy as np
        from sklearn.cluster import KMeans
        path, n, c, k, seed, repeats, inits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
        x = np.fromfile(path, dtype=np.float32).reshape(n, c)
        times, fit = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            fit = KMeans(n_clusters=k, init="k-means++", n_init=inits, max_iter=300, tol=1e-4, random_state=seed, algorithm="lloyd").fit(x)
            times.append(time.perf_counter() - start)
        import sklearn
        print(json.dumps({"seconds": sorted(times)[len(times) // 2], "inertia": float(fit.inertia_), "iterations": int(fit.n_iter_), "version": sklearn.__version__}))
        """;

    static Command Bench()
    {
        var dataset = Commands.DatasetOption();
        var k = new Option<int>("--k") { DefaultValueFactory = _ => 16 };
        var size = SizeOption();
        var images = ImagesOption();
        var inits = InitsOption();
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 0 };
        var repeats = new Option<int>("--repeats") { Description = "fits per implementation; the median time is reported", DefaultValueFactory = _ => 5 };
        var python = new Option<string>("--python") { Description = "Python with scikit-learn (Debian: python3-sklearn)", DefaultValueFactory = _ => "/usr/bin/python3" };
        var json = new Option<bool>("--json");
        var command = new Command("bench", "Fit the same pixels with ours and with scikit-learn's KMeans; print both times and inertias")
            { dataset, k, size, images, inits, seed, repeats, python, json };
        command.SetAction(r =>
        {
            int n = r.GetValue(repeats);
            Commands.Positive("--repeats", n);
            var (first, pixels) = FitOn(r.GetValue(dataset)!, r.GetValue(k), r.GetValue(size), r.GetValue(images), r.GetValue(seed), r.GetValue(inits));
            var times = new List<double>();
            ColorPalette ours = first;
            for (int i = 0; i < n; i++)
            {
                var clock = Stopwatch.StartNew();
                ours = ColorPalette.FitPixels(pixels, r.GetValue(k), r.GetValue(seed), r.GetValue(inits));
                times.Add(clock.Elapsed.TotalSeconds);
            }
            double ourSeconds = times.Order().ElementAt(times.Count / 2);
            var reference = Sklearn(r.GetValue(python)!, pixels, r.GetValue(k), r.GetValue(seed), n, r.GetValue(inits));
            double theirInertia = reference["inertia"]!.GetValue<double>(), theirSeconds = reference["seconds"]!.GetValue<double>();
            var f = ours.Fit!;
            var result = new
            {
                dataset = r.GetValue(dataset), k = r.GetValue(k), size = r.GetValue(size), pixels = f.Pixels, distinct_colors = f.DistinctColors, inits = f.Inits, repeats = n,
                researchkit = new { seconds = Math.Round(ourSeconds, 4), inertia = f.Inertia, iterations = f.Iterations },
                sklearn = new { seconds = Math.Round(theirSeconds, 4), inertia = theirInertia, iterations = reference["iterations"]!.GetValue<int>(), version = reference["version"]!.GetValue<string>() },
                speedup = Math.Round(theirSeconds / ourSeconds, 2),
                inertia_ratio = Math.Round(f.Inertia / theirInertia, 5),
            };
            if (r.GetValue(json)) Console.WriteLine(JsonSerializer.Serialize(result));
            else
            {
                Console.WriteLine($"{f.Pixels} pixels ({f.DistinctColors} distinct) of {r.GetValue(images)} {r.GetValue(dataset)} images at {r.GetValue(size)}², k = {r.GetValue(k)}, best of {f.Inits} seedings each, median of {n} fits");
                Console.WriteLine($"{"",14} {"seconds",10} {"inertia",14} {"iterations",10}");
                Console.WriteLine($"{"researchkit",14} {ourSeconds,10:F4} {f.Inertia,14:G8} {f.Iterations,10}");
                Console.WriteLine($"{"scikit-learn",14} {theirSeconds,10:F4} {theirInertia,14:G8} {reference["iterations"],10}   ({reference["version"]})");
                Console.WriteLine($"ours is {result.speedup:F2}× as fast, at {result.inertia_ratio:F5} of scikit-learn's inertia");
            }
            return 0;
        });
        return command;
    }

    static JsonNode Sklearn(string python, Tensor pixels, int k, int seed, int repeats, int inits)
    {
        var folder = Directory.CreateTempSubdirectory("palette-bench");
        try
        {
            var data = Path.Combine(folder.FullName, "pixels.f32");
            var script = Path.Combine(folder.FullName, "kmeans.py");
            File.WriteAllBytes(data, pixels.contiguous().bytes.ToArray());
            File.WriteAllText(script, SklearnScript);
            var start = new ProcessStartInfo(python, [script, data, pixels.shape[0].ToString(), pixels.shape[1].ToString(), k.ToString(), seed.ToString(), repeats.ToString(), inits.ToString()])
                { RedirectStandardOutput = true, RedirectStandardError = true };
            Process process;
            try { process = Process.Start(start)!; }
            catch (System.ComponentModel.Win32Exception) { throw new ResearchKitException($"--python: {python} not found; install Debian's python3-sklearn or pass --python PATH"); }
            var stderr = process.StandardError.ReadToEndAsync();
            var stdout = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                var last = stderr.Result.Trim().Split('\n').LastOrDefault() ?? "";
                throw new ResearchKitException(last.Contains("No module named 'sklearn'")
                    ? $"--python: {python} has no scikit-learn; install Debian's python3-sklearn"
                    : $"scikit-learn's KMeans failed: {last}");
            }
            return JsonNode.Parse(stdout.Trim().Split('\n')[^1])!;
        }
        finally { folder.Delete(recursive: true); }
    }
}
