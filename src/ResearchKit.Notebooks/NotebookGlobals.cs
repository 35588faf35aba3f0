using ResearchKit.Reporting;
using ResearchKit.Training;

namespace ResearchKit.Notebooks;

/// <summary>
/// What a notebook cell can call without a prefix: display(x), and Cancel, the token that --timeout or an interrupt
/// signals (pass it to long loops; <see cref="Notebook.Cancel"/> is the same token under a name every host has).
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

    /// <summary>The engine's older spelling of <see cref="Notebook.Progress"/>, which notebooks use to run in any host.</summary>
    public NotebookProgress Progress(string title) => Notebook.Progress(title);
}

/// <summary>
/// A session's <see cref="INotebookHost"/>: the running cell's cancel token, and status lines shown as HTML displays
/// updated in place, whose text also goes to the runner's terminal line.
/// </summary>
sealed class SessionNotebookHost(NotebookSession session, NotebookGlobals globals) : INotebookHost
{
    public CancellationToken Cancel => globals.Cancel;

    public TimeSpan UpdateInterval => TimeSpan.FromSeconds(0.5);

    public Action<string> ShowStatus(string text)
    {
        var handle = session.Display(Shown(text));
        return line =>
        {
            handle.Update(Shown(line));
            session.ReportProgress(line);
        };
    }

    static Html Shown(string text) => new($"<code>{System.Net.WebUtility.HtmlEncode(text)}</code>", text);
}

/// <summary>.NET Interactive's display extensions that notebooks written for it call on values.</summary>
public static class PolyglotDisplay
{
    /// <summary>Shows rows as a table (text/html, text/csv), one column per property: `results.DisplayTable()`.</summary>
    public static DisplayHandle DisplayTable<T>(this IEnumerable<T> rows) => NotebookSession.DisplayCurrent(MimeFormatter.Table(rows));
}
