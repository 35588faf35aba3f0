using System.Runtime.InteropServices;

namespace ResearchKit.Cli;

/// <summary>
/// Native libraries that fail to load become one-line errors naming the library and what to do, not a .NET stack trace:
/// TorchSharp's (checked before anything touches it, since TorchSharp prints a 30-line trace of its own when it gives up)
/// and SkiaSharp's (images and chart PNGs; caught where it is first used).
/// </summary>
static class NativeLibraries
{
    const string TorchSharpLibrary = "libLibTorchSharp.so";

    /// <summary>Loads TorchSharp's native library as TorchSharp will; null when it loads (or is not there to check), else the error.</summary>
    public static string? TorchSharpError()
    {
        if (!OperatingSystem.IsLinux()) return null;
        var path = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", TorchSharpLibrary);
        if (!File.Exists(path)) return null;   // TorchSharp looks elsewhere too; let it
        try
        {
            NativeLibrary.Free(NativeLibrary.Load(path));
            return null;
        }
        catch (DllNotFoundException e)
        {
            return Describe("TorchSharp", TorchSharpLibrary, e.Message);
        }
    }

    /// <summary>A one-line message for an exception caused by a native library that did not load, or null.</summary>
    public static string? Describe(Exception e)
    {
        for (var x = e; x is not null; x = x.InnerException)
        {
            if (x is DllNotFoundException missing && missing.Message.Contains("SkiaSharp", StringComparison.OrdinalIgnoreCase))
                return Describe("SkiaSharp", "libSkiaSharp.so", missing.Message);
            if (x is DllNotFoundException or NotSupportedException && x.Message.Contains("TorchSharp", StringComparison.Ordinal))
                return Describe("TorchSharp", TorchSharpLibrary, x.Message);
        }
        return null;
    }

    static string Describe(string package, string library, string reason)
    {
        var cause = reason.ReplaceLineEndings(" ").Trim();
        if (cause.Length > 300) cause = cause[..300] + "…";
        string hint = package == "SkiaSharp"
            ? "images and chart PNGs need it; rebuild (the kit ships SkiaSharp.NativeAssets.Linux.NoDependencies, which needs no fontconfig)"
            : cause.Contains("undefined symbol") || cause.Contains("version `")
                ? "the libtorch it found does not fit TorchSharp 0.107, which is built for libtorch 2.10 (PyTorch 2.11's libtorch also loads); " +
                  "see environment.md, CUDA"
                : "libtorch was not found beside it or on LD_LIBRARY_PATH: build with the CPU libtorch (the default), or point RESEARCHKIT_LIBTORCH " +
                  "at a PyTorch 2.10/2.11 install (environment.md, CUDA)";
        return $"{package}'s native library {library} could not be loaded ({cause}); {hint}";
    }
}
