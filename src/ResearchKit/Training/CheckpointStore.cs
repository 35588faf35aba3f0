using System.Text.Json;
using ResearchKit.Data;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ResearchKit.Training;

/// <summary>
/// A run folder's checkpoint.bin: magic, JSON trainer state, model weights, every phase's optimizer state, then
/// the method's extra state. One file, written to a temporary name and renamed, so a crash never leaves a
/// half-written checkpoint.
/// </summary>
public sealed class CheckpointStore(string directory)
{
    public const string FileName = "checkpoint.bin";
    const string Magic = "ResearchKit.Checkpoint.v2";

    public string Path => System.IO.Path.Combine(directory, FileName);
    public bool Exists => File.Exists(Path);

    /// <param name="Phases">Each update phase as "name/every", in order: the optimizer states follow this order.</param>
    sealed record TrainerState(long Step, Dictionary<string, List<double>> Losses, TrainConfig Config, List<string> Phases, bool HasState);

    static List<string> Describe(IReadOnlyList<UpdatePhase> phases) => phases.Select(p => $"{p.Name}/{p.Every}").ToList();

    public void Save(long step, TrainConfig config, nn.Module model, IReadOnlyList<UpdatePhase> phases, IReadOnlyList<OptimizerHelper> optimizers,
        ICheckpointState? state, Dictionary<string, List<double>> losses)
    {
        AtomicFile.Write(Path, stream =>
        {
            using var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
            writer.Write(Magic);
            writer.Write(JsonSerializer.Serialize(new TrainerState(step, losses, config, Describe(phases), state is not null)));
            model.save(writer);
            foreach (var optimizer in optimizers) optimizer.save_state_dict(writer);
            state?.Save(writer);
        });
    }

    /// <summary>Restores weights, optimizers, extra state and the loss history; returns the step to continue from.</summary>
    public long Load(TrainConfig config, nn.Module model, IReadOnlyList<UpdatePhase> phases, IReadOnlyList<OptimizerHelper> optimizers,
        ICheckpointState? state, Dictionary<string, List<double>> losses)
    {
        using var reader = new BinaryReader(File.OpenRead(Path));
        var saved = ReadHeader(reader, Path);
        if (JsonDifference.First(Comparable(saved.Config), Comparable(config)) is { } difference)
            throw new ResearchKitException($"{Path}: was written with other training settings ({difference}); use a new output folder or the same settings (only epochs may grow)");
        if (!saved.Phases.SequenceEqual(Describe(phases)) || saved.HasState != (state is not null))
            throw new ResearchKitException($"{Path}: holds update phases {string.Join(", ", saved.Phases)}{(saved.HasState ? " and method state" : "")}, " +
                $"but the method now has {string.Join(", ", Describe(phases))}{(state is not null ? " and method state" : "")}; use a new output folder");
        try
        {
            model.load(reader, strict: true);
            foreach (var optimizer in optimizers) optimizer.load_state_dict(reader);
            state?.Load(reader);
        }
        catch (Exception e) when (e is not ResearchKitException)
        {
            throw new DataFormatException(Path, $"truncated, corrupt, or written for another model: {e.Message}");
        }
        foreach (var (name, list) in losses)
        {
            list.Clear();
            if (saved.Losses.TryGetValue(name, out var previous)) list.AddRange(previous);
        }
        return saved.Step;
    }

    // Epochs may grow on resume.
    static System.Text.Json.Nodes.JsonNode? Comparable(TrainConfig c) => JsonSerializer.SerializeToNode(c with { Epochs = 0 });

    static TrainerState ReadHeader(BinaryReader reader, string path)
    {
        try
        {
            if (reader.ReadString() != Magic) throw new DataFormatException(path, $"not a ResearchKit checkpoint (expected header {Magic})");
            return JsonSerializer.Deserialize<TrainerState>(reader.ReadString()) ?? throw new DataFormatException(path, "empty trainer state");
        }
        catch (Exception e) when (e is EndOfStreamException or JsonException or IOException)
        {
            throw new DataFormatException(path, $"truncated or corrupt checkpoint header: {e.Message}");
        }
    }

    /// <summary>Loads only the model weights of a checkpoint (for probing, fine-tuning).</summary>
    public static void LoadWeights(nn.Module model, string checkpointPath)
    {
        if (!File.Exists(checkpointPath)) throw new ResearchKitException($"{checkpointPath}: checkpoint not found (did pre-training finish its first epoch?)");
        using var reader = new BinaryReader(File.OpenRead(checkpointPath));
        ReadHeader(reader, checkpointPath);
        try { model.load(reader, strict: true); }
        catch (Exception e) when (e is not ResearchKitException)
        {
            throw new DataFormatException(checkpointPath, $"weights do not fit the model in config.json: {e.Message}");
        }
    }
}
