using System.Runtime.InteropServices;

namespace ResearchKit;

/// <summary>
/// Turns libtorch's oneDNN (mkldnn) CPU kernels off for the process, so convolutions run on ATen's own kernels. Applied when
/// <see cref="Compute.Device"/> is first chosen or set, or <see cref="Compute.Seed"/> is called.
/// Why: on a CPU with AVX-512 (a 2-core AMD EPYC, measured 2026-12-07, libtorch 2.10 through TorchSharp 0.107) oneDNN's
/// convolution backward returns NaN gradients now and then, from the same seed one run in several:
/// <list type="bullet">
/// <item>the supervised CNN at width 24 diverged in 14 of 16 seeded runs with oneDNN, none of 16 without;</item>
/// <item>SSGAN diverged in 4 of 6 with oneDNN, none of 6 without (the kit's GAN tests failed on that machine);</item>
/// <item>capping oneDNN at AVX2 (ONEDNN_MAX_CPU_ISA) cured the first and not the second.</item>
/// </list>
/// ATen's convolutions are correct there and about 2.2× slower for the tiny CNN's training step. RESEARCHKIT_ONEDNN=1 keeps
/// oneDNN on (faster, at that risk); CUDA is not affected. <see cref="Layers.Mixed"/>'s padded filters are an older
/// workaround for the same family of failures and stay.
/// </summary>
public static class OneDnn
{
    static bool applied;

    /// <summary>Whether oneDNN is enabled in libtorch now (null: not known, e.g. not on Linux).</summary>
    public static bool? Enabled => Native() is { } n ? n.Get(n.Context) : null;

    /// <summary>Applies the setting once per process (after TorchSharp has loaded libtorch); later calls do nothing.</summary>
    public static void Apply()
    {
        if (applied) return;
        applied = true;
        if (Environment.GetEnvironmentVariable("RESEARCHKIT_ONEDNN")?.Trim() == "1") return;
        if (Native() is { } n) n.Set(n.Context, false);
    }

    delegate IntPtr GlobalContextFn();
    delegate void SetEnabledFn(IntPtr context, [MarshalAs(UnmanagedType.I1)] bool enabled);
    [return: MarshalAs(UnmanagedType.I1)] delegate bool GetEnabledFn(IntPtr context);

    /// <summary>at::globalContext() and its oneDNN switch in the libtorch TorchSharp loaded, found by soname (RTLD_NOLOAD), so no
    /// second copy of libtorch is loaded; null where that library or a symbol is not there.</summary>
    static (IntPtr Context, SetEnabledFn Set, GetEnabledFn Get)? Native()
    {
        if (!OperatingSystem.IsLinux()) return null;
        TorchSharp.torch.get_num_threads();   // TorchSharp loads libtorch on first use
        var library = dlopen("libtorch_cpu.so", RtldLazy | RtldNoLoad);
        if (library == IntPtr.Zero) return null;
        IntPtr global = dlsym(library, "_ZN2at13globalContextEv"), set = dlsym(library, "_ZN2at7Context20setUserEnabledMkldnnEb"),
            get = dlsym(library, "_ZNK2at7Context17userEnabledMkldnnEv");
        if (global == IntPtr.Zero || set == IntPtr.Zero || get == IntPtr.Zero) return null;
        return (Marshal.GetDelegateForFunctionPointer<GlobalContextFn>(global)(), Marshal.GetDelegateForFunctionPointer<SetEnabledFn>(set),
            Marshal.GetDelegateForFunctionPointer<GetEnabledFn>(get));
    }

    const int RtldLazy = 1, RtldNoLoad = 4;

    [DllImport("libc.so.6")] static extern IntPtr dlopen(string file, int mode);
    [DllImport("libc.so.6")] static extern IntPtr dlsym(IntPtr handle, string name);
}
