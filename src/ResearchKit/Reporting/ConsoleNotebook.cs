using System.Reflection;
using Deedle;
using Plotly.NET;
using TorchSharp;

namespace ResearchKit.Reporting;

/// <summary>
/// The notebook globals of a notebook exported as a program (`researchkit notebook export NB.ipynb --to cs`, whose file
/// starts with <c>using static ResearchKit.Reporting.ConsoleNotebook;</c>): what a cell would have shown is written to
/// standard output as text, and charts and image grids go to PNG files under <see cref="OutputFolder"/>.
/// </summary>
public static class ConsoleNotebook
{
    static int pictures;

    /// <summary>Where charts and images are written: out/APP/ under the working folder (APP is the program's name).</summary>
    public static string OutputFolder { get; set; } =
        Path.Combine("out", Assembly.GetEntryAssembly()?.GetName().Name ?? "notebook");

    /// <summary>The notebook's <c>Cancel</c>: Ctrl+C (see <see cref="ConsoleNotebookHost"/>).</summary>
    public static CancellationToken Cancel => Notebook.Cancel;

    /// <summary>The notebook's <c>Progress(title)</c>: lines on standard error.</summary>
    public static NotebookProgress Progress(string title) => Notebook.Progress(title);

    /// <summary>The folder the notebook's relative paths start from (the exported program sets it as the working folder).</summary>
    public static string NotebookDirectory => Directory.GetCurrentDirectory();

    /// <summary>What a cell shows: <c>display(x)</c>, .NET Interactive's <c>x.Display()</c>, and a cell's last expression.</summary>
    public static void display(object? value, params string[] mimeTypes) => Show(value, Console.Out);

    /// <inheritdoc cref="display"/>
    public static void Display(this object? value, params string[] mimeTypes) => Show(value, Console.Out);

    /// <summary>.NET Interactive's HTML helper: a program has nowhere to render markup, so it is shown as written.</summary>
    public static string HTML(string markup) => markup;

    /// <summary>Writes a value as a program can show it; pictures become files named on their own line.</summary>
    public static void Show(object? value, TextWriter output)
    {
        switch (value)
        {
            case null:
                return;
            case string text:
                output.WriteLine(text);
                return;
            case Markdown markdown:
                output.WriteLine(markdown.Content);
                return;
            case GenericChart chart:
                output.WriteLine($"chart: {SavePicture(StaticChart.Render(GenericChart.toFigureJson(chart)).Png, "chart")}");
                return;
            case ImageGrid grid:
                output.WriteLine($"{grid}: {SavePicture(grid.Png, "images")}");
                return;
            case torch.Tensor tensor:
                // The notebook's text form, and a small tensor's values as its HTML shows them (not the HTML's statistics).
                output.WriteLine(MimeBundles.TensorText(tensor));
                if (MimeBundles.TensorValues(tensor) is { } values) output.WriteLine(values);
                return;
            case Frame<int, string> frame:
                output.Write(MimeBundles.FrameText(frame));
                return;
            default:
                output.WriteLine(value);
                return;
        }
    }

    static string SavePicture(byte[] png, string kind)
    {
        Directory.CreateDirectory(OutputFolder);
        var path = Path.Combine(OutputFolder, $"{kind}-{Interlocked.Increment(ref pictures)}.png");
        AtomicFile.Write(path, s => s.Write(png));
        return path;
    }
}
