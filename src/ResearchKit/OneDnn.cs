using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace ResearchKit;

/// <summary>
/// libtorch's oneDNN (mkldnn) CPU convolutions: off by default, on while a model whose every convolution has a shape they
/// compute correctly trains (<see cref="For"/>).
/// Why: on a CPU with AVX-512 (a 2-core AMD EPYC, measured 2026-12-07, libtorch 2.10 through TorchSharp 0.107) oneDNN's
/// convolutions are wrong for channel counts that are not a multiple of 16, its vector width:
/// <list type="bullet">
/// <item>the output is wrong (errors of 20–30 % of its scale) when the input has such a channel count above 4 (24 measured);</item>
/// <item>the input gradient is wrong, sometimes NaN, when the output has such a channel count (1, 3, 8, 10, 24 measured);</item>
/// <item>with both counts multiples of 16, or 1–3 input channels (an image) and a multiple of 16 out, outputs and both
/// gradients match ATen's to 1e-5 relative, for 1×1, 3×3, 4×4/2 and transposed 4×4/2 and 2×2/2 convolutions
/// (<c>OneDnnTests</c> checks this on the machine it runs on).</item>
/// </list>
/// That is why the supervised CNN at width 24 diverged in 14 of 16 seeded runs and SSGAN (a 3-channel output layer) in 4 of 6.
/// Capping the ISA at AVX2 (8-wide) moved the failures to counts not a multiple of 8. ATen's own convolutions are correct and
/// about 2.2× slower for the CNN's training step. RESEARCHKIT_ONEDNN=1 keeps oneDNN on for every model, =0 off for every
/// model. CUDA is not affected.
/// </summary>
public static class OneDnn
{
    static bool applied;

    /// <summary>The channel multiple oneDNN's CPU convolutions were correct for (AVX-512's 16 floats).</summary>
    public const int SafeChannels = 16;

    /// <summary>Whether oneDNN is enabled in libtorch now (null: not known, e.g. not on Linux).</summary>
    public static bool? Enabled => Native() is { } n ? n.Get(n.Context) : null;

    /// <summary>
    /// Applies the process default once (after TorchSharp has loaded libtorch): oneDNN off unless RESEARCHKIT_ONEDNN=1, and
    /// NNPACK off with it. Why NNPACK: with oneDNN off, ATen tries NNPACK for convolutions that need no gradient
    /// (evaluation), and where NNPACK cannot start (this AMD EPYC: "Unsupported hardware") libtorch prints a warning at every
    /// such call, hundreds per notebook, into cell outputs; ATen's own kernels then run anyway. Off, they run in silence.
    /// </summary>
    public static void Apply()
    {
        if (applied) return;
        applied = true;
        Set(Forced ?? false);
        if (Forced != true && Native() is { } n && n.SetNnpack is { } setNnpack) setNnpack(n.Context, false);
    }

    /// <summary>Whether NNPACK is enabled in libtorch now (null: not known).</summary>
    internal static bool? NnpackEnabled => Native() is { GetNnpack: { } get } n ? get(n.Context) : null;

    /// <summary>
    /// Whether every convolution weight in <paramref name="module"/> (a 4-D parameter: [out, in, k, k], or [in, out, k, k]
    /// transposed) has a shape oneDNN computes correctly: the first dimension a multiple of <see cref="SafeChannels"/>, the
    /// second one too or at most 4 (an image's channels). A model with any other convolution trains on ATen's.
    /// </summary>
    public static bool SafeFor(nn.Module module) => module.parameters().Where(p => p.dim() == 4)
        .All(p => p.shape[0] % SafeChannels == 0 && (p.shape[1] % SafeChannels == 0 || p.shape[1] <= 4));

    /// <summary>
    /// oneDNN on while the returned scope lives if <paramref name="module"/> is <see cref="SafeFor"/> and products run in
    /// fp32 (bf16 kernels were not checked), else off; the scope restores the previous setting. The trainer holds one per fit.
    /// </summary>
    public static IDisposable For(nn.Module module)
    {
        Apply();
        bool? previous = Enabled;
        if (previous is null) return new Restore(null);
        Set(Forced ?? (!unsafeFrozen && SafeFor(module) && Compute.Precision == Precision.Fp32));
        return new Restore(previous);
    }

    static volatile bool unsafeFrozen;

    /// <summary>
    /// A frozen network a model uses but does not hold (<see cref="Methods.Dependencies"/>: a teacher, a perceptual network, a
    /// tokenizer) runs inside the model's steps, and gradients may flow through it. If it is not <see cref="SafeFor"/>, oneDNN
    /// stays off for the rest of the process: slower, never wrong.
    /// </summary>
    public static void NoteFrozen(nn.Module module)
    {
        if (!SafeFor(module)) unsafeFrozen = true;
    }

    /// <summary>Forgets the frozen networks noted so far (tests that check the switch itself).</summary>
    internal static void ForgetFrozen() => unsafeFrozen = false;

    /// <summary>RESEARCHKIT_ONEDNN: "1" on for every model, "0" off for every model, unset: by <see cref="SafeFor"/>.</summary>
    static bool? Forced => Environment.GetEnvironmentVariable("RESEARCHKIT_ONEDNN")?.Trim() switch { "1" => true, "0" => false, _ => null };

    sealed class Restore(bool? previous) : IDisposable
    {
        public void Dispose()
        {
            if (previous is { } p) Set(p);
        }
    }

    /// <summary>Switches oneDNN on or off now (no effect where <see cref="Enabled"/> is null).</summary>
    internal static void Set(bool enabled)
    {
        if (Native() is { } n) n.Set(n.Context, enabled);
    }

    delegate IntPtr GlobalContextFn();
    delegate void SetEnabledFn(IntPtr context, [MarshalAs(UnmanagedType.I1)] bool enabled);
    [return: MarshalAs(UnmanagedType.I1)] delegate bool GetEnabledFn(IntPtr context);

    /// <summary>at::globalContext() and its oneDNN switch in the libtorch TorchSharp loaded, found by soname (RTLD_NOLOAD), so no
    /// second copy of libtorch is loaded; null where that library or a symbol is not there.</summary>
    static Switches? Native() => native.Value;

    static readonly Lazy<Switches?> native = new(Find);

    /// <summary>libtorch's global context and its oneDNN switch; its NNPACK switch where the library exports it.</summary>
    sealed record Switches(IntPtr Context, SetEnabledFn Set, GetEnabledFn Get, SetEnabledFn? SetNnpack, GetEnabledFn? GetNnpack);

    static Switches? Find()
    {
        if (!OperatingSystem.IsLinux()) return null;
        TorchSharp.torch.get_num_threads();   // TorchSharp loads libtorch on first use
        var library = dlopen("libtorch_cpu.so", RtldLazy | RtldNoLoad);
        if (library == IntPtr.Zero) return null;
        IntPtr global = dlsym(library, "_ZN2at13globalContextEv"), set = dlsym(library, "_ZN2at7Context20setUserEnabledMkldnnEb"),
            get = dlsym(library, "_ZNK2at7Context17userEnabledMkldnnEv");
        if (global == IntPtr.Zero || set == IntPtr.Zero || get == IntPtr.Zero) return null;
        IntPtr setNnpack = dlsym(library, "_ZN2at7Context20setUserEnabledNNPACKEb"), getNnpack = dlsym(library, "_ZNK2at7Context17userEnabledNNPACKEv");
        return new(Marshal.GetDelegateForFunctionPointer<GlobalContextFn>(global)(), Marshal.GetDelegateForFunctionPointer<SetEnabledFn>(set),
            Marshal.GetDelegateForFunctionPointer<GetEnabledFn>(get),
            setNnpack == IntPtr.Zero ? null : Marshal.GetDelegateForFunctionPointer<SetEnabledFn>(setNnpack),
            getNnpack == IntPtr.Zero ? null : Marshal.GetDelegateForFunctionPointer<GetEnabledFn>(getNnpack));
    }

    const int RtldLazy = 1, RtldNoLoad = 4;

    [DllImport("libc.so.6")] static extern IntPtr dlopen(string file, int mode);
    [DllImport("libc.so.6")] static extern IntPtr dlsym(IntPtr handle, string name);
}
