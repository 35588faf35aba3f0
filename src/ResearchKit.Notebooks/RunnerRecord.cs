using System.Diagnostics;
using System.Text.Json.Nodes;

namespace ResearchKit.Notebooks;

/// <summary>
/// Who is running an output notebook: the runner's host, process id and process start time, kept in
/// metadata.researchkit while its status is "running". A runner killed with SIGKILL cannot write "failed", so a reader
/// asks whether that process still lives (the start time tells a reused process id from the runner) and reports `dead`.
/// </summary>
public sealed record RunnerRecord(string Host, int ProcessId, DateTime ProcessStart)
{
    /// <summary>This process.</summary>
    public static RunnerRecord Current()
    {
        using var self = Process.GetCurrentProcess();
        return new(Environment.MachineName, self.Id, self.StartTime.ToUniversalTime());
    }

    public void WriteTo(JsonObject metadata)
    {
        metadata["host"] = Host;
        metadata["pid"] = ProcessId;
        metadata["process_start"] = ProcessStart.ToString("o");
    }

    /// <summary>True when the process is gone, or its id now belongs to a later process; null when it ran on another host.</summary>
    public bool? IsGone()
    {
        if (Host != Environment.MachineName) return null;
        try
        {
            using var process = Process.GetProcessById(ProcessId);
            return process.HasExited || Math.Abs((process.StartTime.ToUniversalTime() - ProcessStart).TotalSeconds) > 1;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) { return true; }
    }

    /// <summary>
    /// The status an output notebook's runner recorded: completed, failed, interrupted, running, or `dead` when it says
    /// running but its runner is gone (`running?` when the runner was on another host and cannot be asked).
    /// </summary>
    public static string StatusOf(string outputNotebook)
    {
        var metadata = NotebookDocument.Load(outputNotebook).Root["metadata"]?["researchkit"] as JsonObject
            ?? throw new ResearchKitException($"{outputNotebook}: not written by `researchkit notebook run` (no metadata.researchkit)");
        var status = metadata["status"]?.GetValue<string>() ?? "unknown";
        if (status != "running") return status;
        if (metadata["pid"] is not JsonValue pid || metadata["host"] is not JsonValue host
            || !DateTime.TryParse(metadata["process_start"]?.GetValue<string>(), null, System.Globalization.DateTimeStyles.RoundtripKind, out var start))
            return "running?";   // written before runners were recorded
        return new RunnerRecord(host.GetValue<string>(), pid.GetValue<int>(), start).IsGone() switch
        {
            true => "dead",
            false => "running",
            null => "running?",
        };
    }
}
