using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit;

/// <summary>How matrix products are computed (<see cref="Compute.Precision"/>).</summary>
public enum Precision
{
    /// <summary>Full float32 everywhere.</summary>
    Fp32,
    /// <summary>float32 tensors; CUDA matrix products and convolutions on TF32 tensor cores (10-bit mantissa inputs, fp32 accumulation). The CPU has no TF32: there it is fp32.</summary>
    Tf32,
    /// <summary>
    /// Mixed precision in the kit's own layers (TorchSharp has no autocast): linear layers, convolutions and attention take
    /// bfloat16 inputs; weights, optimizer state, norms, softmax, residual sums and losses stay float32 (<see cref="Layers.Mixed"/>).
    /// </summary>
    Bf16,
}

/// <summary>
/// Where tensors live and how they are computed. CUDA when available, else CPU; force one with the RESEARCHKIT_DEVICE
/// environment variable ("cpu", "cuda", "cuda:1") or by assigning <see cref="Device"/>. Everything the kit makes is placed
/// explicitly: models are built on the host (<see cref="Build{T}"/>, so initialisation is the same on every device) and
/// moved; tensors say where they are made; random draws come from <see cref="Draws"/>.
/// </summary>
public static class Compute
{
    static Device? device;
    static Precision? precision;

    /// <summary>The device; choosing or setting it also turns libtorch's oneDNN CPU kernels off (<see cref="OneDnn"/>). Not in a static
    /// constructor: the module initializer below runs before a notebook host such as .NET Interactive can load libtorch.</summary>
    public static Device Device
    {
        get
        {
            if (device is null)
            {
                device = Choose(Environment.GetEnvironmentVariable("RESEARCHKIT_DEVICE"));
                OneDnn.Apply();
            }
            return device;
        }
        set
        {
            device = value;
            OneDnn.Apply();
        }
    }

    /// <summary>Whether <see cref="Device"/> is a CUDA device.</summary>
    public static bool OnCuda => Device.type == DeviceType.CUDA;

    /// <summary>The precision of matrix products (default: TF32 on CUDA, fp32 on the CPU). Setting it applies TF32's switches at once.</summary>
    public static Precision Precision
    {
        get => precision ?? DefaultPrecision(Device);
        set
        {
            precision = value;
            ApplyMatmulMode(value);
        }
    }

    /// <summary>The default for a device: TF32 on CUDA (as PyTorch's `set_float32_matmul_precision("high")`), fp32 on the CPU.</summary>
    public static Precision DefaultPrecision(Device on) => on.type == DeviceType.CUDA ? Precision.Tf32 : Precision.Fp32;

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

    /// <summary>Parses "fp32", "tf32" or "bf16" (case-insensitive); null or "auto" means the device's default.</summary>
    public static Precision ParsePrecision(string? name, Device on) => name?.Trim().ToLowerInvariant() is null or "" or "auto"
        ? DefaultPrecision(on) : Methods.EnumNames.Parse<Precision>("--precision", name.Trim().ToLowerInvariant());

    /// <summary>TF32 is a switch of cuBLAS and cuDNN; bf16 matmuls are fp32 elsewhere, so TF32 is off under bf16 and fp32.</summary>
    static void ApplyMatmulMode(Precision value)
    {
        if (!cuda.is_available()) return;
        backends.cuda.matmul.allow_tf32 = value == Precision.Tf32;
        backends.cudnn.allow_tf32 = value == Precision.Tf32;
    }

    /// <summary>Seed every generator ResearchKit uses implicitly (parameter initialisation on the host, CUDA's default generators).</summary>
    public static void Seed(int seed)
    {
        OneDnn.Apply();
        torch.manual_seed(seed);
        if (cuda.is_available()) torch.cuda.manual_seed_all(seed);
    }

    /// <summary>
    /// Builds a module on the host and moves it to <see cref="Device"/>: parameters are initialised by the CPU's generator,
    /// so a seed gives the same initial weights on every device. Inside <paramref name="create"/> TorchSharp's implicit
    /// device is the CPU, even under the device guard.
    /// </summary>
    public static T Build<T>(Func<T> create) where T : nn.Module
    {
        T module;
        using (OnHost()) module = create();
        module.to(Device);
        return module;
    }

    /// <summary>While the returned scope lives, tensors and modules made without a device are made on the CPU (model construction).</summary>
    public static IDisposable OnHost()
    {
        OneDnn.Apply();
        return new DefaultDevice(CPU);
    }

    sealed class DefaultDevice : IDisposable
    {
        readonly Device previous = get_default_device();
        public DefaultDevice(Device device) => set_default_device(device);
        public void Dispose() => set_default_device(previous);
    }

    /// <summary>
    /// Host values as a tensor on <paramref name="on"/>, without waiting for the device: on CUDA the values go to pinned
    /// memory and are copied asynchronously (a copy from ordinary memory would synchronise the stream). For the small
    /// per-step uploads: augmentation parameters, batch indices, host-drawn masks.
    /// </summary>
    public static Tensor Upload(float[] values, long[] shape, Device on) => Upload(tensor(values, shape, device: CPU), on);

    /// <inheritdoc cref="Upload(float[], long[], Device)"/>
    public static Tensor Upload(long[] values, Device on) => Upload(tensor(values, device: CPU), on);

    /// <summary>A host tensor on <paramref name="on"/>: as it is on the CPU, through pinned memory to CUDA.</summary>
    public static Tensor Upload(Tensor host, Device on)
    {
        if (on.type != DeviceType.CUDA) return host.to(on);
        using var pinned = host.pin_memory();
        return pinned.to(on, non_blocking: true);
    }

    /// <summary>
    /// Memory in use on the CUDA device in MB (cudaMemGetInfo: total − free), which counts the CUDA context and what
    /// libtorch's caching allocator holds (at least the peak of what tensors ever held, since it keeps freed blocks);
    /// null on the CPU or where the CUDA runtime cannot be found. TorchSharp exposes no allocator statistics.
    /// </summary>
    public static double? DeviceMemoryInUseMb()
    {
        if (!OnCuda || CudaRuntime.MemGetInfo is not { } info) return null;
        return info(out var free, out var total) == 0 ? Math.Round((total - free) / 1048576.0, 1) : null;
    }

    static class CudaRuntime
    {
        [System.Runtime.InteropServices.UnmanagedFunctionPointer(System.Runtime.InteropServices.CallingConvention.Cdecl)]
        public delegate int MemGetInfoFunction(out ulong free, out ulong total);

        public static readonly MemGetInfoFunction? MemGetInfo = Find();

        // The runtime libtorch loaded (libcudart.so.12, .13, …), found by path among the process's mapped libraries.
        static MemGetInfoFunction? Find()
        {
            if (!File.Exists("/proc/self/maps")) return null;
            var path = File.ReadLines("/proc/self/maps").Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries).LastOrDefault())
                .FirstOrDefault(p => p is not null && p.StartsWith('/') && Path.GetFileName(p).StartsWith("libcudart"));
            if (path is null || !System.Runtime.InteropServices.NativeLibrary.TryLoad(path, out var handle)
                || !System.Runtime.InteropServices.NativeLibrary.TryGetExport(handle, "cudaMemGetInfo", out var address)) return null;
            return System.Runtime.InteropServices.Marshal.GetDelegateForFunctionPointer<MemGetInfoFunction>(address);
        }
    }

    /// <summary>
    /// The CPU-side device guard (RESEARCHKIT_DEVICE_GUARD=1): TorchSharp's implicit device becomes the data-less "meta"
    /// device, so a tensor, module or generator made without saying where it lives carries no values, and whatever it
    /// touches fails loudly — the bugs that only a second device would otherwise show. CI runs the notebooks and every
    /// method's command line under it (tests/ResearchKit.Tests/DeviceGuard).
    /// </summary>
    // CA2255 warns against module initialisers in libraries; this one must run before any user code makes a tensor,
    // which only a module initialiser guarantees for notebooks and tests alike.
#pragma warning disable CA2255
    [System.Runtime.CompilerServices.ModuleInitializer]
#pragma warning restore CA2255
    internal static void ApplyDeviceGuard()
    {
        if (GuardEnabled) set_default_device(META);
    }

    /// <summary>Whether the device guard is on in this process.</summary>
    public static bool GuardEnabled => Environment.GetEnvironmentVariable("RESEARCHKIT_DEVICE_GUARD") == "1";
}

/// <summary>
/// Constant host data (normalisation statistics, a palette's colours) on the device it was last used on, uploaded once
/// rather than at every batch: each upload from ordinary memory waits for the device. The copy is kept beside the host
/// object it was made from (weakly: it goes with it).
/// </summary>
public static class DeviceCopy
{
    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<object, Tensor> copies = new();

    /// <summary>A float array as a tensor of <paramref name="shape"/> on <paramref name="device"/>.</summary>
    public static Tensor Of(float[] values, long[] shape, Device device) =>
        Cached(values, device, () => Compute.Upload(values, shape, device));

    /// <summary>A CPU tensor on <paramref name="device"/> (itself on the CPU). The host tensor must not change afterwards.</summary>
    public static Tensor Of(Tensor host, Device device) =>
        device.type == DeviceType.CPU ? host : Cached(host, device, () => Compute.Upload(host, device));

    static Tensor Cached(object key, Device device, Func<Tensor> upload)
    {
        if (copies.TryGetValue(key, out var copy) && copy.device.type == device.type && copy.device.index == device.index) return copy;
        copy = upload().DetachFromDisposeScope();
        copies.AddOrUpdate(key, copy);
        return copy;
    }
}

/// <summary>An error a user can act on: its message names the file, field or parameter and what was expected.</summary>
public class ResearchKitException(string message, Exception? inner = null) : Exception(message, inner);
