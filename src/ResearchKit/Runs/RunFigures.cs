using ResearchKit.Data;
using ResearchKit.Methods;
using static TorchSharp.torch;

namespace ResearchKit.Runs;

/// <summary>
/// The figures a run's method declares (<see cref="MethodInfo.Figures"/>), drawn from its weights: what `researchkit show
/// RUN --what NAME` saves as a PNG, for a notebook to show with <see cref="Reporting.ImageGrid.FromRows"/>.
/// </summary>
public static class RunFigures
{
    /// <summary>Draws figure <paramref name="name"/> of <paramref name="model"/> on the run's first test images, with the
    /// figure's <paramref name="options"/> by name ("--temperature" → "0.9"; unset: its defaults).</summary>
    public static Figure Draw(IPretrainModel model, RunConfig run, string name, int count = 8, int seed = 0,
        IReadOnlyDictionary<string, string>? options = null)
    {
        if (count <= 0) throw new ResearchKitException($"figure {name}: count must be positive; got {count}");
        var figure = MethodRegistry.Of(run.Method).Figure(name);
        using var generator = new Generator((ulong)seed);
        model.Module.eval();
        using (no_grad())
            return figure.Draw(new FigureRequest(model, run, n => TestImages(run, n), count, generator,
                new OptionValues(figure.Options, options ?? new Dictionary<string, string>())));
    }

    /// <summary>The run's first <paramref name="n"/> test images, normalised as it was trained, on the compute device.</summary>
    public static Tensor TestImages(RunConfig run, int n)
    {
        using var data = DatasetCatalog.Load(run.Dataset, 1, n);
        return run.Normalization.Apply(data.Test.Images, Compute.Device);
    }
}
