using ResearchKit.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Tests;

/// <summary>The flat optimizers against TorchSharp's own AdamW and SGD on the same model, gradients and schedule.</summary>
public class FlatOptimizerTests
{
    /// <summary>Two layers and a 1-D parameter, so both weight-decay groups are filled.</summary>
    sealed class Net : Module<Tensor, Tensor>
    {
        public readonly Linear first = Linear(6, 5), second = Linear(5, 3);
        public readonly Parameter scale = Parameter(ones(3));
        public Net() : base(nameof(Net)) => RegisterComponents();
        public override Tensor forward(Tensor x) => second.call(functional.gelu(first.call(x))) * scale;
    }

    static (Net Flat, Net Reference) Twins()
    {
        manual_seed(7);
        var a = new Net();
        manual_seed(7);
        return (a, new Net());
    }

    static (List<Parameter> Decayed, List<Parameter> Exempt) Groups(Net net) =>
        (net.parameters().Where(p => p.dim() > 1).ToList(), net.parameters().Where(p => p.dim() <= 1).ToList());

    /// <summary>Runs both optimizers over the same batches with a changing learning rate; returns the largest parameter difference.</summary>
    static double Train(Net flat, FlatOptimizer ours, Net reference, OptimizerHelper theirs, int steps, int seed = 1)
    {
        var batches = new Generator((ulong)seed);
        for (int s = 0; s < steps; s++)
        {
            using var scope = NewDisposeScope();
            var x = randn(new long[] { 8, 6 }, generator: batches, device: CPU);
            double lr = 0.01 * (1 + s);
            ours.LearningRate = lr;
            foreach (var g in theirs.ParamGroups) g.LearningRate = lr;
            ours.ZeroGrad();
            flat.call(x).square().mean().backward();
            ours.Step();
            theirs.zero_grad();
            reference.call(x).square().mean().backward();
            theirs.step();
        }
        return flat.parameters().Zip(reference.parameters()).Max(p => (p.First - p.Second).abs().max().item<float>());
    }

    [Fact]
    public void FlatAdamW_takes_the_same_steps_as_TorchSharps_AdamW_with_decoupled_decay_groups()
    {
        var (flat, reference) = Twins();
        var (decayed, exempt) = Groups(flat);
        var ours = new FlatAdamW([(decayed, 0.1), (exempt, 0.0)], 0.01, 0.9, 0.95);
        var (rd, re) = Groups(reference);
        var theirs = optim.AdamW([new AdamW.ParamGroup(rd, new AdamW.Options { weight_decay = 0.1 }), new AdamW.ParamGroup(re, new AdamW.Options { weight_decay = 0 })],
            0.01, 0.9, 0.95);
        Assert.Equal(0, Train(flat, ours, reference, theirs, 6));
    }

    [Fact]
    public void FlatSgd_takes_the_same_steps_as_TorchSharps_SGD_with_Nesterov_momentum_and_decay()
    {
        foreach (var nesterov in new[] { false, true })
        {
            var (flat, reference) = Twins();
            var (decayed, exempt) = Groups(flat);
            var ours = new FlatSgd([(decayed, 5e-4), (exempt, 0.0)], 0.1, momentum: 0.9, nesterov: nesterov);
            var (rd, re) = Groups(reference);
            var theirs = optim.SGD([new SGD.ParamGroup(rd, new SGD.Options { weight_decay = 5e-4, momentum = 0.9, nesterov = nesterov }),
                new SGD.ParamGroup(re, new SGD.Options { weight_decay = 0, momentum = 0.9, nesterov = nesterov })], 0.1, 0.9, nesterov: nesterov);
            Assert.Equal(0, Train(flat, ours, reference, theirs, 6));
        }
    }

    [Fact]
    public void State_saved_by_TorchSharp_resumes_in_a_flat_optimizer_and_the_reverse()
    {
        // Checkpoints written before the flat optimizers hold TorchSharp's optimizer format; they must still resume.
        var (flat, reference) = Twins();
        var (rd, re) = Groups(reference);
        OptimizerHelper NewTheirs(Net net) => optim.AdamW([new AdamW.ParamGroup(Groups(net).Decayed, new AdamW.Options { weight_decay = 0.1 }),
            new AdamW.ParamGroup(Groups(net).Exempt, new AdamW.Options { weight_decay = 0 })], 0.01, 0.9, 0.95);
        var theirs = NewTheirs(reference);
        var ours = new FlatAdamW([(Groups(flat).Decayed, 0.1), (Groups(flat).Exempt, 0.0)], 0.01, 0.9, 0.95);
        Train(flat, ours, reference, theirs, 3);

        var saved = new MemoryStream();
        using (var writer = new BinaryWriter(saved, System.Text.Encoding.UTF8, leaveOpen: true)) theirs.save_state_dict(writer);
        var (flat2, _) = Twins();
        using (no_grad()) foreach (var (to, from) in flat2.parameters().Zip(reference.parameters())) to.copy_(from);
        var resumed = new FlatAdamW([(Groups(flat2).Decayed, 0.1), (Groups(flat2).Exempt, 0.0)], 0.01, 0.9, 0.95);
        saved.Position = 0;
        using (var reader = new BinaryReader(saved, System.Text.Encoding.UTF8, leaveOpen: true)) resumed.Load(reader);
        Assert.Equal(0, Train(flat2, resumed, reference, theirs, 3, seed: 2));

        var ours2 = new MemoryStream();
        using (var writer = new BinaryWriter(ours2, System.Text.Encoding.UTF8, leaveOpen: true)) resumed.Save(writer);
        var (_, reference2) = Twins();
        using (no_grad()) foreach (var (to, from) in reference2.parameters().Zip(flat2.parameters())) to.copy_(from);
        var theirs2 = NewTheirs(reference2);
        ours2.Position = 0;
        using (var reader = new BinaryReader(ours2)) theirs2.load_state_dict(reader);
        Assert.Equal(0, Train(flat2, resumed, reference2, theirs2, 3, seed: 3));
    }

    [Fact]
    public void Gradients_accumulate_into_the_flat_buffer_and_clipping_matches_clip_grad_norm()
    {
        var (flat, reference) = Twins();
        var ours = new FlatSgd([(flat.parameters().ToList(), 0.0)], 1.0);
        var x = randn(new long[] { 4, 6 }, device: CPU);
        ours.ZeroGrad();
        (flat.call(x).sum() * 100).backward();
        (reference.call(x).sum() * 100).backward();
        double norm = nn.utils.clip_grad_norm_(reference.parameters(), 0.5);
        Assert.True(norm > 0.5, $"the gradient must be clipped for the test to mean anything; its norm is {norm}");
        ours.ClipGradNorm(0.5);
        foreach (var (p, q) in flat.parameters().Zip(reference.parameters()))
            Assert.True(p.grad!.allclose(q.grad!, rtol: 1e-5, atol: 1e-7), "clipped gradients differ");
        // The parameters are views of the optimizer's buffer: the step moves the module's own weights.
        var before = flat.first.weight!.detach().clone();
        ours.Step();
        Assert.False(flat.first.weight!.detach().Same(before));
    }
}
