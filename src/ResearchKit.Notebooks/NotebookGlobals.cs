using ResearchKit.Reporting;
using ResearchKit.Training;

namespace ResearchKit.Notebooks;

/// <summary>
/// What a notebook cell can call without a prefix: display(x), Progress(title) for a live status line,
/// and Cancel, the token that --timeout or an interrupt signals (pass it to long loops).
/// </summary>
public sealed class NotebookGlobals
{
    readonly NotebookSession session;

    internal NotebookGlobals(NotebookSession session) => this.session = session;

    public CancellationToken Cancel { get; internal set; }


    /// <summary>The folder the notebook runs in (its own folder).</summary>
    public string NotebookDirectory => session.WorkingDirectory;

    /// <summary>Shows a value with its richest mime types; returns a handle whose Update replaces it in place.</summary>
    public DisplayHandle display(object? value) => session.Display(value);

    /// <summary>Shows a value in the given mime types only (`display(x, "text/html")`), as .NET Interactive's display does.</summary>
    public DisplayHandle display(object? value, params string[] mimeTypes) => session.Display(value, mimeTypes);

    /// <summary>.NET Interactive's spelling of <see cref="display(object?)"/>.</summary>
    public DisplayHandle Display(object? value, params string[] mimeTypes) => session.Display(value, mimeTypes);

    /// <summary>Markup to show as HTML (.NET Interactive's HTML helper): return it from a cell or pass it to display.</summary>
    public Html HTML(string markup) => new(markup);

    /// <summary>Runs JavaScript in the front end (.NET Interactive's Javascript helper): displayed at once, as there.</summary>
    public DisplayHandle Javascript(string code) => session.Display(new ScriptContent(code));

    /// <summary>A live one-line status for training and sweeps, updated in place (at most every half second).</summary>
    public NotebookProgress Progress(string title) =>
        new(display(new Html($"<code>{System.Net.WebUtility.HtmlEncode(title)}: starting…</code>", $"{title}: starting…")), title, session.ReportProgress);
}

/// <summary>One display updated in place with training and sweep progress; the same text goes to the runner's terminal line.</summary>
public sealed class NotebookProgress(DisplayHandle handle, string title, Action<string> report) : IProgress<TrainProgress>, IProgress<SweepProgress>, IProgress<string>
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
        if (!force && (DateTime.UtcNow - last).TotalSeconds < 0.5) return;
        last = DateTime.UtcNow;
        var text = string.Join(" · ", new[] { title, sweep, status }.Where(s => s.Length > 0));
        handle.Update(new Html($"<code>{System.Net.WebUtility.HtmlEncode(text)}</code>", text));
        report(text);
    }
}

/// <summary>.NET Interactive's display extensions that notebooks written for it call on values.</summary>
public static class PolyglotDisplay
{
    /// <summary>Shows rows as a table (text/html, text/csv), one column per property: `results.DisplayTable()`.</summary>
    public static DisplayHandle DisplayTable<T>(this IEnumerable<T> rows) => NotebookSession.DisplayCurrent(MimeFormatter.Table(rows));
}
