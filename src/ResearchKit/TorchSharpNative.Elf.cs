using System.Text;

namespace ResearchKit;

// The ELF half of the native fix, in one file shared by the library (the run-time fix, TorchSharpNative.Prepare) and the
// build tool that patches build outputs (tools/TorchSharpScalarLifetime links this file): one implementation, no twin.
// Only the base library is used here, since the tool runs before ResearchKit.dll is built.
public static partial class TorchSharpNative
{
    /// <summary>The only version libLibTorchSharp.so of TorchSharp 0.107 needs beyond Debian 12's libstdc++.</summary>
    public const string MissingVersion = "GLIBCXX_3.4.32";

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

    /// <summary>
    /// Marks <see cref="MissingVersion"/> weak in <paramref name="library"/> itself, where the system's libstdc++ lacks it:
    /// a temporary file renamed over it, so a hard link into the NuGet cache is never written through. For build outputs.
    /// Returns whether the file changed.
    /// </summary>
    public static bool PatchInPlace(string library)
    {
        if (SystemLibstdcxxHas(MissingVersion)) return false;
        var patched = MarkVersionWeak(File.ReadAllBytes(library), MissingVersion);
        if (patched is null) return false;
        var temp = library + ".patching";
        File.WriteAllBytes(temp, patched);
        File.Move(temp, library, overwrite: true);
        return true;
    }
}
