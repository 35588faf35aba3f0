using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>JEM's core (issue 25, item 2): SGLD on log p(x) = logsumexp f(x), the replay buffer and its checkpoint.</summary>
public class JemTests
{
    static readonly JemConfig Small = JemConfig.Tiny() with { Steps = 2, BufferSize = 96 };

    [Fact]
    public void Langevin_dynamics_climb_log_p_x_and_move_only_the_images()
    {
        var model = (Jem)Pretraining.Build(Small, 0);
        using var draws = new Generator(1);
        var start = Draws.Uniform(draws, [16, 1, 28, 28], CPU);
        double Mean(Tensor x) { using var _ = no_grad(); return model.LogDensity(x).mean().item<float>(); }
        var moved = model.Langevin(start, draws, steps: 10);
        Assert.True(Mean(moved) > Mean(start), $"log p(x) {Mean(start):F3} → {Mean(moved):F3}");
        Assert.False(moved.requires_grad);
        Assert.All(model.parameters(), p => Assert.True(p.grad is null, "SGLD left a gradient on a weight"));
        // No noise and a tiny step: one step is x + α ∇ log p(x), the gradient checked against a finite difference.
        var still = (Jem)((JemConfig)Small with { Noise = 0, StepSize = 1e-3 }).Build();
        using (no_grad()) foreach (var (p, q) in still.parameters().Zip(model.parameters())) p.copy_(q);
        var x = start[..1].clone();
        var step = still.Langevin(x, draws, steps: 1) - x;                                   // α ∇ log p(x)
        var direction = step / step.norm();
        double h = 1e-2, slope;
        using (no_grad()) slope = (still.LogDensity(x + h * direction) - still.LogDensity(x - h * direction)).item<float>() / (2 * h);
        Assert.Equal(step.norm().item<float>() / 1e-3, slope, 0.05 * Math.Abs(slope) + 1e-3);  // |∇| along its own direction
    }

    [Fact]
    public void A_resumed_run_continues_with_the_same_replay_buffer_as_an_uninterrupted_one()
    {
        using var data = TestData.FashionMnist(128, 16);
        var normalization = Normalization.Of(data.Train);
        var config = (JemConfig)Small.ForData(data.Train, normalization);
        Jem Train(string? dir, int epochs)
        {
            var model = (Jem)Pretraining.Build(config, 0, BuildContext.Of(config, normalization));
            new Trainer(new TrainConfig(epochs, 32, config.Optimizer, Seed: 0, CheckpointEvery: 1000), dir)
                .Fit(new DataLoader(data.Train, 32, normalization, seed: 0), model);
            return model;
        }
        var whole = Train(null, 2);
        var dir = TestData.TempDir();
        Train(dir, 1).Module.Dispose();
        var resumed = Train(dir, 2);
        using var draws = new Generator(0);
        var (a, b) = (whole.Buffer(draws, CPU), resumed.Buffer(draws, CPU));
        Assert.Equal([96, 1, 28, 28], a.shape);
        Assert.True(a.Same(b), "the buffer after resuming differs from the uninterrupted run's");
        Assert.All(whole.state_dict().Zip(resumed.state_dict()), p => Assert.True(p.First.Value.Same(p.Second.Value), p.First.Key));
        // The buffer moved away from its uniform start: 8 steps × 32 samples wrote into it.
        var fresh = (Jem)Pretraining.Build(config, 0, BuildContext.Of(config, normalization));
        Assert.False(fresh.Buffer(new Generator(0), CPU).Same(a));
    }

    [Fact]
    public void The_configuration_refuses_batch_norm_and_out_of_range_sampler_settings_in_one_line()
    {
        Assert.Equal("jem: the backbone must be without BatchNorm (samples and data would share batch statistics)",
            Assert.Throws<ResearchKitException>(() => (Small with { Backbone = Small.Backbone with { WithoutBatchNorm = false } }).Validate()).Message);
        Assert.Equal("jem: --sgld-steps must be 1–1000; got 0", Assert.Throws<ResearchKitException>(() => (Small with { Steps = 0 }).Validate()).Message);
        Assert.Equal("jem: --reinit must be in [0, 1]; got 1.5", Assert.Throws<ResearchKitException>(() => (Small with { Reinitialise = 1.5 }).Validate()).Message);
    }
}
