using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>libtorch's oneDNN CPU convolutions are wrong for some channel counts on an AVX-512 machine (<see cref="OneDnn"/>).</summary>
public class OneDnnTests
{
    static SupervisedConfig Cnn(int width, ImageDataset data, Normalization normalization) =>
        (SupervisedConfig)(SupervisedConfig.Tiny() with { Cnn = SupervisedConfig.Tiny().Cnn with { Width = width } }).ForData(data, normalization);

    [Fact]
    public void The_kit_turns_oneDNN_off_and_a_CNN_width_that_diverged_under_it_trains_from_every_seed()
    {
        _ = Compute.Device;
        if (OperatingSystem.IsLinux() && Environment.GetEnvironmentVariable("RESEARCHKIT_ONEDNN") is null)
        {
            Assert.False(OneDnn.Enabled, "oneDNN is still on after the kit's first use");
            Assert.False(OneDnn.NnpackEnabled, "NNPACK is still on: libtorch warns at every evaluation convolution where it cannot start");
        }
        // Width 24 diverged at its first steps in 14 of 16 seeded runs with oneDNN on that machine (step 1 to 3).
        using var data = TestData.FashionMnist(256, 16);
        var normalization = Normalization.Of(data.Train);
        var config = Cnn(24, data.Train, normalization);
        for (int seed = 0; seed < 6; seed++)
        {
            var model = Pretraining.Build(config, seed, BuildContext.Of(config, normalization));
            var result = new Trainer(new TrainConfig(1, 64, config.Optimizer, Seed: seed, LogEvery: 1)).Fit(new DataLoader(data.Train, 64, normalization, seed: seed), model);
            Assert.All(result.Losses, l => Assert.True(double.IsFinite(l), $"seed {seed}: loss {l}"));
            model.Module.Dispose();
        }
    }

    /// <summary>Records whether oneDNN was on at each step.</summary>
    sealed class Watch : ITrainerCallback
    {
        public List<bool?> Seen { get; } = [];
        public void OnStepEnd(TrainProgress progress) => Seen.Add(OneDnn.Enabled);
    }

    [Fact]
    public void oneDNN_is_on_only_while_a_model_whose_every_convolution_it_computes_correctly_trains()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("RESEARCHKIT_ONEDNN") is not null) return;
        _ = Compute.Device;
        OneDnn.ForgetFrozen();
        using var data = TestData.FashionMnist(128, 16);
        var normalization = Normalization.Of(data.Train);
        foreach (var (width, expected) in new[] { (64, true), (24, false), (32, true), (8, false) })
        {
            var config = Cnn(width, data.Train, normalization);
            var model = Pretraining.Build(config, 0, BuildContext.Of(config, normalization));
            Assert.Equal(expected, OneDnn.SafeFor(model.Module));
            var watch = new Watch();
            var trainer = new Trainer(new TrainConfig(1, 64, config.Optimizer, Seed: 0, LogEvery: 1));
            trainer.Callbacks.Add(watch);
            trainer.Fit(new DataLoader(data.Train, 64, normalization, seed: 0), model);
            Assert.All(watch.Seen, on => Assert.Equal(expected, on));
            Assert.False(OneDnn.Enabled, $"width {width}: oneDNN was left on after training");
            model.Module.Dispose();
        }
        // A GAN's generator ends in a convolution to the image's channels: its input gradient is one oneDNN got wrong.
        using var gan = (SelfSupervisedGan)SsganConfig.TinyGan().Build();
        Assert.False(OneDnn.SafeFor(gan));
    }

    /// <summary>
    /// The shapes <see cref="OneDnn.SafeFor"/> admits give, with oneDNN on, the outputs and gradients of ATen's kernels on the
    /// machine that runs the test; two it refuses are checked to differ only where that machine has the fault (not asserted).
    /// </summary>
    [Theory]
    [InlineData(false, 1, 64, 3, 1, 28)]
    [InlineData(false, 3, 32, 3, 1, 14)]
    [InlineData(false, 64, 64, 3, 1, 7)]
    [InlineData(false, 64, 64, 1, 1, 14)]
    [InlineData(false, 64, 128, 4, 2, 16)]
    [InlineData(false, 128, 16, 3, 2, 14)]
    [InlineData(true, 64, 32, 4, 2, 8)]
    [InlineData(true, 32, 16, 2, 2, 7)]
    public void Convolutions_of_admitted_shapes_match_ATen_with_oneDNN_on(bool transposed, int inputs, int outputs, int kernel, int stride, int size)
    {
        if (!OperatingSystem.IsLinux()) return;
        _ = Compute.Device;
        using var conv = transposed
            ? (nn.Module<Tensor, Tensor>)nn.ConvTranspose2d(inputs, outputs, kernel, stride: stride, padding: kernel == 4 ? 1 : 0)
            : nn.Conv2d(inputs, outputs, kernel, stride: stride, padding: kernel == 4 ? 1 : kernel / 2);
        Assert.True(OneDnn.SafeFor(conv));
        var generator = new Generator(7);
        using var scope = NewDisposeScope();
        var x0 = randn(16, inputs, size, size, generator: generator);
        using (no_grad()) foreach (var p in conv.parameters()) p.copy_(randn(p.shape, generator: generator) * 0.1);
        var gradOut = randn_like(conv.call(x0));
        Tensor[] Run(bool on)
        {
            OneDnn.Set(on);
            try
            {
                conv.zero_grad();
                var x = x0.clone().requires_grad_();
                var y = conv.call(x);
                y.backward([gradOut]);
                return [y.detach().clone(), x.grad!.clone(), .. conv.parameters().Select(p => p.grad!.clone())];
            }
            finally { OneDnn.Set(false); }
        }
        var (fast, reference) = (Run(true), Run(false));
        for (int i = 0; i < fast.Length; i++)
        {
            double error = ((fast[i] - reference[i]).abs().nan_to_num(1e30).max() / reference[i].abs().max()).item<float>();
            Assert.True(error < 1e-4, $"{(transposed ? "transposed " : "")}{inputs}→{outputs} k{kernel}/{stride}: tensor {i} (output, input gradient, weight, bias) differs by {error:g3} relative");
        }
    }
}
