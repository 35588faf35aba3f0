using static TorchSharp.torch;

namespace ResearchKit;

/// <summary>
/// Shape checks before native calls that cannot report a mismatch: TorchSharp's `matmul` (and a few other entry
/// points, listed in environment.md) let libtorch's C++ exception abort the process instead of throwing. Each check
/// throws an ArgumentException naming the parameter and both shapes.
/// </summary>
public static class Shapes
{
    public static string Of(Tensor t) => $"[{string.Join(", ", t.shape)}]";

    /// <summary>Features [N, D] with labels [N].</summary>
    public static void RequireFeatures(Tensor features, Tensor labels, string featuresName, string labelsName)
    {
        if (features.dim() != 2) throw new ArgumentException($"{featuresName} must be [N, D] features; got {Of(features)}", featuresName);
        if (labels.dim() != 1 || labels.shape[0] != features.shape[0])
            throw new ArgumentException($"{labelsName} must be [N] labels for {featuresName} {Of(features)}; got {Of(labels)}", labelsName);
    }

    /// <summary>Two feature sets compared row by row or fitted and tested together must have the same width D.</summary>
    public static void RequireSameWidth(Tensor a, Tensor b, string aName, string bName)
    {
        if (a.shape[1] != b.shape[1])
            throw new ArgumentException($"{aName} {Of(a)} and {bName} {Of(b)} must have the same feature width", bName);
    }
}
