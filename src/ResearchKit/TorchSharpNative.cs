using System.Reflection;
using System.Runtime.InteropServices;
using System.Runtime.Loader;
using System.Security.Cryptography;
using System.Text;

namespace ResearchKit;

/// <summary>
/// Makes TorchSharp's native library load on systems whose libstdc++ is older than the one it was built against
/// (Debian 12, Ubuntu 22.04: environment.md, "Debian 12 native fix"). Our own builds patch their output copy
/// (Directory.Build.targets); this is the same fix at run time for hosts that load TorchSharp from the NuGet cache,
/// such as .NET Interactive: a patched copy goes to a cache folder (never into the NuGet cache) and TorchSharp's
/// imports of LibTorchSharp resolve to it. It does nothing where the system has the version or the library is patched.
/// </summary>
public static class TorchSharpNative
{
    /// <summary>The only version libLibTorchSharp.so of TorchSharp 0.107 needs beyond Debian 12's libstdc++.</summary>
    public const string MissingVersion = "GLIBCXX_3.4.32";

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

    /// <summary>Whether a libstdc++ on the loader's usual paths defines <paramref name="version"/>.</summary>
    public static bool SystemLibstdcxxHas(string version)
    {
        string[] candidates = ["/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
            "/usr/lib64/libstdc++.so.6", "/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6", "/lib/aarch64-linux-gnu/libstdc++.so.6"];
        var existing = candidates.Where(File.Exists).ToList();
        var needle = Encoding.ASCII.GetBytes(version + "\0");
        return existing.Count == 0 || existing.Any(c => File.ReadAllBytes(c).AsSpan().IndexOf(needle) >= 0);
    }

    /// <summary>
    /// A copy of an ELF64 library with the requirement on <paramref name="version"/> marked weak (VER_FLG_WEAK in its
    /// .gnu.version_r entry), so the loader accepts it without that version; null when the library does not require it
    /// or already marks it weak. Throws on a file that is not a little-endian ELF64 library.
    /// </summary>
    public static byte[]? MarkVersionWeak(byte[] elf, string version)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F' || elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException("not a little-endian ELF64 file");
        long sections = BitConverter.ToInt64(elf, 0x28);
        int entrySize = BitConverter.ToUInt16(elf, 0x3A), count = BitConverter.ToUInt16(elf, 0x3C);
        for (int s = 0; s < count; s++)
        {
            int header = checked((int)(sections + (long)s * entrySize));
            if (BitConverter.ToUInt32(elf, header + 4) != 0x6ffffffe) continue;   // SHT_GNU_verneed
            int need = checked((int)BitConverter.ToInt64(elf, header + 0x18));
            int link = BitConverter.ToInt32(elf, header + 0x28), needs = BitConverter.ToInt32(elf, header + 0x2C);
            long strings = BitConverter.ToInt64(elf, checked((int)(sections + (long)link * entrySize)) + 0x18);
            for (int n = 0; n < needs; n++)
            {
                int aux = need + (int)BitConverter.ToUInt32(elf, need + 8);
                for (int a = 0, auxCount = BitConverter.ToUInt16(elf, need + 2); a < auxCount; a++)
                {
                    int name = checked((int)(strings + BitConverter.ToUInt32(elf, aux + 8)));
                    int end = Array.IndexOf(elf, (byte)0, name);
                    if (end > name && Encoding.ASCII.GetString(elf, name, end - name) == version)
                    {
                        if ((elf[aux + 4] & 0x2) != 0) return null;   // already weak
                        var copy = (byte[])elf.Clone();
                        copy[aux + 4] |= 0x2;
                        return copy;
                    }
                    aux += (int)BitConverter.ToUInt32(elf, aux + 12);
                }
                need += (int)BitConverter.ToUInt32(elf, need + 12);
            }
        }
        return null;
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
