using System.CommandLine;
using System.Diagnostics;
using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Reporting;
using ResearchKit.Runs;
using static TorchSharp.torch;

namespace ResearchKit.Cli;

/// <summary>
/// `show RUN --what NAME`: one of the figures the run's method declares (<see cref="MethodInfo.Figures"/>), drawn into a
/// PNG grid. The figure's own options follow the command's (`--temperature 0.9`); none of this names a method.
/// </summary>
static class ShowCommand
{
    public static Command Create()
    {
        var dir = new Argument<string>("run") { Description = "run folder written by pretrain" };
        var what = new Option<string?>("--what") { Description = "the figure to draw (without it: the figures the run's method draws, with their options)" };
        var count = new Option<int>("--n") { Description = "images, or test images, to show", DefaultValueFactory = _ => 8 };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 0 };
        var outFile = new Option<string?>("--out") { Description = "PNG file" };
        var device = Commands.DeviceOption();
        var precision = Commands.PrecisionOption();
        var command = new Command("show", "Draw a figure of a run (samples, reconstructions, completions… as its method declares) into a PNG grid")
            { dir, what, count, seed, outFile, device, precision };
        command.TreatUnmatchedTokensAsErrors = false;   // the figure's options, checked against its declaration below
        var snapshot = new Commands.SnapshotChoice(command);
        command.SetAction(r => Commands.Run(r.GetValue(device)!, r.GetValue(precision), () =>
        {
            var folder = r.GetValue(dir)!;
            if (r.GetValue(outFile) is { } target) OutputPath.File(target);   // before the model is loaded and drawn
            var info = MethodRegistry.Of(Pretraining.ReadConfig(folder).Method);
            if (r.GetValue(what) is not { } name)
            {
                if (r.UnmatchedTokens.Count > 0) throw new ResearchKitException($"--what: name a figure before its options; {Listing(info)}");
                Console.WriteLine(info.Figures.Count == 0 ? $"{info.Name} draws no figures" : Listing(info));
                return;
            }
            var figure = info.Figure(name);
            var given = CapabilityOptions($"{info.Name}'s {figure.Name}", figure.Options, r.UnmatchedTokens);
            int n = r.GetValue(count);
            Commands.Positive("--n", n);
            var path = r.GetValue(outFile) ?? throw new ResearchKitException("--out: a .png file is required");
            if (!path.EndsWith(".png", StringComparison.OrdinalIgnoreCase)) throw new ResearchKitException($"--out: expected a .png file; got '{path}'");
            var (config, model) = snapshot.Load(r, folder);
            var clock = Stopwatch.StartNew();
            var drawn = RunFigures.Draw(model, config, name, n, r.GetValue(seed), given);
            var grid = ImageGrid.FromRows(drawn.Rows, scale: 4);
            AtomicFile.Write(path, s => s.Write(grid.Png));
            Console.WriteLine($"{drawn.Caption} in {clock.Elapsed.TotalSeconds:F1} s; saved to {path}");
        }));
        return command;
    }

    static string Listing(MethodInfo info) => $"{info.Name} draws " + string.Join("; ", info.Figures.Select(f =>
        $"{f.Name} ({f.Description}{(f.Options.Count == 0 ? "" : "; options " + string.Join(", ", f.Options.Select(o => o.Name)))})"));

    /// <summary>A capability's options from the tokens the command did not know: `--name value` or `--name=value`, each
    /// declared by <paramref name="declared"/>; <paramref name="owner"/> names it in errors ("igpt's samples").</summary>
    internal static Dictionary<string, string> CapabilityOptions(string owner, IReadOnlyList<CapabilityOption> declared, IReadOnlyList<string> tokens)
    {
        var given = new Dictionary<string, string>();
        for (int i = 0; i < tokens.Count; i++)
        {
            var token = tokens[i];
            if (!token.StartsWith("--", StringComparison.Ordinal)) throw new ResearchKitException($"unexpected argument '{token}'");
            int split = token.IndexOfAny(['=', ':']);
            var name = split > 0 ? token[..split] : token;
            if (declared.All(o => o.Name != name))
                throw new ResearchKitException($"{owner} has no option {name}; its options: " +
                    (declared.Count == 0 ? "none" : string.Join(", ", declared.Select(o => o.Name))));
            var value = split > 0 ? token[(split + 1)..] : i + 1 < tokens.Count ? tokens[++i] : throw new ResearchKitException($"{name}: a value is required");
            given[name] = value;
        }
        return given;
    }
}
