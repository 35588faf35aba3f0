using ResearchKit.Training;

namespace ResearchKit.Reporting;

/// <summary>
/// What a notebook's long work needs from whatever runs it: a token that an interrupt or a time limit signals, and a
/// status line that can be replaced in place. Our engine and kernel, .NET Interactive (through the package's
/// extension) and a plain program each provide one.
/// </summary>
public interface INotebookHost
{
    /// <summary>Signalled when the user interrupts the cell or its time limit passes.</summary>
    CancellationToken Cancel { get; }

    /// <summary>Shows a status line and returns the action that replaces it.</summary>
    Action<string> ShowStatus(string text);

    /// <summary>How often a progress line may be replaced (a live display: often; a log: rarely).</summary>
    TimeSpan UpdateInterval { get; }
}

/// <summary>
/// Progress and cancellation for notebook code, by names that run in any host: <c>Notebook.Progress("sweep")</c> and
/// <c>Notebook.Cancel</c>. Our engine gives each running cell its own host; .NET Interactive's is set by the ResearchKit
/// package's extension; anywhere else (a `dotnet run` of an exported notebook) progress goes to standard error and
/// Ctrl+C cancels, so training stops at a step and keeps its checkpoint.
/// </summary>
public static class Notebook
{
    static readonly AsyncLocal<INotebookHost?> cellHost = new();
    static INotebookHost processHost = ConsoleNotebookHost.Instance;

    /// <summary>The host of the code running now: the running cell's, else the process's.</summary>
    public static INotebookHost Host
    {
        get => cellHost.Value ?? processHost;
        set => processHost = value ?? ConsoleNotebookHost.Instance;
    }

    /// <summary>
    /// Sets the host for code on this logical thread (and what it starts): an engine that runs several notebooks in one
    /// process calls this as each cell starts, and with null as it ends.
    /// </summary>
    public static void SetCellHost(INotebookHost? host) => cellHost.Value = host;

    /// <summary>The running cell's cancellation token: pass it to training and sweeps.</summary>
    public static CancellationToken Cancel => Host.Cancel;

    /// <summary>A live one-line status for training and sweeps, replaced in place (<see cref="NotebookProgress"/>).</summary>
    public static NotebookProgress Progress(string title)
    {
        var host = Host;
        return new NotebookProgress(host.ShowStatus($"{title}: starting…"), title, host.UpdateInterval);
    }
}

/// <summary>One status line updated with training and sweep progress, at most once per interval (the last step always).</summary>
public sealed class NotebookProgress(Action<string> show, string title, TimeSpan interval)
    : IProgress<TrainProgress>, IProgress<SweepProgress>, IProgress<string>
{
    string sweep = "", status = "";
    DateTime last = DateTime.MinValue;

    public void Report(SweepProgress p)
    {
        sweep = $"run {p.Index + 1}/{p.Count}: {p.Description}{(p.Cached ? " (cached)" : "")}";
        status = "";
        Show(force: true);
    }

    public void Report(TrainProgress p)
    {
        status = $"epoch {p.Epoch + 1}/{p.Epochs} · step {p.Step}/{p.TotalSteps} · loss {p.Loss:F4} · {p.ImagesPerSecond:F0} img/s · eta {p.Remaining:hh\\:mm\\:ss}";
        Show(force: p.Step == p.TotalSteps);
    }

    public void Report(string message)
    {
        status = message;
        Show(force: true);
    }

    void Show(bool force)
    {
        if (!force && DateTime.UtcNow - last < interval) return;
        last = DateTime.UtcNow;
        show(string.Join(" · ", new[] { title, sweep, status }.Where(s => s.Length > 0)));
    }
}

/// <summary>A program's host: status lines on standard error (every 10 s at most), Ctrl+C as the cancel signal.</summary>
public sealed class ConsoleNotebookHost : INotebookHost
{
    public static readonly ConsoleNotebookHost Instance = new();
    readonly CancellationTokenSource interrupted = new();
    int hooked;

    public CancellationToken Cancel
    {
        get
        {
            // The first Ctrl+C cancels the work (it stops at a step and checkpoints); a second one ends the process.
            if (Interlocked.Exchange(ref hooked, 1) == 0)
                Console.CancelKeyPress += (_, e) =>
                {
                    e.Cancel = !interrupted.IsCancellationRequested;
                    interrupted.Cancel();
                };
            return interrupted.Token;
        }
    }

    public TimeSpan UpdateInterval => TimeSpan.FromSeconds(10);

    public Action<string> ShowStatus(string text)
    {
        Console.Error.WriteLine(text);
        return line => Console.Error.WriteLine(line);
    }
}
