using System.Text.Json;
using ResearchKit.Data;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ResearchKit.Training;

/// <summary>
/// A run folder's checkpoint.bin: magic, JSON trainer state (with a SHA-256 of every weight tensor), model weights,
/// every phase's optimizer state, the method's extra state, and a trailer: the SHA-256 of everything before it.
/// One file, written to a temporary name and renamed, so a crash never leaves a half-written checkpoint; on load,
/// the trailer catches truncation or damage anywhere, the per-tensor checksums name the damaged tensor, and
/// non-finite weights are refused. Weights are checked on the host as read and then copied into the model's own tensors
/// in place (<see cref="ModuleState"/>), so a checkpoint loads on any device, and an optimizer built before the load keeps
/// updating the model's parameters.
/// </summary>
public sealed class CheckpointStore(string directory)
{
    public const string FileName = "checkpoint.bin";
    const string Magic = "ResearchKit.Checkpoint.v3", MagicPrefix = "ResearchKit.Checkpoint.";
    const int TrailerBytes = 32;

    public string Path => System.IO.Path.Combine(directory, FileName);
    public bool Exists => File.Exists(Path);

    /// <param name="Phases">Each update phase as "name/every", in order: the optimizer states follow this order.</param>
    /// <param name="Weights">SHA-256 (hex) of each weight tensor's bytes, by state-dict name.</param>
    /// <param name="Provenance">The configuration and dependencies the weights were trained with; null in checkpoints
    /// written before it was recorded, and for training that has no run configuration (a tokenizer).</param>
    sealed record TrainerState(long Step, Dictionary<string, List<double>> Losses, TrainConfig Config, List<string> Phases, bool HasState,
        Dictionary<string, string> Weights, Provenance? Provenance = null);

    static Dictionary<string, string> Checksums(IEnumerable<(string Name, Tensor Value)> tensors) =>
        tensors.ToDictionary(kv => kv.Name, kv =>
        {
            using var cpu = kv.Value.detach().to(CPU).contiguous();
            return Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(cpu.bytes));
        });

    static List<string> Describe(IReadOnlyList<UpdatePhase> phases) => phases.Select(p => $"{p.Name}/{p.Every}").ToList();

    public void Save(long step, TrainConfig config, nn.Module model, IReadOnlyList<UpdatePhase> phases, IReadOnlyList<FlatOptimizer> optimizers,
        ICheckpointState? state, Dictionary<string, List<double>> losses, Provenance? provenance = null)
    {
        var body = new MemoryStream();
        var weights = ModuleState.Of(model);
        using (var writer = new BinaryWriter(body, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            writer.Write(Magic);
            writer.Write(JsonSerializer.Serialize(new TrainerState(step, losses, config, Describe(phases), state is not null, Checksums(weights), provenance)));
            ModuleState.Write(writer, weights);
            foreach (var optimizer in optimizers) optimizer.Save(writer);
            state?.Save(writer);
        }
        var bytes = body.ToArray();
        AtomicFile.Write(Path, stream =>
        {
            stream.Write(bytes);
            stream.Write(System.Security.Cryptography.SHA256.HashData(bytes));
        });
    }

    /// <summary>Restores weights, optimizers, extra state and the loss history; returns the step to continue from.</summary>
    public long Load(TrainConfig config, nn.Module model, IReadOnlyList<UpdatePhase> phases, IReadOnlyList<FlatOptimizer> optimizers,
        ICheckpointState? state, Dictionary<string, List<double>> losses, Provenance? provenance = null)
    {
        var (body, intact) = Verified(Path);
        using var reader = new BinaryReader(body);
        var saved = ReadHeader(reader, Path);
        CheckProvenance(saved, provenance, Path);
        if (JsonDifference.First(Comparable(saved.Config), Comparable(config)) is { } difference)
            throw new ResearchKitException($"{Path}: was written with other training settings ({difference}); use a new output folder or the same settings (only epochs may grow)");
        if (!saved.Phases.SequenceEqual(Describe(phases)) || saved.HasState != (state is not null))
            throw new ResearchKitException($"{Path}: holds update phases {string.Join(", ", saved.Phases)}{(saved.HasState ? " and method state" : "")}, " +
                $"but the method now has {string.Join(", ", Describe(phases))}{(state is not null ? " and method state" : "")}; use a new output folder");
        LoadWeights(model, reader, saved, intact, Path, "written for another model");
        var damagedState = new DataFormatException(Path,
            "damaged checkpoint: the weights are intact but the optimizer or method state after them is not (its checksum does not match); probing still works, resuming does not");
        if (!intact) throw damagedState;
        try
        {
            foreach (var optimizer in optimizers) optimizer.Load(reader);
            state?.Load(reader);
        }
        catch (Exception e) when (e is not ResearchKitException)
        {
            throw new DataFormatException(Path, $"optimizer or method state does not fit the method: {e.Message}");
        }
        foreach (var (name, list) in losses)
        {
            list.Clear();
            if (saved.Losses.TryGetValue(name, out var previous)) list.AddRange(previous);
        }
        return saved.Step;
    }

    // Epochs may grow on resume; a checkpoint from before precisions existed was trained in fp32.
    static System.Text.Json.Nodes.JsonNode? Comparable(TrainConfig c) =>
        JsonSerializer.SerializeToNode(c with { Epochs = 0, Precision = c.Precision ?? ResearchKit.Precision.Fp32 });

    /// <summary>
    /// The checkpoint's bytes without the trailer, and whether the trailer is their SHA-256. When it is not, reading
    /// goes on only to say what is wrong: truncated, or which weight tensor is damaged (see the callers).
    /// </summary>
    static (MemoryStream Body, bool Intact) Verified(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length <= TrailerBytes) throw new DataFormatException(path, $"truncated checkpoint ({bytes.Length} bytes)");
        int length = bytes.Length - TrailerBytes;
        bool intact = System.Security.Cryptography.SHA256.HashData(bytes.AsSpan(0, length)).AsSpan().SequenceEqual(bytes.AsSpan(length));
        return (new MemoryStream(bytes, 0, length, writable: false), intact);
    }

    static DataFormatException Truncated(string path, Exception e) =>
        new(path, $"truncated or damaged checkpoint: its checksum does not match and its weights cannot be read ({e.Message.ReplaceLineEndings(" ")})");

    /// <summary>
    /// Reads the weights into host tensors, checks each against its checksum and for non-finite values (an error naming
    /// the tensor), then copies them into <paramref name="model"/> in place.
    /// </summary>
    static void LoadWeights(nn.Module model, BinaryReader reader, TrainerState saved, bool intact, string path, string mismatch)
    {
        List<(string Name, Tensor Value)> weights;
        try { weights = ModuleState.Read(reader); }
        catch (Exception e) when (e is not ResearchKitException)
        {
            throw intact ? new DataFormatException(path, $"{mismatch}: {e.Message}") : Truncated(path, e);
        }
        try
        {
            foreach (var (name, sum) in Checksums(weights))
                if (!saved.Weights.TryGetValue(name, out var expected) || expected != sum)
                    throw new DataFormatException(path, $"weight tensor '{name}' is damaged (its checksum does not match)");
            foreach (var (name, tensor) in weights)
                if (tensor.is_floating_point() && !tensor.isfinite().all().item<bool>())
                    throw new DataFormatException(path, $"weight tensor '{name}' holds NaN or infinite values");
            try { ModuleState.CopyInto(model, weights); }
            catch (ArgumentException e) { throw new DataFormatException(path, $"{mismatch}: {e.Message}"); }
        }
        finally
        {
            foreach (var (_, tensor) in weights) tensor.Dispose();
        }
    }

    static TrainerState ReadHeader(BinaryReader reader, string path)
    {
        try
        {
            var magic = reader.ReadString();
            if (magic != Magic)
                throw new DataFormatException(path, magic.StartsWith(MagicPrefix, StringComparison.Ordinal)
                    ? $"written by another version of ResearchKit ({magic}; this one reads {Magic}); re-run pre-training into a new folder"
                    : $"not a ResearchKit checkpoint (expected header {Magic})");
            return JsonSerializer.Deserialize<TrainerState>(reader.ReadString()) ?? throw new DataFormatException(path, "empty trainer state");
        }
        catch (Exception e) when (e is EndOfStreamException or JsonException or IOException)
        {
            throw new DataFormatException(path, $"truncated or corrupt checkpoint header: {e.Message}");
        }
    }

    /// <summary>The step a checkpoint holds (from its header), or null when there is none.</summary>
    public static long? SavedStep(string checkpointPath)
    {
        if (!File.Exists(checkpointPath)) return null;
        using var reader = new BinaryReader(File.OpenRead(checkpointPath));
        return ReadHeader(reader, checkpointPath).Step;
    }

    /// <summary>
    /// Refuses the checkpoint at <paramref name="checkpointPath"/> when it records another provenance than
    /// <paramref name="now"/>, reading only its header: before a model is built for it. A missing file is left to the loader.
    /// </summary>
    public static void CheckProvenance(string checkpointPath, Provenance now)
    {
        if (!File.Exists(checkpointPath)) return;
        using var reader = new BinaryReader(File.OpenRead(checkpointPath));
        CheckProvenance(ReadHeader(reader, checkpointPath), now, checkpointPath);
    }

    /// <summary>Refuses a checkpoint whose recorded provenance differs from the run's as it is now (<see cref="Provenance.Difference"/>).</summary>
    static void CheckProvenance(TrainerState saved, Provenance? now, string path)
    {
        if (saved.Provenance is { } recorded && now is not null
            && recorded.Difference(now) is { } difference)
            throw new ResearchKitException($"{path}: {difference}; restore what changed, or re-run pre-training into a new folder");
    }

    /// <summary>
    /// Loads only the model weights of a checkpoint (for probing, fine-tuning), after checking that they were trained
    /// with <paramref name="provenance"/> when both it and the checkpoint record one.
    /// </summary>
    /// <param name="describedBy">The file that describes the model, named when the weights do not fit it.</param>
    public static void LoadWeights(nn.Module model, string checkpointPath, Provenance? provenance = null, string describedBy = "config.json")
    {
        if (!File.Exists(checkpointPath)) throw new ResearchKitException($"{checkpointPath}: checkpoint not found (did pre-training finish its first epoch?)");
        var (body, intact) = Verified(checkpointPath);
        using var reader = new BinaryReader(body);
        var saved = ReadHeader(reader, checkpointPath);
        CheckProvenance(saved, provenance, checkpointPath);
        // Per-tensor checksums: the weights may be intact even when later sections are not.
        LoadWeights(model, reader, saved, intact, checkpointPath, $"weights do not fit the model in {describedBy}");
    }
}
