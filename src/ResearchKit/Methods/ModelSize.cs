using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Methods;

/// <summary>
/// A model's size worked out from its configuration before anything is built: parameters, and the float32 values one
/// image keeps for the backward pass. Building first is no way to find out: a decoder of depth 100,000 spent minutes
/// constructing blocks, and a width of 10⁶ died in a 12 TB allocation after config.json was written (issue 22, items 8, 11).
/// Estimates count the large tensors (linear and convolution weights, saved activations and attention maps), not every
/// bias; <see cref="MemoryBudget"/> compares them with the machine.
/// </summary>
public sealed record ModelSize(double Parameters, double ActivationsPerImage)
{
    public static ModelSize None { get; } = new(0, 0);

    public static ModelSize operator +(ModelSize a, ModelSize b) => new(a.Parameters + b.Parameters, a.ActivationsPerImage + b.ActivationsPerImage);

    /// <summary>A linear layer applied to <paramref name="tokens"/> positions: its weight and bias, and its outputs.</summary>
    public static ModelSize Linear(double inputs, double outputs, double tokens = 1) => new(inputs * outputs + outputs, tokens * outputs);

    /// <summary>A learned table or token: parameters only.</summary>
    public static ModelSize Table(double values) => new(values, 0);

    /// <summary>
    /// <paramref name="depth"/> pre-norm transformer blocks (<see cref="Layers.TransformerBlock"/>) over <paramref name="tokens"/>
    /// positions: 4D² + 2rD² weights each; per token the saved inputs of both norms, q, k, v, the attention output, the
    /// MLP's hidden layer before and after GELU (≈ 8D + 2rD values), and per head a row of attention logits and probabilities.
    /// </summary>
    public static ModelSize TransformerBlocks(int depth, int dim, int heads, double mlpRatio, double tokens)
    {
        double hidden = Math.Floor(dim * mlpRatio);
        double parameters = 4.0 * dim * dim + 2 * dim * hidden + 9.0 * dim + hidden;
        double activations = tokens * (8.0 * dim + 2 * hidden) + 2.0 * heads * tokens * tokens;
        return new(depth * parameters, depth * activations);
    }

    /// <summary>Bytes to train in float32 with AdamW: weights, gradients and two moments, and one batch's saved activations.</summary>
    public double TrainingBytes(int batch) => 16 * Parameters + 4 * ActivationsPerImage * batch;
}

/// <summary>What a configuration may take of the machine before it is built.</summary>
public static class MemoryBudget
{
    /// <summary>The memory this process may use (the cgroup's limit when there is one).</summary>
    public static double Available => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>
    /// Refuses, in one line with the estimate, a model whose training cannot fit: on the CPU its weights, optimizer state and
    /// a batch's activations against the machine's memory; on a GPU its weights, which are built on the host first.
    /// </summary>
    public static void Check(ModelSize size, int batch, string owner, string advice)
    {
        bool onHost = Compute.Device.type == DeviceType.CPU;
        double needed = onHost ? size.TrainingBytes(batch) : 4 * size.Parameters, available = Available;
        if (needed <= available) return;
        throw new ResearchKitException($"{owner}: the model would have {Count(size.Parameters)} parameters and need about {Bytes(needed)} " +
            $"{(onHost ? $"to train at batch {batch}" : "to build on the host")}, more than the {Bytes(available)} this machine has; {advice}");
    }

    static string Count(double n) => n >= 1e12 ? n.ToString("0.#e+0", System.Globalization.CultureInfo.InvariantCulture) : n >= 1e9 ? $"{n / 1e9:0.#} billion" : n >= 1e6 ? $"{n / 1e6:0.#} million" : $"{n:N0}";

    static string Bytes(double b) => b >= 1e12 ? $"{b / 1e12:0.#} TB" : b >= 1e9 ? $"{b / 1e9:0.#} GB" : $"{b / 1e6:0.#} MB";
}
