using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;
using System.Security.Cryptography;

namespace ResearchKit;

/// <summary>
/// Makes TorchSharp's native library load on systems whose libstdc++ is older than the one it was built against
/// (Debian 12, Ubuntu 22.04: environment.md, "Debian 12 native fix"). Our own builds patch their output copy
/// (the build tool runs TorchSharpNative.Elf.cs on it); this is the same fix at run time for hosts that load TorchSharp from the NuGet cache,
/// such as .NET Interactive: a patched copy goes to a cache folder (never into the NuGet cache) and TorchSharp's
/// imports of LibTorchSharp resolve to it. It does nothing where the system has the version or the library is patched.
/// </summary>
public static partial class TorchSharpNative
{
    const string LibraryName = "LibTorchSharp";
    static readonly object gate = new();
    static string? prepared;

    /// <summary>
    /// Call before the first use of TorchSharp in a host that does not build its own output (a notebook kernel).
    /// Returns the path of the library TorchSharp will use, or null when no fix was needed. Safe to call again.
    /// </summary>
    public static string? Prepare()
    {
        lock (gate)
        {
            if (prepared != null || !OperatingSystem.IsLinux() || SystemLibstdcxxHas(MissingVersion)) return prepared;
            var torchSharp = Assembly.Load("TorchSharp");
            var original = FindLibrary(torchSharp);
            if (original == null) return null;
            var patched = MarkVersionWeak(File.ReadAllBytes(original), MissingVersion);
            if (patched == null) return null;   // already weak, or the version is not needed

            var hash = Convert.ToHexString(SHA256.HashData(patched))[..16].ToLowerInvariant();
            var copy = Path.Combine(UserCache.Folder("native"), hash, Path.GetFileName(original));
            if (!File.Exists(copy)) AtomicFile.Write(copy, s => s.Write(patched));
            // TorchSharp loads torch_cpu by name before LibTorchSharp. Outside a build output, nothing puts the libtorch
            // package on the search path, so the loader can find another libtorch (Debian's python3-torch installs
            // libtorch_cpu.so 1.13 in /usr/lib) and the copy then fails on missing symbols. Loading the package's
            // libraries by path first makes every later lookup by soname find them.
            PreloadPackagedLibtorch(original);
            // The load context's fallback, not a DllImport resolver: TorchSharp first checks the library with
            // NativeLibrary.TryLoad(name, assembly), which asks the context after its own search fails, but no resolver.
            var context = AssemblyLoadContext.GetLoadContext(torchSharp) ?? AssemblyLoadContext.Default;
            context.ResolvingUnmanagedDll += (assembly, name) =>
                assembly == torchSharp && name is LibraryName or "lib" + LibraryName ? LoadNextTo(copy, original) : IntPtr.Zero;
            return prepared = copy;
        }
    }

    /// <summary>Where TorchSharp would load libLibTorchSharp.so from: beside its assembly, or its package's runtimes folder.</summary>
    static string? FindLibrary(Assembly torchSharp)
    {
        var folder = Path.GetDirectoryName(torchSharp.Location);
        if (string.IsNullOrEmpty(folder)) return null;
        var file = "lib" + LibraryName + ".so";
        string[] candidates = [Path.Combine(folder, file), Path.Combine(folder, "runtimes", "linux-x64", "native", file),
            Path.Combine(folder, "..", "..", "runtimes", "linux-x64", "native", file)];   // NuGet cache: lib/net8.0/ → runtimes/
        return candidates.Where(File.Exists).Select(Path.GetFullPath).FirstOrDefault();
    }

    static void PreloadPackagedLibtorch(string original)
    {
        // NuGet cache layout: PACKAGES/torchsharp/VERSION/runtimes/linux-x64/native/libLibTorchSharp.so
        var packages = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(original)!, "..", "..", "..", "..", ".."));
        var version = typeof(TorchSharpNative).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "LibTorchVersion")?.Value;
        if (version == null || !Directory.Exists(packages)) return;
        var folder = Directory.EnumerateDirectories(packages, "libtorch-*linux-x64*")
            .Select(package => Path.Combine(package, version, "runtimes", "linux-x64", "native"))
            .FirstOrDefault(native => File.Exists(Path.Combine(native, "libtorch_cpu.so")));
        if (folder == null) return;
        foreach (var library in new[] { "libc10.so", "libtorch_cpu.so", "libtorch.so" })
            NativeLibrary.TryLoad(Path.Combine(folder, library), out _);
    }

    /// <summary>
    /// The patched copy, loaded after the libtorch libraries it needs: the loader finds those by soname once they are
    /// loaded, but the copy's $ORIGIN is the cache folder, not the libtorch package's. TorchSharp has loaded torch_cpu
    /// from that package by now, so its folder is read from the process's mappings.
    /// </summary>
    static IntPtr LoadNextTo(string copy, string original)
    {
        var folders = new[] { LoadedFolderOf("libtorch_cpu.so"), Path.GetDirectoryName(original) }.OfType<string>();
        foreach (var dependency in new[] { "libc10.so", "libtorch_cpu.so", "libtorch.so" })
            foreach (var folder in folders)
                if (File.Exists(Path.Combine(folder, dependency)) && NativeLibrary.TryLoad(Path.Combine(folder, dependency), out _))
                    break;
        return NativeLibrary.Load(copy);
    }

    static string? LoadedFolderOf(string library)
    {
        try
        {
            return File.ReadLines("/proc/self/maps").Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                .Where(fields => fields.Length >= 6 && fields[^1].EndsWith("/" + library))
                .Select(fields => Path.GetDirectoryName(fields[^1])).FirstOrDefault();
        }
        catch (IOException)
        {
            return null;
        }
    }
}
