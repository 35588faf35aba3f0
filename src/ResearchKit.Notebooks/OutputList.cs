using System.Text;
using System.Text.Json.Nodes;

namespace ResearchKit.Notebooks;

/// <summary>
/// One cell's outputs as they arrive, thread-safe: stream text is appended in linear time (a builder per
/// stream run, merged as Jupyter shows consecutive writes) and bounded — text beyond <see cref="StreamLimit"/>
/// characters per cell is dropped from the notebook with a note, and, when a spill file is given, kept there in full.
/// </summary>
public sealed class OutputList(long streamLimit = OutputList.DefaultStreamLimit, Func<string, string?>? spillPath = null)
{
    /// <summary>10 M characters of stdout/stderr per cell: far beyond any readable log, well below what makes a notebook unloadable.</summary>
    public const long DefaultStreamLimit = 10_000_000;

    sealed class StreamRun(string name)
    {
        public readonly string Name = name;
        public readonly StringBuilder Text = new();
    }

    readonly object gate = new();
    readonly List<object> items = [];   // JsonObject (display/result/error) or StreamRun
    readonly Dictionary<string, JsonObject> displays = [];
    readonly Dictionary<string, long> dropped = [];
    readonly Dictionary<string, StreamWriter> spills = [];
    readonly Dictionary<string, string> spillFiles = [];
    long streamed;

    public long StreamLimit => streamLimit;

    /// <summary>An nbformat error output; the traceback (what front ends show) starts with `name: value` when none is given.</summary>
    public static JsonObject ErrorOutput(string name, string value, IReadOnlyList<string>? traceback = null) => new()
    {
        ["output_type"] = "error", ["ename"] = name, ["evalue"] = value,
        ["traceback"] = new JsonArray((traceback is { Count: > 0 } ? traceback : [$"{name}: {value}"]).Select(t => (JsonNode)t!).ToArray()),
    };

    public void Add(JsonObject output, string? displayId = null)
    {
        lock (gate)
        {
            items.Add(output);
            if (displayId is not null) displays[displayId] = output;
        }
    }

    /// <summary>Replaces a display's data in place; false when the id belongs to no output of this cell.</summary>
    public bool Update(string displayId, JsonObject data)
    {
        lock (gate)
        {
            if (!displays.TryGetValue(displayId, out var output)) return false;
            output["data"] = data.DeepClone();
            return true;
        }
    }

    public void Stream(string name, string text)
    {
        if (text.Length == 0) return;
        lock (gate)
        {
            Spill(name, text);
            long room = Math.Max(0, streamLimit - streamed);
            var kept = text.Length <= room ? text : text[..(int)room];
            streamed += kept.Length;
            if (kept.Length < text.Length) dropped[name] = dropped.GetValueOrDefault(name) + text.Length - kept.Length;
            if (kept.Length == 0) return;
            if (items.Count > 0 && items[^1] is StreamRun run && run.Name == name) run.Text.Append(kept);
            else
            {
                var next = new StreamRun(name);
                next.Text.Append(kept);
                items.Add(next);
            }
        }
    }

    /// <summary>Once a cell's stream passes the limit, its full text goes to the spill file (what was kept so far first).</summary>
    void Spill(string name, string text)
    {
        if (spills.TryGetValue(name, out var writer))
        {
            writer.Write(text);
            return;
        }
        if (streamed + text.Length <= streamLimit || spillPath?.Invoke(name) is not { } path) return;
        writer = new StreamWriter(path, append: false, new UTF8Encoding(false));
        foreach (var run in items.OfType<StreamRun>().Where(r => r.Name == name)) writer.Write(run.Text);
        writer.Write(text);
        spills[name] = writer;
        spillFiles[name] = path;
    }

    /// <summary>
    /// The nbformat outputs array as it stands (a snapshot: later writes do not change it). <paramref name="displayObjects"/>
    /// receives each display's object in the snapshot, so a later cell's update can find it.
    /// </summary>
    public JsonArray ToJson(IDictionary<string, JsonObject>? displayObjects = null)
    {
        lock (gate)
        {
            var array = new JsonArray();
            foreach (var item in items)
            {
                var output = item is StreamRun run
                    ? new JsonObject { ["output_type"] = "stream", ["name"] = run.Name, ["text"] = run.Text.ToString() }
                    : (JsonObject)((JsonObject)item).DeepClone();
                array.Add(output);
                if (displayObjects is not null)
                    foreach (var (id, original) in displays)
                        if (ReferenceEquals(original, item)) displayObjects[id] = output;
            }
            foreach (var (name, count) in dropped)
            {
                var where = spillFiles.TryGetValue(name, out var file) ? $"; the full text is in {Path.GetFileName(file)}" : "";
                array.Add(new JsonObject
                {
                    ["output_type"] = "stream", ["name"] = "stderr",
                    ["text"] = $"[researchkit] {count:N0} more characters of {name} dropped (over {streamLimit:N0} per cell){where}\n",
                });
            }
            return array;
        }
    }

    /// <summary>Closes spill files (call when the cell ends).</summary>
    public void Complete()
    {
        lock (gate)
        {
            foreach (var writer in spills.Values) writer.Dispose();
            spills.Clear();
        }
    }
}
