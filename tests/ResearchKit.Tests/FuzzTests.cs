using System.Text.Json.Nodes;
using FsCheck;
using FsCheck.Fluent;
using ResearchKit.Methods;
using ResearchKit.Models;
using ResearchKit.Runs;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>
/// The fuzz tier (issue 22): property-based tests (FsCheck) over every command's numeric options and over config.json's
/// fields. The property: every input ends with exit 0 and a result, or exit 1–3 and a last line starting "error:"; never
/// an unhandled exception (exit 134), never a stack trace, never longer than a bounded time. Seeds are fixed, so a failure
/// replays; FsCheck shrinks it to the smallest failing input it can find.
/// </summary>
public class FuzzTests
{
    const ulong Seed = 22, Gamma = 1_000_003;

    /// <summary>How an option's values are drawn: sizes and counts, lengths of work (kept small when valid: a valid
    /// --epochs 2³¹ is a long run, not a fault), reals, and layer names.</summary>
    enum Kind { Count, Length, Real, Layer }

    static readonly string[] Junk = ["", " ", "abc", "1,5", "0x10", "1e3", "٣", "--", "9999999999999999999999"];
    static readonly string[] EdgeIntegers = ["-2147483648", "-1", "0", "1", "2", "3", "7", "2147483647", "-0"];
    static readonly string[] Reals = ["-1", "0", "1e-300", "0.5", "1", "1.5", "1e300", "NaN", "Infinity", "-Infinity", "-0"];

    static Gen<string> Values(Kind kind) => kind switch
    {
        Kind.Count => Gen.OneOf(Gen.Elements(EdgeIntegers), Gen.Choose(-3, 300).Select(i => i.ToString()), Gen.Elements(Junk)),
        Kind.Length => Gen.OneOf(Gen.Elements("-2147483648", "-1", "0", "1", "2", "-0"), Gen.Elements(Junk)),
        Kind.Real => Gen.OneOf(Gen.Elements(Reals), Gen.Elements(Junk)),
        _ => Gen.Elements("all", "0", "5", "-1", "6", "99", "2147483647", "abc", ""),
    };

    /// <summary>One option of one command, the rest of the command kept small so that a valid value finishes in seconds.</summary>
    sealed record Template(string Option, Kind Kind, Func<string, string[]> Build)
    {
        public override string ToString() => Option;
    }

    static Template[] Templates(string run, string notebook, string scratch)
    {
        string[] Pretrain(string method, params string[] rest) =>
            ["pretrain", "--method", method, "--train-limit", "64", "--batch", "64", "--epochs", "1", "--out", Fresh(scratch), .. rest];
        var list = new List<Template>
        {
            new("pretrain --epochs", Kind.Length, v => ["pretrain", "--method", "rotnet", "--train-limit", "64", "--batch", "64", "--out", Fresh(scratch), "--epochs", v]),
            new("pretrain --batch", Kind.Count, v => ["pretrain", "--method", "rotnet", "--train-limit", "64", "--out", Fresh(scratch), "--batch", v]),
            new("pretrain --train-limit", Kind.Length, v => ["pretrain", "--method", "rotnet", "--batch", "64", "--out", Fresh(scratch), "--train-limit", v]),
            new("pretrain --seed", Kind.Count, v => Pretrain("rotnet", "--seed", v)),
            new("pretrain --lr", Kind.Real, v => Pretrain("rotnet", "--lr", v)),
            new("pretrain --snapshot-steps", Kind.Count, v => Pretrain("rotnet", "--snapshot-steps", v)),
            new("mae --mask-ratio", Kind.Real, v => Pretrain("mae", "--mask-ratio", v)),
            new("mae --pca-components", Kind.Count, v => Pretrain("mae", "--target", "pca", "--pca-components", v)),
            new("mae --decoder-depth", Kind.Count, v => Pretrain("mae", "--decoder-depth", v)),
            new("mae --decoder-dim", Kind.Count, v => Pretrain("mae", "--decoder-dim", v)),
            new("mae --min-block", Kind.Count, v => Pretrain("mae", "--sampling", "block", "--min-block", v)),
            new("beit --mask-ratio", Kind.Real, v => Pretrain("beit", "--target", "pixels", "--mask-ratio", v)),
            new("beit --min-block", Kind.Count, v => Pretrain("beit", "--target", "pixels", "--min-block", v)),
            new("rotnet --blocks", Kind.Count, v => Pretrain("rotnet", "--blocks", v)),
            new("rotnet --width", Kind.Count, v => Pretrain("rotnet", "--width", v)),
            new("igpt --colors", Kind.Count, v => Pretrain("igpt", "--colors", v)),
            new("igpt --resolution", Kind.Count, v => Pretrain("igpt", "--resolution", v)),
            new("igpt --depth", Kind.Count, v => Pretrain("igpt", "--depth", v)),
            new("igpt --dim", Kind.Count, v => Pretrain("igpt", "--dim", v)),
            new("igpt --heads", Kind.Count, v => Pretrain("igpt", "--heads", v)),
            new("igpt --mask-ratio", Kind.Real, v => Pretrain("igpt", "--objective", "bert", "--mask-ratio", v)),
            new("probe --layer", Kind.Layer, v => ["probe", run, "--train-limit", "64", "--test-limit", "64", "--layer", v]),
            new("probe --train-limit", Kind.Length, v => ["probe", run, "--layer", "5", "--test-limit", "64", "--train-limit", v]),
            new("probe --test-limit", Kind.Length, v => ["probe", run, "--layer", "5", "--train-limit", "64", "--test-limit", v]),
            new("finetune --epochs", Kind.Length, v => ["finetune", run, "--train-limit", "64", "--epochs", v]),
            new("finetune --lr", Kind.Real, v => ["finetune", run, "--train-limit", "64", "--epochs", "1", "--lr", v]),
            new("finetune --blocks", Kind.Count, v => ["finetune", run, "--train-limit", "64", "--epochs", "1", "--blocks", v]),
            new("tokenizer --codes", Kind.Count, v => ["tokenizer", "train", "--train-limit", "64", "--epochs", "1", "--out", Fresh(scratch), "--codes", v]),
            new("tokenizer --batch", Kind.Count, v => ["tokenizer", "train", "--train-limit", "64", "--epochs", "1", "--out", Fresh(scratch), "--batch", v]),
            new("palette --k", Kind.Count, v => ["palette", "fit", "--images", "20", "--size", "8", "--out", Fresh(scratch) + ".json", "--k", v]),
            new("palette --size", Kind.Count, v => ["palette", "fit", "--images", "20", "--k", "4", "--out", Fresh(scratch) + ".json", "--size", v]),
            new("palette --inits", Kind.Count, v => ["palette", "fit", "--images", "20", "--k", "4", "--size", "8", "--out", Fresh(scratch) + ".json", "--inits", v]),
            new("bench --batch", Kind.Count, v => ["bench", "--steps", "1", "--warmup", "0", "--batch", v]),
            new("bench --image-size", Kind.Count, v => ["bench", "--steps", "1", "--warmup", "0", "--batch", "8", "--image-size", v]),
            new("bench --threads", Kind.Count, v => ["bench", "--steps", "1", "--warmup", "0", "--batch", "8", "--threads", v]),
            new("bench --steps", Kind.Length, v => ["bench", "--warmup", "0", "--batch", "8", "--steps", v]),
            new("show --n", Kind.Count, v => ["show", run, "--what", "reconstructions", "--out", Fresh(scratch) + ".png", "--n", v]),
            new("notebook --timeout", Kind.Real, v => ["notebook", "run", notebook, "-o", Fresh(scratch) + ".ipynb", "--timeout", v]),
        };
        return list.ToArray();
    }

    static string Fresh(string scratch) => Path.Combine(scratch, Guid.NewGuid().ToString("N")[..8]);

    [Fact]
    public void Every_numeric_option_ends_in_a_result_or_a_one_line_error()
    {
        var scratch = TestData.TempDir();
        var run = Path.Combine(scratch, "run");
        Assert.Equal(0, InProcessCli.Run("pretrain", "--method", "mae", "--train-limit", "128", "--batch", "64", "--out", run).Code);
        var notebook = NotebookTests.Write(NotebookTests.Code("1 + 1"));
        var templates = Templates(run, notebook, scratch);
        var cases = Gen.Elements(templates).SelectMany(t => Values(t.Kind).Select(v => (Template: t, Value: v)));
        var failures = new List<string>();
        Check(Prop.ForAll(cases.ToArbitrary(), c =>
        {
            var args = c.Template.Build(c.Value);
            var (code, _, err, elapsed) = InProcessCli.Run(args);
            var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            bool clean = code == 0 || (code is >= 1 and <= 3 && lines.Length > 0 && lines[^1].StartsWith("error: ", StringComparison.Ordinal));
            bool traced = err.Contains("\n   at ", StringComparison.Ordinal) || err.Contains("Unhandled exception", StringComparison.Ordinal);
            bool bounded = elapsed < TimeSpan.FromSeconds(90);
            if (!(clean && !traced && bounded))
                failures.Add($"{string.Join(' ', args)} → exit {code} in {elapsed.TotalSeconds:F0} s: {err.Trim()}");
            return clean && !traced && bounded;
        }), maxTest: 60, failures);
    }

    /// <summary>
    /// config.json of every method with one field deleted or replaced by a hostile value, then loaded as `probe` loads a
    /// run: a configuration that reads is validated, sized and built; anything else is a one-line error naming the file.
    /// </summary>
    [Fact]
    public void Every_config_json_field_edit_loads_or_is_a_one_line_error_naming_the_file()
    {
        var folders = new List<(string Method, JsonObject Json, List<string> Paths)>();
        foreach (var name in MethodRegistry.Names)
        {
            var preset = MethodRegistry.Get(name).Preset("tiny");
            if (preset is BeitConfig beit) preset = beit with { Target = BeitTarget.Pixels };
            bool colour = name is "colorization" or "split-brain";
            using var train = TestData.Random(64, channels: colour ? 3 : 1, size: colour ? 32 : 28);
            if (preset is GwtnConfig gwtn) preset = gwtn with { Teacher = TestData.WideTeacher(train) };   // configuring reads the teacher
            var config = Pretraining.Configure(preset, new PretrainOptions(Dataset: colour ? "shapes" : "fashion-mnist"), train);
            var json = JsonNode.Parse(Pretraining.Serialize(config))!.AsObject();
            folders.Add((name, json, Leaves(json, "").Where(p => !p.Contains("paletteColors[", StringComparison.Ordinal) || p.EndsWith("[0][0]")).ToList()));
        }
        JsonNode?[] hostile =
        [
            null, -1, 0, 1, 3, 2147483647, -2147483648, 1e300, 0.37, "NaN", "Infinity", "", "abc", true, new JsonArray(), new JsonObject(),
        ];
        var edits = Gen.Elements(folders.ToArray()).SelectMany(f => Gen.Elements(f.Paths.ToArray()).SelectMany(path =>
            Gen.OneOf(Gen.Constant((Delete: true, Value: (JsonNode?)null)), Gen.Elements(hostile).Select(v => (Delete: false, Value: v)))
                .Select(edit => new ConfigEdit(f.Method, f.Json, path, edit.Delete, edit.Value))));
        var dir = TestData.TempDir();
        var file = Path.Combine(dir, Pretraining.ConfigFile);
        var failures = new List<string>();
        Check(Prop.ForAll(edits.ToArbitrary(), e =>
        {
            var json = e.Json.DeepClone().AsObject();
            Edit(json, e.Path, e.Delete, e.Value?.DeepClone());
            File.WriteAllText(file, json.ToJsonString());
            string what = e.ToString();
            try
            {
                var (_, model) = Pretraining.Load(dir);   // no checkpoint: reads, validates, sizes and builds, then asks for weights
                model.Module.Dispose();
                failures.Add($"{what}: loaded without a checkpoint");
            }
            catch (ResearchKitException x) when (!x.Message.Contains('\n'))
            {
                if (!x.Message.StartsWith(dir, StringComparison.Ordinal) && !x.Message.Contains("checkpoint not found", StringComparison.Ordinal))
                    failures.Add($"{what}: the error does not name the run's files: {x.Message}");
            }
            catch (Exception x)
            {
                failures.Add($"{what}: {x.GetType().Name}: {x.Message.ReplaceLineEndings(" ")}");
            }
            return failures.Count == 0;
        }), maxTest: 200, failures);
    }

    /// <summary>One edit of one method's config.json, printed as FsCheck reports a counterexample.</summary>
    sealed record ConfigEdit(string Method, JsonObject Json, string Path, bool Delete, JsonNode? Value)
    {
        public override string ToString() => $"{Method} {Path} {(Delete ? "deleted" : $"= {Value?.ToJsonString() ?? "null"}")}";
    }

    /// <summary>Checks a property with the fixed seed; the failures it recorded are the assertion's message (FsCheck's own
    /// report shrinks the input and prints it whole).</summary>
    static void Check(Property property, int maxTest, List<string> failures)
    {
        try { property.Check(Config.QuickThrowOnFailure.WithMaxTest(maxTest).WithReplay(Seed, Gamma).WithQuietOnSuccess(true)); }
        catch (Exception) when (failures.Count > 0) { }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    static IEnumerable<string> Leaves(JsonNode? node, string path) => node switch
    {
        JsonObject o => o.SelectMany(p => Leaves(p.Value, path.Length == 0 ? p.Key : $"{path}.{p.Key}")).Prepend(path).Where(p => p.Length > 0),
        JsonArray a => a.Select((item, i) => Leaves(item, $"{path}[{i}]")).SelectMany(x => x).Prepend(path),
        _ => [path],
    };

    /// <summary>Deletes or replaces the node at a path such as "method.encoder.dim" or "normalization.std[0]".</summary>
    static void Edit(JsonObject root, string path, bool delete, JsonNode? value)
    {
        var steps = System.Text.RegularExpressions.Regex.Matches(path, @"[^.\[\]]+|\[\d+\]").Select(m => m.Value).ToList();
        JsonNode parent = root;
        foreach (var step in steps[..^1]) parent = step.StartsWith('[') ? parent[int.Parse(step[1..^1])]! : parent[step]!;
        var last = steps[^1];
        if (last.StartsWith('['))
        {
            int i = int.Parse(last[1..^1]);
            if (delete) parent.AsArray().RemoveAt(i); else parent[i] = value;
        }
        else if (delete) parent.AsObject().Remove(last);
        else parent[last] = value;
    }
}

/// <summary>
/// `researchkit ARGS` run in this process: the fuzz tier makes hundreds of calls, and a process start costs more than most
/// of them. The CLI's own entry point runs with its console captured; the process-wide settings it may change (device,
/// precision, threads) are put back afterwards. Tests run one at a time (xunit.runner.json), so the capture is safe.
/// </summary>
static class InProcessCli
{
    static readonly System.Reflection.MethodInfo Entry = System.Reflection.Assembly.Load("ResearchKit.Cli").EntryPoint!;

    public static (int Code, string Out, string Err, TimeSpan Elapsed) Run(params string[] args)
    {
        var (stdout, stderr) = (Console.Out, Console.Error);
        var (device, precision, threads) = (Compute.Device, Compute.Precision, get_num_threads());
        var (capturedOut, capturedErr) = (new StringWriter(), new StringWriter());
        Console.SetOut(capturedOut);
        Console.SetError(capturedErr);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            int code;
            try { code = (int)Entry.Invoke(null, [args])!; }
            catch (System.Reflection.TargetInvocationException e)
            {
                capturedErr.WriteLine($"Unhandled exception. {e.InnerException}");
                code = 134;
            }
            return (code, capturedOut.ToString(), capturedErr.ToString(), clock.Elapsed);
        }
        finally
        {
            Console.SetOut(stdout);
            Console.SetError(stderr);
            Compute.Device = device;
            Compute.Precision = precision;
            Training.ThreadPolicy.Set(threads);
        }
    }
}
