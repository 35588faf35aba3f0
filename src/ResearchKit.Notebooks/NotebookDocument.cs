using System.Text.Json;
using System.Text.Json.Nodes;

namespace ResearchKit.Notebooks;

/// <summary>
/// An nbformat 4 notebook (Jupyter / Polyglot Notebooks .ipynb) held as JSON, so every field we do not
/// touch — kernelspec, metadata.polyglot_notebook, cell ids — survives a run unchanged.
/// </summary>
public sealed class NotebookDocument
{
    public JsonObject Root { get; }
    public string Path { get; }

    NotebookDocument(JsonObject root, string path)
    {
        Root = root;
        Path = path;
    }

    public JsonArray Cells => (JsonArray)Root["cells"]!;
    public IEnumerable<JsonObject> CellObjects => Cells.Select(c => (JsonObject)c!);
    public int MinorVersion => Root["nbformat_minor"]?.GetValue<int>() ?? 0;

    public static NotebookDocument Load(string path)
    {
        if (!File.Exists(path)) throw new ResearchKitException($"{path}: notebook not found");
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new ResearchKitException($"{path}: not a notebook (invalid JSON: {e.Message})"); }
        // The version first: nbformat 3 keeps its cells in "worksheets", so "no cells array" would hide what is wrong.
        int? version = root is JsonObject r && r["nbformat"] is JsonValue v && v.TryGetValue<int>(out var n) ? n : null;
        if (version is < 4)
            throw new ResearchKitException($"{path}: nbformat {version} is not supported; convert it with `jupyter nbconvert --to notebook --nbformat 4 {path}`");
        if (root is not JsonObject o || o["cells"] is not JsonArray cells)
            throw new ResearchKitException($"{path}: not a notebook (expected a JSON object with a \"cells\" array)");
        if (version != 4)
            throw new ResearchKitException($"{path}: nbformat {o["nbformat"]?.ToJsonString() ?? "(missing)"} is not supported; expected nbformat 4");
        for (int i = 0; i < cells.Count; i++)
            if (cells[i] is not JsonObject cell || cell["cell_type"]?.GetValue<string>() is not ("code" or "markdown" or "raw"))
                throw new ResearchKitException($"{path}: cell {i} has no valid cell_type (code, markdown or raw)");
        return new NotebookDocument(o, System.IO.Path.GetFullPath(path));
    }

    /// <summary>Writes the notebook atomically with Jupyter's layout (one-space indent, trailing newline).</summary>
    public void Save(string path)
    {
        var options = new JsonSerializerOptions { WriteIndented = true, IndentSize = 1, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        AtomicFile.WriteAllText(path, Root.ToJsonString(options) + "\n");
    }

    public static string CellType(JsonObject cell) => cell["cell_type"]!.GetValue<string>();

    /// <summary>A cell's source, whether stored as one string or as a list of lines.</summary>
    public static string Source(JsonObject cell) => Text(cell["source"]);

    /// <summary>An nbformat multi-line string (source, stream text, mime data): one string or a list of lines.</summary>
    public static string Text(JsonNode? node) => node switch
    {
        JsonArray lines => string.Concat(lines.Select(l => l?.GetValue<string>())),
        JsonValue value => value.GetValue<string>(),
        _ => "",
    };

    /// <summary>Lines with their newlines, as Jupyter stores multi-line strings.</summary>
    public static JsonArray Lines(string text)
    {
        var array = new JsonArray();
        int start = 0;
        for (int i = 0; i < text.Length; i++)
            if (text[i] == '\n') { array.Add(text[start..(i + 1)]); start = i + 1; }
        if (start < text.Length) array.Add(text[start..]);
        return array;
    }

    public static IReadOnlyList<string> Tags(JsonObject cell) =>
        cell["metadata"]?["tags"] is JsonArray tags ? tags.Select(t => t!.GetValue<string>()).ToArray() : [];

    /// <summary>A new code cell (with an id when the notebook's minor version requires one).</summary>
    public JsonObject NewCodeCell(string source, params string[] tags)
    {
        var cell = new JsonObject
        {
            ["cell_type"] = "code",
            ["execution_count"] = null,
            ["metadata"] = new JsonObject { ["tags"] = new JsonArray(tags.Select(t => (JsonNode)t!).ToArray()) },
            ["outputs"] = new JsonArray(),
            ["source"] = Lines(source),
        };
        if (MinorVersion >= 5) cell["id"] = Guid.NewGuid().ToString("N")[..8];
        return cell;
    }
}
