using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit;

/// <summary>
/// Random draws on any device from a step's host generator, deterministic for a seed on each device.
/// Why this exists: TorchSharp 0.107 makes CPU generators only (THSGenerator_new ignores its device argument), and
/// libtorch aborts the process when a CPU generator reaches a CUDA op. So on the CPU a draw uses the generator itself
/// (the values are those of <c>torch.rand(…, generator)</c>); on CUDA each draw takes one 64-bit seed from the host
/// generator (host arithmetic, no device wait) and seeds the device's own Philox generator with it, so the draw runs on
/// the device with no copy and no synchronisation. A draw therefore differs between CPU and CUDA, but repeats exactly on
/// either. This is the one file allowed to hand a generator to TorchSharp (tests/ResearchKit.Tests/DeviceGuard).
/// </summary>
public static class Draws
{
    /// <summary>Uniform values in [0, 1), float32, of <paramref name="shape"/> on <paramref name="on"/>.</summary>
    public static Tensor Uniform(Generator? generator, long[] shape, Device on) =>
        Direct(on, generator) ? rand(shape, generator: generator, device: on) : OnDevice(generator, on, () => rand(shape, device: on));

    /// <summary>Standard normal values, float32, of <paramref name="shape"/> on <paramref name="on"/>.</summary>
    public static Tensor Normal(Generator? generator, long[] shape, Device on) =>
        Direct(on, generator) ? randn(shape, generator: generator, device: on) : OnDevice(generator, on, () => randn(shape, device: on));

    /// <summary>Integers in [<paramref name="low"/>, <paramref name="high"/>), int64, of <paramref name="shape"/> on <paramref name="on"/>.</summary>
    public static Tensor Integers(Generator? generator, long low, long high, long[] shape, Device on) =>
        Direct(on, generator) ? randint(low, high, shape, generator: generator, device: on)
            : OnDevice(generator, on, () => randint(low, high, shape, device: on));

    /// <summary>
    /// <paramref name="samples"/> indices per row of <paramref name="weights"/> ([N] or [B, N], non-negative), drawn with
    /// probability ∝ weight, on the weights' device.
    /// </summary>
    public static Tensor Multinomial(Generator? generator, Tensor weights, long samples, bool replacement = false) =>
        Direct(weights.device, generator) ? weights.multinomial(samples, replacement, generator: generator)
            : OnDevice(generator, weights.device, () => weights.multinomial(samples, replacement));

    /// <summary>
    /// A <see cref="System.Random"/> for host-side samplers (BEiT's blockwise masks), seeded by one draw of
    /// <paramref name="generator"/> (or of the default CPU generator): deterministic for a seed, and the same on every device.
    /// </summary>
    public static System.Random Host(Generator? generator) => new((int)NextSeed(generator, int.MaxValue));

    // TorchSharp's generators live on the CPU: a CPU tensor takes one directly. Without a generator, a draw uses the
    // device's default generator (seeded by Compute.Seed).
    static bool Direct(Device on, Generator? generator) => on.type == DeviceType.CPU || generator is null;

    static Tensor OnDevice(Generator? generator, Device on, Func<Tensor> draw)
    {
        long seed = NextSeed(generator!, long.MaxValue);
        if (on.type == DeviceType.CUDA) cuda.manual_seed_all(seed);
        return draw();
    }

    /// <summary>One integer in [0, high) from the host generator (a CPU op: no device is involved).</summary>
    static long NextSeed(Generator? generator, long high) =>
        randint(0, high, new long[] { 1 }, generator: generator, device: CPU).item<long>();
}
