using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit;

/// <summary>
/// Where tensors live. CUDA when available, else CPU; force one with the RESEARCHKIT_DEVICE
/// environment variable ("cpu", "cuda", "cuda:1") or by assigning <see cref="Device"/>.
/// </summary>
public static class Compute
{
    static Device? device;

    public static Device Device
    {
        get => device ??= Choose(Environment.GetEnvironmentVariable("RESEARCHKIT_DEVICE"));
        set => device = value;
    }

    /// <summary>Resolve a device name ("auto", "cpu", "cuda", "cuda:N"); null or "auto" picks CUDA when present.</summary>
    public static Device Choose(string? name)
    {
        if (string.IsNullOrWhiteSpace(name) || name == "auto")
            return cuda.is_available() ? CUDA : CPU;
        if (name.StartsWith("cuda") && !cuda.is_available())
            throw new ResearchKitException($"device '{name}' was requested (RESEARCHKIT_DEVICE or --device) but CUDA is not available on this machine; use 'cpu' or 'auto'");
        try { return torch.device(name); }
        catch (Exception e) { throw new ResearchKitException($"device '{name}' is not a device name; expected auto, cpu, cuda or cuda:N ({e.Message})"); }
    }

    /// <summary>Seed every generator ResearchKit uses implicitly (parameter initialisation).</summary>
    public static void Seed(int seed)
    {
        torch.manual_seed(seed);
        if (cuda.is_available()) torch.cuda.manual_seed_all(seed);
    }
}

/// <summary>An error a user can act on: its message names the file, field or parameter and what was expected.</summary>
public class ResearchKitException(string message, Exception? inner = null) : Exception(message, inner);
