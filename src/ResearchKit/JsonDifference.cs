using System.Text.Json.Nodes;

namespace ResearchKit;

/// <summary>Names the first setting two JSON documents disagree on, for "other settings" errors that say which.</summary>
public static class JsonDifference
{
    /// <summary>"path: old before, new now" for the first differing leaf, or null when equal.</summary>
    public static string? First(JsonNode? before, JsonNode? now, string path = "")
    {
        if (before is JsonObject a && now is JsonObject b)
        {
            foreach (var name in a.Select(p => p.Key).Union(b.Select(p => p.Key)))
                if (First(a[name], b[name], path.Length == 0 ? name : $"{path}.{name}") is { } d) return d;
            return null;
        }
        if (before is JsonArray x && now is JsonArray y && x.Count == y.Count)
        {
            for (int i = 0; i < x.Count; i++)
                if (First(x[i], y[i], $"{path}[{i}]") is { } d) return d;
            return null;
        }
        string sa = before?.ToJsonString() ?? "none", sb = now?.ToJsonString() ?? "none";
        return sa == sb ? null : $"{path}: {sa} before, {sb} now";
    }
}
