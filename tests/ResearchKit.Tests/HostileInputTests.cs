using System.Text.Json.Nodes;
using ResearchKit.Data;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Tokenizers;
using ResearchKit.Training;

namespace ResearchKit.Tests;

/// <summary>
/// Issue 22's hostile inputs, each reproduced as the issue reports it: the run folder's integrity (provenance, hand-edited
/// files), missing native libraries, and the messages that once misled. CLI option cases live in <see cref="CliTests"/>.
/// </summary>
public class HostileInputTests
{
    [Fact]
    public void A_run_refuses_weights_whose_tokenizer_or_settings_changed_after_training_naming_what_changed()
    {
        var root = TestData.TempDir();
        var tokenizerDir = Path.Combine(root, "tokenizer");
        var tokenizerConfig = TokenizerConfig.Tiny() with { Codes = 32 };
        var tokenizerOptions = new TokenizerTrainOptions(Epochs: 1, TrainLimit: 256, BatchSize: 64, ReportImages: 64);
        TokenizerRun.Train(tokenizerConfig, tokenizerOptions, tokenizerDir);
        var method = BeitConfig.Tiny() with { Tokenizer = tokenizerDir };
        var options = new PretrainOptions(Epochs: 1, TrainLimit: 256, BatchSize: 64);
        string run = Path.Combine(root, "beit"), other = Path.Combine(root, "beit-seed-1");
        Pretraining.Run(method, options, run);
        Pretraining.Run(method, options with { Seed = 1 }, other);
        Pretraining.Load(run).Model.Module.Dispose();   // intact: loads

        // A checkpoint copied from another run of the same shapes: the seed differs.
        var checkpoint = Path.Combine(run, Trainer.CheckpointFile);
        var kept = File.ReadAllBytes(checkpoint);
        File.Copy(Path.Combine(other, Trainer.CheckpointFile), checkpoint, overwrite: true);
        var e = Assert.Throws<ResearchKitException>(() => Pretraining.Load(run));
        Assert.Contains("train.seed: 1 before, 0 now", e.Message);
        File.WriteAllBytes(checkpoint, kept);

        // config.json edited by hand, tensor shapes kept (more heads of the same width).
        var configPath = Path.Combine(run, Pretraining.ConfigFile);
        var original = File.ReadAllText(configPath);
        var edited = System.Text.Json.Nodes.JsonNode.Parse(original)!;
        int heads = (int)edited["method"]!["encoder"]!["heads"]!;
        edited["method"]!["encoder"]!["heads"] = heads * 2;
        File.WriteAllText(configPath, edited.ToJsonString());
        e = Assert.Throws<ResearchKitException>(() => Pretraining.Load(run));
        Assert.Contains($"method.encoder.heads: {heads} before, {heads * 2} now", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        File.WriteAllText(configPath, original);

        // The tokenizer extended in place (as README documents): probing and resuming both refuse the run.
        TokenizerRun.Train(tokenizerConfig, tokenizerOptions with { Epochs = 2 }, tokenizerDir);
        e = Assert.Throws<ResearchKitException>(() => Pretraining.Load(run));
        Assert.Contains($"tokenizer {tokenizerDir} changed after these weights were trained on it", e.Message);
        e = Assert.Throws<ResearchKitException>(() => Pretraining.Run(method, options with { Epochs = 2 }, run));
        Assert.Contains($"tokenizer {tokenizerDir} changed", e.Message);
        Assert.StartsWith(checkpoint, e.Message);

        // Without its tokenizer the run still loads: evaluating a backbone does not need it.
        Directory.Delete(tokenizerDir, recursive: true);
        Pretraining.Load(run).Model.Module.Dispose();
    }

    /// <summary>Item 7: config.json with a required field removed or nulled gave a NullReferenceException later.</summary>
    [Fact]
    public void A_config_json_missing_or_nulling_a_required_field_is_refused_naming_the_field()
    {
        var dir = TestData.TempDir();
        using var train = TestData.Random(32);
        var config = Pretraining.Configure(MaeConfig.Tiny(), new PretrainOptions(), train);
        var path = Path.Combine(dir, Pretraining.ConfigFile);
        foreach (var (edit, expected) in new (Action<JsonObject>, string)[]
        {
            (c => c["method"]!.AsObject().Remove("encoder"), "missing required field 'method.encoder'"),
            (c => c.Remove("dataset"), "missing required field 'dataset'"),
            (c => c["method"]!["encoder"] = null, "field 'method.encoder' must not be null"),
            (c => c["normalization"]!["mean"] = null, "field 'normalization.mean' must not be null"),
            (c => c["train"] = null, "field 'train' must not be null"),
        })
        {
            var json = JsonNode.Parse(Pretraining.Serialize(config))!.AsObject();
            edit(json);
            File.WriteAllText(path, json.ToJsonString());
            var e = Assert.Throws<DataFormatException>(() => Pretraining.ReadConfig(dir));
            Assert.Equal($"{path}: not a valid run configuration: {expected}", e.Message);
        }
    }

    /// <summary>
    /// Item 10: a native library that does not load (here a damaged libSkiaSharp.so in a copy of the CLI's folder) is one
    /// line naming the library, not a hundred lines of TypeInitializationException.
    /// </summary>
    [Fact]
    public void A_native_library_that_does_not_load_is_a_one_line_error_naming_it()
    {
        var copy = TestData.TempDir();
        var built = AppContext.BaseDirectory;
        foreach (var folder in Directory.GetDirectories(built, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(copy, Path.GetRelativePath(built, folder)));
        foreach (var file in Directory.GetFiles(built, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(copy, Path.GetRelativePath(built, file));
            // The host finds the app's folder through the real path of its entry assembly, so that one is copied.
            if (Path.GetFileName(file).StartsWith("ResearchKit.Cli.", StringComparison.Ordinal)) File.Copy(file, target);
            else if (Path.GetFileName(file) == "libSkiaSharp.so") File.WriteAllText(target, "not a shared library");
            else File.CreateSymbolicLink(target, file);
        }
        var output = Path.Combine(copy, "palette.json");
        var (code, stdout, err) = TestData.RunProcess("dotnet",
            [Path.Combine(copy, "ResearchKit.Cli.dll"), "palette", "fit", "--dataset", "shapes", "--k", "4", "--images", "10", "--size", "8", "--out", output],
            TestData.Guarded, TimeSpan.FromMinutes(2));
        Assert.Equal(1, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.StartsWith("error: SkiaSharp's native library libSkiaSharp.so could not be loaded (", err);
        Assert.Equal("", stdout);
        Assert.False(File.Exists(output));
    }

    /// <summary>
    /// `bench` read a process's memory by splitting /proc/self/status on spaces. The kernel pads values to 8 columns
    /// after the tab, so at 10 GB and more only the tab is left and the split found "kB": CI's test host crashed there.
    /// </summary>
    [Fact]
    public void Proc_status_memory_fields_are_read_with_and_without_padding()
    {
        string[] status = ["Name:\ttesthost", "VmHWM:\t10485760 kB", "VmRSS:\t    2048 kB", "VmSwap:\t", "Threads:\t12"];
        Assert.Equal(10240.0, ResearchKit.Cli.Benchmark.StatusFieldMb(status, "VmHWM"));
        Assert.Equal(2.0, ResearchKit.Cli.Benchmark.StatusFieldMb(status, "VmRSS"));
        Assert.Equal(0.0, ResearchKit.Cli.Benchmark.StatusFieldMb(status, "VmSwap"));     // malformed: no value
        Assert.Equal(0.0, ResearchKit.Cli.Benchmark.StatusFieldMb(status, "VmData"));     // absent
    }
}

/// <summary>Issue 22, items 8 and 11: sizes are worked out from the configuration and refused before anything is built.</summary>
public class ModelSizeTests
{
    /// <summary>Every method's estimate against the parameters its built model has (tiny presets on 32×32 RGB images).</summary>
    [Theory]
    [MemberData(nameof(Methods))]
    public void Estimated_parameters_match_the_built_model(string method)
    {
        var preset = ResearchKit.Methods.MethodRegistry.Get(method).Preset("tiny");
        if (preset is BeitConfig beit) preset = beit with { Target = BeitTarget.Pixels };   // token targets need a tokenizer folder
        if (preset is GwtnConfig gwtn) preset = gwtn with { Teacher = "teacher", TeacherWidth = 128 };   // as configuring records it
        var config = preset.ForInput(32, 3);
        if (config is ImageGptConfig igpt)   // a palette of grey levels, as ForData would fit one
            config = igpt with { PaletteColors = Enumerable.Range(0, igpt.Colors).Select(i => Enumerable.Repeat(i / (igpt.Colors - 1f), 3).ToArray()).ToArray() };
        var estimate = config.Size();
        Assert.NotNull(estimate);
        var model = config.Build();
        double actual = model.Module.parameters().Sum(p => (double)p.numel());
        model.Module.Dispose();
        // Transformers are counted exactly; convolutional methods count the backbone, their heads being small beside it.
        double lower = config is ConvNetMethodConfig ? 0.5 : 0.999;
        Assert.InRange(estimate!.Parameters / actual, lower, 1.001);
    }

    [Theory]
    [InlineData(TokenizerKind.Vq)]
    [InlineData(TokenizerKind.Dvae)]
    public void The_tokenizer_estimate_matches_the_built_tokenizer(TokenizerKind kind)
    {
        var config = TokenizerConfig.Tiny(kind);
        using var tokenizer = config.Build();
        double actual = tokenizer.Module.parameters().Sum(p => (double)p.numel());
        Assert.InRange(config.Size().Parameters / actual, 0.95, 1.05);   // biases and norms are left out
    }

    public static TheoryData<string> Methods() => new(ResearchKit.Methods.MethodRegistry.Names);
}

/// <summary>Issue 22, item 14: notebooks the engine cannot run say why, in one line.</summary>
public class NotebookFormatTests
{
    [Fact]
    public void An_nbformat_3_notebook_is_told_how_to_convert_and_other_versions_are_named()
    {
        var dir = TestData.TempDir();
        foreach (var (json, expected) in new[]
        {
            ("""{"nbformat": 3, "nbformat_minor": 0, "worksheets": [{"cells": []}], "metadata": {}}""",
                "nbformat 3 is not supported; convert it with `jupyter nbconvert --to notebook --nbformat 4 {0}`"),
            ("""{"nbformat": "4", "nbformat_minor": 5, "cells": [], "metadata": {}}""", "nbformat \"4\" is not supported; expected nbformat 4"),
            ("""{"nbformat_minor": 5, "cells": [], "metadata": {}}""", "nbformat (missing) is not supported; expected nbformat 4"),
            ("""{"nbformat": 4, "nbformat_minor": 5, "metadata": {}}""", "not a notebook (expected a JSON object with a \"cells\" array)"),
        })
        {
            var path = Path.Combine(dir, "old.ipynb");
            File.WriteAllText(path, json);
            var e = Assert.Throws<ResearchKitException>(() => ResearchKit.Notebooks.NotebookDocument.Load(path));
            Assert.Equal($"{path}: {string.Format(expected, path)}", e.Message);
        }
    }
}
