using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ResearchKit.Training;

/// <summary>
/// An optimizer that updates all its parameters with a handful of whole-buffer operations instead of a loop over
/// tensors. At construction each parameter group's parameters are copied into one flat buffer and each parameter is
/// re-pointed (<c>set_</c>) to its slice of it, and the same is done for the gradients, which backward then accumulates
/// in place; the optimizer state is flat too. The arithmetic per element is PyTorch's, unchanged.
/// Why: TorchSharp's AdamW runs ~9 kernels per parameter tensor with managed overhead each — 21 ms per step for the
/// tiny MAE's 108 tensors at batch 2 on the CPU, against PyTorch's 5.9 ms — and on a GPU every one is a kernel launch.
/// Optimizer state is saved in TorchSharp's own format (<c>Optimizer.save_state_dict</c>), so checkpoints written before
/// this class existed still resume. A parameter belongs to one optimizer: update phases train disjoint parameters.
/// </summary>
public abstract class FlatOptimizer : IDisposable
{
    /// <summary>One parameter group: its parameters, their flat values and gradients, and its weight decay.</summary>
    protected sealed class Group
    {
        public required Parameter[] Parameters { get; init; }
        public required long[] Offsets { get; init; }
        public required Tensor Values { get; init; }
        public required Tensor Gradients { get; init; }
        public required double WeightDecay { get; init; }
        public long Length => Values.shape[0];

        /// <summary>Parameter <paramref name="i"/>'s slice of a flat buffer shaped as the parameter.</summary>
        public Tensor Slice(Tensor flat, int i) => flat.narrow(0, Offsets[i], Parameters[i].numel()).view(Parameters[i].shape);
    }

    protected readonly List<Group> groups = [];
    readonly double initialLearningRate;

    /// <summary>The rate of the next step, for every group (the trainer sets it from the schedule before each step).</summary>
    public double LearningRate { get; set; }

    /// <summary>Every parameter, in group order.</summary>
    public IEnumerable<Parameter> Parameters => groups.SelectMany(g => g.Parameters);

    protected FlatOptimizer(IEnumerable<(IReadOnlyList<Parameter> Parameters, double WeightDecay)> parameterGroups, double learningRate)
    {
        LearningRate = initialLearningRate = learningRate;
        using var _ = no_grad();
        foreach (var (parameters, decay) in parameterGroups)
        {
            if (parameters.Count == 0) continue;
            var first = parameters[0];
            if (parameters.Any(p => p.device.type != first.device.type || p.device.index != first.device.index || p.dtype != first.dtype))
                throw new ArgumentException("an optimizer's parameters must share one device and dtype; move the model to one device first");
            var offsets = new long[parameters.Count];
            long total = 0;
            for (int i = 0; i < parameters.Count; i++) { offsets[i] = total; total += parameters[i].numel(); }
            var group = new Group
            {
                Parameters = [.. parameters], Offsets = offsets, WeightDecay = decay,
                Values = empty(total, first.dtype, first.device).DetachFromDisposeScope(),
                Gradients = zeros(total, first.dtype, first.device).DetachFromDisposeScope(),
            };
            for (int i = 0; i < parameters.Count; i++)
            {
                var p = parameters[i];
                var values = group.Slice(group.Values, i);
                values.copy_(p);
                p.set_(values);
                p.grad = group.Slice(group.Gradients, i);   // backward adds into this view in place
            }
            groups.Add(group);
        }
    }

    /// <summary>Zeroes every gradient: one fill per group.</summary>
    public void ZeroGrad()
    {
        foreach (var g in groups) g.Gradients.zero_();
    }

    /// <summary>One update of every parameter from its gradient.</summary>
    public abstract void Step();

    /// <summary>
    /// Scales the gradients so that their global L2 norm is at most <paramref name="maxNorm"/>, as
    /// torch.nn.utils.clip_grad_norm_ does, without reading the norm back (libtorch's version returns it as a double,
    /// which waits for the device every step).
    /// </summary>
    public void ClipGradNorm(double maxNorm)
    {
        using var scope = NewDisposeScope();
        var total = stack(groups.Select(g => g.Gradients.norm()).ToArray()).norm();
        var scale = (maxNorm / (total + 1e-6)).clamp_max(1.0);
        foreach (var g in groups) g.Gradients.mul_(scale);
    }

    /// <summary>Writes the state as TorchSharp's <c>save_state_dict</c> does for this optimizer's type.</summary>
    public void Save(BinaryWriter writer)
    {
        writer.Write(TypeName);
        ModuleState.WriteCount(writer, groups.Count);
        ModuleState.WriteCount(writer, groups.Sum(g => g.Parameters.Length));
        foreach (var g in groups)
        {
            writer.Write(initialLearningRate);
            writer.Write(LearningRate);
            SaveOptions(writer, g);
        }
        foreach (var g in groups)
            for (int i = 0; i < g.Parameters.Length; i++) SaveState(writer, g, i);
    }

    /// <summary>Reads state written by <see cref="Save"/> (or by TorchSharp's optimizer of the same type) into this optimizer.</summary>
    public void Load(BinaryReader reader)
    {
        var name = reader.ReadString();
        if (name != TypeName) throw new InvalidDataException($"the optimizer state is {name}'s; this run's optimizer is {TypeName}");
        long groupCount = ModuleState.ReadCount(reader), stateCount = ModuleState.ReadCount(reader);
        if (groupCount != groups.Count || stateCount != groups.Sum(g => g.Parameters.Length))
            throw new InvalidDataException($"the optimizer state has {groupCount} parameter groups and {stateCount} tensors; " +
                $"this optimizer has {groups.Count} and {groups.Sum(g => g.Parameters.Length)}");
        foreach (var g in groups)
        {
            reader.ReadDouble();   // initial learning rate
            reader.ReadDouble();   // learning rate: the schedule sets it for every step
            LoadOptions(reader, g);
        }
        using var _ = no_grad();
        foreach (var g in groups)
            for (int i = 0; i < g.Parameters.Length; i++) LoadState(reader, g, i);
    }

    /// <summary>TorchSharp's class name for this optimizer, which its state files start with.</summary>
    protected abstract string TypeName { get; }
    protected abstract void SaveOptions(BinaryWriter writer, Group group);
    protected abstract void LoadOptions(BinaryReader reader, Group group);
    protected abstract void SaveState(BinaryWriter writer, Group group, int parameter);
    protected abstract void LoadState(BinaryReader reader, Group group, int parameter);

    /// <summary>Reads one tensor and copies it into parameter <paramref name="i"/>'s slice of <paramref name="flat"/>, checking its shape.</summary>
    protected static void LoadSlice(BinaryReader reader, Group group, Tensor flat, int i)
    {
        using var value = ModuleState.ReadTensor(reader);
        var slice = group.Slice(flat, i);
        if (!value.shape.SequenceEqual(slice.shape) || value.dtype != slice.dtype)
            throw new InvalidDataException($"optimizer state of shape [{string.Join(", ", value.shape)}] for a parameter of shape [{string.Join(", ", slice.shape)}]");
        slice.copy_(value);
    }

    public virtual void Dispose()
    {
        foreach (var g in groups)
        {
            g.Values.Dispose();
            g.Gradients.Dispose();
        }
    }
}

/// <summary>
/// AdamW (Loshchilov &amp; Hutter, 2019) as torch.optim.AdamW computes it: decoupled decay p ← p·(1 − lr·wd), moment
/// estimates with bias correction, p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε).
/// </summary>
public sealed class FlatAdamW : FlatOptimizer
{
    readonly double beta1, beta2, eps;
    readonly List<(Tensor Mean, Tensor Variance)> moments = [];
    long steps;

    public FlatAdamW(IEnumerable<(IReadOnlyList<Parameter> Parameters, double WeightDecay)> parameterGroups, double learningRate,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8) : base(parameterGroups, learningRate)
    {
        (this.beta1, this.beta2, this.eps) = (beta1, beta2, eps);
        foreach (var g in groups) moments.Add((zeros_like(g.Values).DetachFromDisposeScope(), zeros_like(g.Values).DetachFromDisposeScope()));
    }

    public override void Step()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        steps++;
        double correction1 = 1 - Math.Pow(beta1, steps), correction2 = 1 - Math.Pow(beta2, steps);
        for (int i = 0; i < groups.Count; i++)
        {
            var (g, (m, v)) = (groups[i], moments[i]);
            if (g.WeightDecay != 0) g.Values.mul_(1 - LearningRate * g.WeightDecay);
            m.mul_(beta1).add_(g.Gradients, alpha: 1 - beta1);
            v.mul_(beta2).addcmul_(g.Gradients, g.Gradients, value: 1 - beta2);
            var denominator = (v.sqrt() / Math.Sqrt(correction2)).add_(eps);
            g.Values.addcdiv_(m, denominator, value: -LearningRate / correction1);
        }
    }

    protected override string TypeName => "AdamW";

    protected override void SaveOptions(BinaryWriter writer, Group group)
    {
        writer.Write(beta1);
        writer.Write(beta2);
        writer.Write(eps);
        writer.Write(group.WeightDecay);
        writer.Write(false);   // amsgrad
        writer.Write(false);   // maximize
    }

    protected override void LoadOptions(BinaryReader reader, Group group)
    {
        double b1 = reader.ReadDouble(), b2 = reader.ReadDouble(), e = reader.ReadDouble(), decay = reader.ReadDouble();
        bool amsgrad = reader.ReadBoolean(), maximize = reader.ReadBoolean();
        if (b1 != beta1 || b2 != beta2 || decay != group.WeightDecay || amsgrad || maximize)
            throw new InvalidDataException($"the optimizer state was saved with β = ({b1}, {b2}), weight decay {decay}; this run has ({beta1}, {beta2}), {group.WeightDecay}");
    }

    protected override void SaveState(BinaryWriter writer, Group group, int parameter)
    {
        var (m, v) = moments[groups.IndexOf(group)];
        writer.Write(steps);
        ModuleState.WriteTensor(writer, group.Slice(m, parameter));
        ModuleState.WriteTensor(writer, group.Slice(v, parameter));
        writer.Write(false);   // no amsgrad maximum
    }

    protected override void LoadState(BinaryReader reader, Group group, int parameter)
    {
        var (m, v) = moments[groups.IndexOf(group)];
        steps = reader.ReadInt64();   // every tensor took the same steps
        LoadSlice(reader, group, m, parameter);
        LoadSlice(reader, group, v, parameter);
        if (reader.ReadBoolean()) throw new InvalidDataException("the optimizer state holds AMSGrad maxima; this run does not use AMSGrad");
    }

    public override void Dispose()
    {
        foreach (var (m, v) in moments) { m.Dispose(); v.Dispose(); }
        base.Dispose();
    }
}

/// <summary>
/// SGD with momentum as torch.optim.SGD computes it (dampening 0): d = g + wd·p; b ← d on the first step, else
/// b ← μ·b + d; p ← p − lr·(d + μ·b) with Nesterov, p ← p − lr·b without.
/// </summary>
public sealed class FlatSgd : FlatOptimizer
{
    readonly double momentum;
    readonly bool nesterov;
    readonly List<Tensor?> buffers = [];

    public FlatSgd(IEnumerable<(IReadOnlyList<Parameter> Parameters, double WeightDecay)> parameterGroups, double learningRate,
        double momentum = 0, bool nesterov = false) : base(parameterGroups, learningRate)
    {
        (this.momentum, this.nesterov) = (momentum, nesterov);
        buffers.AddRange(groups.Select(_ => (Tensor?)null));
    }

    public override void Step()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        for (int i = 0; i < groups.Count; i++)
        {
            var g = groups[i];
            var direction = g.WeightDecay != 0 ? g.Gradients.add(g.Values, alpha: g.WeightDecay) : g.Gradients;
            if (momentum != 0)
            {
                if (buffers[i] is { } buffer) buffer.mul_(momentum).add_(direction);
                else buffers[i] = direction.clone().DetachFromDisposeScope();
                direction = nesterov ? direction.add(buffers[i]!, alpha: momentum) : buffers[i]!;
            }
            g.Values.add_(direction, alpha: -LearningRate);
        }
    }

    protected override string TypeName => "SGD";

    protected override void SaveOptions(BinaryWriter writer, Group group)
    {
        writer.Write(momentum);
        writer.Write(0.0);     // dampening
        writer.Write(group.WeightDecay);
        writer.Write(nesterov);
        writer.Write(false);   // maximize
    }

    protected override void LoadOptions(BinaryReader reader, Group group)
    {
        double mu = reader.ReadDouble(), dampening = reader.ReadDouble(), decay = reader.ReadDouble();
        bool nest = reader.ReadBoolean(), maximize = reader.ReadBoolean();
        if (mu != momentum || dampening != 0 || decay != group.WeightDecay || nest != nesterov || maximize)
            throw new InvalidDataException($"the optimizer state was saved with momentum {mu}, weight decay {decay}, Nesterov {nest}; " +
                $"this run has {momentum}, {group.WeightDecay}, {nesterov}");
    }

    protected override void SaveState(BinaryWriter writer, Group group, int parameter)
    {
        var buffer = buffers[groups.IndexOf(group)];
        writer.Write(buffer is not null);
        if (buffer is not null) ModuleState.WriteTensor(writer, group.Slice(buffer, parameter));
    }

    protected override void LoadState(BinaryReader reader, Group group, int parameter)
    {
        int index = groups.IndexOf(group);
        if (!reader.ReadBoolean()) return;
        buffers[index] ??= zeros_like(group.Values).DetachFromDisposeScope();
        LoadSlice(reader, group, buffers[index]!, parameter);
    }

    public override void Dispose()
    {
        foreach (var b in buffers) b?.Dispose();
        base.Dispose();
    }
}
