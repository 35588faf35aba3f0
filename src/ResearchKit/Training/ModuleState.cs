using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Training;

/// <summary>A module that keeps a host copy of some buffer (a step count) and must refresh it when weights are loaded into it.</summary>
public interface IWeightsLoaded
{
    void OnWeightsLoaded();
}

/// <summary>
/// Tensors and state dictionaries in TorchSharp's binary format (what <c>Module.save</c> and <c>Optimizer.save_state_dict</c>
/// write: LEB128 counts, then per tensor its dtype, rank, sizes and raw little-endian bytes), read and written by the kit
/// itself so that loading works in place on any device. TorchSharp's own <c>Module.load</c> moves a CUDA module to the
/// CPU and back, which replaces every parameter: an optimizer built before it then updates disposed tensors. Here the
/// values are read into CPU tensors, checked there, and copied into the module's own tensors, wherever they live.
/// </summary>
public static class ModuleState
{
    /// <summary>Writes <paramref name="state"/> (name → tensor, in order) as TorchSharp's Module.save does.</summary>
    public static void Write(BinaryWriter writer, IReadOnlyList<(string Name, Tensor Value)> state)
    {
        WriteCount(writer, state.Count);
        foreach (var (name, value) in state)
        {
            writer.Write(name);
            WriteTensor(writer, value);
        }
    }

    /// <summary>Reads a state dictionary into CPU tensors, in file order (the caller owns them).</summary>
    public static List<(string Name, Tensor Value)> Read(BinaryReader reader)
    {
        long count = ReadCount(reader);
        var entries = new List<(string, Tensor)>();
        for (long i = 0; i < count; i++) entries.Add((reader.ReadString(), ReadTensor(reader)));
        return entries;
    }

    /// <summary>A module's parameters and buffers by state-dict name.</summary>
    public static List<(string Name, Tensor Value)> Of(nn.Module module) => module.state_dict().Select(kv => (kv.Key, kv.Value)).ToList();

    /// <summary>
    /// Copies <paramref name="entries"/> into <paramref name="module"/>'s own tensors in place (no tensor is replaced);
    /// names, dtypes and shapes must match exactly, or the message says which does not.
    /// </summary>
    public static void CopyInto(nn.Module module, IReadOnlyList<(string Name, Tensor Value)> entries)
    {
        var own = module.state_dict();
        if (own.Count != entries.Count)
            throw new ArgumentException($"the module has {own.Count} parameters and buffers; the file holds {entries.Count}");
        using var _ = no_grad();
        foreach (var (name, value) in entries)
        {
            if (!own.TryGetValue(name, out var target)) throw new ArgumentException($"the module has no parameter or buffer named '{name}'");
            if (target.dtype != value.dtype || !target.shape.SequenceEqual(value.shape))
                throw new ArgumentException($"'{name}' is {target.dtype} [{string.Join(", ", target.shape)}] in the module and {value.dtype} [{string.Join(", ", value.shape)}] in the file");
            target.copy_(value);
        }
        foreach (var child in module.modules()) (child as IWeightsLoaded)?.OnWeightsLoaded();
    }

    public static void WriteTensor(BinaryWriter writer, Tensor tensor)
    {
        using var cpu = tensor.detach().to(CPU).contiguous();
        WriteCount(writer, (long)cpu.dtype);
        WriteCount(writer, cpu.dim());
        foreach (var size in cpu.shape) WriteCount(writer, size);
        writer.Write(cpu.bytes);
    }

    /// <summary>One tensor in TorchSharp's format, as a new CPU tensor.</summary>
    public static Tensor ReadTensor(BinaryReader reader)
    {
        var dtype = (ScalarType)ReadCount(reader);
        var shape = new long[ReadCount(reader)];
        for (int i = 0; i < shape.Length; i++) shape[i] = ReadCount(reader);
        var result = empty(shape, dtype, device: CPU);
        long size = result.NumberOfElements * result.ElementSize;
        var bytes = reader.ReadBytes(checked((int)size));
        if (bytes.Length != size) throw new EndOfStreamException($"a tensor of {size} bytes ends after {bytes.Length}");
        result.bytes = bytes;
        return result;
    }

    /// <summary>TorchSharp's LEB128 encoding of a non-negative count.</summary>
    public static void WriteCount(BinaryWriter writer, long value)
    {
        if (value < 0) throw new ArgumentOutOfRangeException(nameof(value), value, "counts are non-negative");
        do
        {
            byte low = (byte)(value & 0x7f);
            value >>= 7;
            writer.Write(value == 0 ? low : (byte)(low | 0x80));
        } while (value != 0);
    }

    public static long ReadCount(BinaryReader reader)
    {
        long result = 0;
        for (int shift = 0; ; shift += 7)
        {
            if (shift > 56) throw new InvalidDataException("a count in the file is longer than 64 bits");
            byte b = reader.ReadByte();
            result |= (long)(b & 0x7f) << shift;
            if ((b & 0x80) == 0) return result;
        }
    }
}
