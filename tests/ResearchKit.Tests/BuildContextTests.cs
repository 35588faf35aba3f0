using System.Text.Json.Nodes;
using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Tokenizers;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>Issue 21, part 1: a model is built with its run's normalisation, shape and frozen dependencies.</summary>
public class BuildContextTests
{
    [Fact]
    public void Pixels_round_trip_through_the_runs_normalisation()
    {
        var context = new BuildContext(new Normalization([0.2f, 0.5f, 0.7f], [0.1f, 0.25f, 0.5f]), 8, 3);
        var pixels = rand(2, 3, 8, 8);
        var normalised = context.FromPixels(pixels);
        // (x − mean) / std, worked for one value of channel 1.
        Assert.Equal((pixels[1, 1, 2, 3].item<float>() - 0.5f) / 0.25f, normalised[1, 1, 2, 3].item<float>(), 5);
        Assert.True(context.ToPixels(normalised).allclose(pixels, atol: 1e-6));
        Assert.Equal("normalisation has 1 channels; the rotnet model takes 3",
            Assert.Throws<ResearchKitException>(() => BuildContext.Of(RotNetConfig.Tiny(32, 3), Normalization.Identity(1))).Message);
    }

    [Fact]
    public void An_igpt_run_tokenises_with_the_runs_normalisation_and_a_config_that_recorded_it_still_loads()
    {
        using var data = TestData.FashionMnist(256, 16);
        var dir = TestData.TempDir();
        var config = ImageGptConfig.Tiny() with { Colors = 8, Dim = 16, Depth = 1, Heads = 2 };
        var run = Pretraining.Run(config, new PretrainOptions(Epochs: 1, BatchSize: 128), data.Train, dir);
        var gpt = (ImageGpt)run.Model;
        var n = run.Config.Normalization;
        Assert.NotEqual(0f, n.Mean[0]);   // a real normalisation, not the identity
        // Tokens of the normalised images are the palette's codes of the pixel values the images came from.
        var pixels = Normalization.ToUnit(data.Test.Images, CPU);
        var expected = gpt.Palette.Encode(ColorPalette.Downsample(pixels, gpt.Config.Resolution));
        Assert.True(gpt.Tokenize(n.Apply(data.Test.Images, CPU)).Same(expected));

        // Format 3 folders written while iGPT copied the normalisation into its configuration still load.
        var path = Path.Combine(dir, Pretraining.ConfigFile);
        var json = JsonNode.Parse(File.ReadAllText(path))!;
        json["method"]!["normalization"] = JsonNode.Parse("{\"mean\": [0.28], \"std\": [0.35]}");
        File.WriteAllText(path, json.ToJsonString());
        var (_, reloaded) = Pretraining.Load(dir);
        Assert.True(((ImageGpt)reloaded).Tokenize(n.Apply(data.Test.Images, CPU)).Same(expected));
    }

    [Fact]
    public void Another_runs_model_loads_frozen_once_with_its_shape_checked()
    {
        using var data = TestData.FashionMnist(256, 16);
        var dir = TestData.TempDir();
        var run = Pretraining.Run(RotNetConfig.Tiny(),
            new PretrainOptions(Epochs: 1, BatchSize: 128), data.Train, dir);
        var dependencies = new Dependencies();
        var teacher = dependencies.Run(dir, "teacher", 28, 1);
        Assert.All(teacher.Module.parameters(), p => Assert.False(p.requires_grad));
        Assert.False(teacher.Module.training);
        Assert.Same(teacher, dependencies.Run(dir, "teacher", 28, 1));
        // Its weights are the trained run's, not a fresh initialisation.
        using (no_grad())
        {
            var images = run.Config.Normalization.Apply(data.Test.Images, CPU);
            run.Model.Module.eval();
            Assert.True(teacher.Backbone.Features(images).allclose(run.Model.Backbone.Features(images), atol: 1e-5));
        }

        Assert.Equal($"teacher {dir}: its model takes 28×28 images of 1 channels; this one needs 32×32 of 3",
            Assert.Throws<ResearchKitException>(() => new Dependencies().Run(dir, "teacher", 32, 3)).Message);
        var empty = TestData.TempDir();
        Assert.StartsWith($"{Path.Combine(empty, "config.json")}: not found",
            Assert.Throws<ResearchKitException>(() => new Dependencies().Run(empty, "source", 28, 1)).Message);
    }
}
