using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Markdig;
using ResearchKit.Reporting;

namespace ResearchKit.Notebooks;

/// <summary>
/// A standalone HTML page of an executed notebook: markdown rendered, code, outputs, interactive charts.
/// plotly.js and mermaid.js are inlined once in the head (per-output copies are removed), so the page works offline.
/// </summary>
public static class HtmlReport
{
    internal static readonly MarkdownPipeline Pipeline = new MarkdownPipelineBuilder().UseAdvancedExtensions().Build();

    public static void Write(NotebookDocument notebook, string path) => AtomicFile.WriteAllText(path, Render(notebook));

    public static string Render(NotebookDocument notebook)
    {
        var body = new StringBuilder();
        var libraries = new HashSet<InlinedLibraries.Library>();
        foreach (var cell in notebook.CellObjects)
        {
            var source = NotebookDocument.Source(cell);
            switch (NotebookDocument.CellType(cell))
            {
                case "markdown":
                    body.Append("<section class=\"markdown\">").Append(Markdig.Markdown.ToHtml(source, Pipeline)).Append("</section>\n");
                    break;
                case "code":
                    var count = cell["execution_count"]?.ToString() ?? " ";
                    var tags = NotebookDocument.Tags(cell);
                    body.Append($"<section class=\"code{(tags.Contains("injected-parameters") ? " injected" : "")}\"><div class=\"prompt\">In [{count}]</div>");
                    body.Append("<pre class=\"source\"><code>").Append(WebUtility.HtmlEncode(source)).Append("</code></pre>");
                    foreach (var output in (cell["outputs"] as JsonArray ?? []).OfType<JsonObject>())
                        body.Append(RenderOutput(output, libraries));
                    body.Append("</section>\n");
                    break;
            }
        }
        var title = notebook.CellObjects.Where(c => NotebookDocument.CellType(c) == "markdown")
            .Select(c => NotebookDocument.Source(c).Split('\n').FirstOrDefault(l => l.StartsWith("# "))?[2..].Trim())
            .FirstOrDefault(t => t is not null) ?? Path.GetFileNameWithoutExtension(notebook.Path);
        var page = new StringBuilder();
        page.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>");
        page.Append($"<title>{WebUtility.HtmlEncode(title)}</title><style>{Style}</style>");
        foreach (var library in InlinedLibraries.All.Where(libraries.Contains)) page.Append(library.Script());
        page.Append("</head><body><main>\n").Append(body).Append("</main></body></html>\n");
        return page.ToString();
    }

    static string RenderOutput(JsonObject output, HashSet<InlinedLibraries.Library> libraries)
    {
        switch (output["output_type"]?.GetValue<string>())
        {
            case "stream":
                var name = output["name"]?.GetValue<string>() ?? "stdout";
                return $"<pre class=\"output {name}\">{WebUtility.HtmlEncode(NotebookDocument.Text(output["text"]))}</pre>";
            case "error":
                // The traceback starts with `Name: message`, as Jupyter front ends show it: the message appears once.
                var traceback = string.Join("\n", (output["traceback"] as JsonArray ?? []).Select(t => t?.GetValue<string>()));
                if (traceback.Length == 0) traceback = $"{output["ename"]?.GetValue<string>()}: {output["evalue"]?.GetValue<string>()}";
                return $"<pre class=\"output error\">{WebUtility.HtmlEncode(traceback)}</pre>";
            case "display_data" or "execute_result":
                var data = output["data"] as JsonObject ?? [];
                if (data["text/html"] is { } html)
                {
                    var content = InlinedLibraries.Strip(NotebookDocument.Text(html));
                    libraries.UnionWith(InlinedLibraries.NeededBy(content));
                    return $"<div class=\"output html\">{content}</div>";
                }
                if (data["image/png"] is { } png) return $"<div class=\"output\"><img alt=\"output\" src=\"data:image/png;base64,{NotebookDocument.Text(png).Trim()}\"/></div>";
                if (data["text/markdown"] is { } md) return $"<div class=\"output markdown\">{Markdig.Markdown.ToHtml(NotebookDocument.Text(md), Pipeline)}</div>";
                if (data["text/plain"] is { } plain) return $"<pre class=\"output\">{WebUtility.HtmlEncode(NotebookDocument.Text(plain))}</pre>";
                return "";
            default:
                return "";
        }
    }

    const string Style = """
        body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;background:#fafafa;color:#222}
        main{max-width:1100px;margin:0 auto;padding:24px 32px;background:#fff}
        section{margin:12px 0}
        .prompt{color:#888;font:12px monospace;margin-bottom:2px}
        pre{overflow-x:auto;padding:8px 10px;border-radius:4px;font-size:13px}
        pre.source{background:#f3f5f8;border-left:3px solid #4a7bd0}
        section.injected pre.source{border-left-color:#d08a4a}
        pre.output{background:#fff;border-left:3px solid #ddd}
        pre.stderr{color:#a35}
        pre.error{background:#fff0f0;border-left:3px solid #c33;color:#900}
        table.researchkit-table{border-collapse:collapse;font-size:13px}
        table.researchkit-table th,table.researchkit-table td{border:1px solid #ddd;padding:3px 8px;text-align:right}
        .markdown table{border-collapse:collapse}
        .markdown td,.markdown th{border:1px solid #ccc;padding:3px 8px}
        img{image-rendering:pixelated}
        """;
}
