using System.Security.Cryptography;
using System.Text.Json.Nodes;

namespace ResearchKit.Training;

/// <summary>
/// What a checkpoint's weights were trained from: the run's configuration (its canonical JSON and that text's SHA-256)
/// and the SHA-256 of each frozen dependency the model was built with (a tokenizer, a teacher run). The trainer writes
/// it into the checkpoint header; loading and resuming compare it with the folder as it is now. Checksums protect bytes;
/// this ties the weights to the settings and dependencies they were trained with, so a hand-edited config.json that keeps
/// tensor shapes, a checkpoint copied from another run, or a tokenizer retrained in place is refused, not silently used.
/// </summary>
/// <param name="Config">The configuration as canonical JSON, kept so a mismatch can name the setting that differs.</param>
/// <param name="Dependencies">"role folder" → SHA-256 of the files that define the dependency.</param>
public sealed record Provenance(string ConfigSha256, string Config, SortedDictionary<string, string> Dependencies)
{
    public static Provenance Of(string canonicalConfig, IEnumerable<(string Name, string Sha256)> dependencies) =>
        new(Sha256(System.Text.Encoding.UTF8.GetBytes(canonicalConfig)), canonicalConfig,
            new SortedDictionary<string, string>(dependencies.ToDictionary(d => d.Name, d => d.Sha256), StringComparer.Ordinal));

    /// <summary>
    /// What differs between this recorded provenance and <paramref name="now"/>, as one phrase, or null when the weights
    /// still belong to the configuration and dependencies. A dependency absent now is not compared: evaluating trained
    /// weights does not need it, and a use that does fails on its own when it reads the folder.
    /// </summary>
    public string? Difference(Provenance now)
    {
        if (ConfigSha256 != now.ConfigSha256)
        {
            var setting = JsonDifference.First(Parse(Config), Parse(now.Config)) ?? "the same settings in another form";
            return $"its weights were trained with other settings than the run's config.json holds now ({setting}; 'before' is " +
                "the training's): config.json was edited, or the checkpoint comes from another run";
        }
        foreach (var (name, recorded) in Dependencies)
            if (now.Dependencies.TryGetValue(name, out var current) && current != recorded)
                return $"{name} changed after these weights were trained on it (SHA-256 {recorded[..12]}… then, {current[..12]}… now)";
        return null;
    }

    static JsonNode? Parse(string json)
    {
        try { return JsonNode.Parse(json); }
        catch (System.Text.Json.JsonException) { return null; }
    }

    /// <summary>
    /// The SHA-256 of the named files of <paramref name="folder"/> (names and bytes, in the given order; missing files count
    /// as absent), or null when the folder does not exist.
    /// </summary>
    public static string? OfFiles(string folder, IEnumerable<string> files)
    {
        if (!Directory.Exists(folder)) return null;
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var name in files)
        {
            var path = Path.Combine(folder, name);
            hash.AppendData(System.Text.Encoding.UTF8.GetBytes(name + (File.Exists(path) ? "\n" : "\nabsent\n")));
            if (!File.Exists(path)) continue;
            using var stream = File.OpenRead(path);
            var buffer = new byte[1 << 16];
            for (int n; (n = stream.Read(buffer)) > 0;) hash.AppendData(buffer, 0, n);
            hash.AppendData(BitConverter.GetBytes(stream.Length));
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));
}
