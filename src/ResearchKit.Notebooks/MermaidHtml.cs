using System.Formats.Tar;
using System.IO.Compression;
using System.Net;

namespace ResearchKit.Notebooks;

/// <summary>
/// #!mermaid cells as .NET Interactive shows them (text/html whose script draws the diagram), but offline: mermaid.js is
/// inlined once per document, as plotly.js is, where .NET Interactive loads it from a CDN. The diagram's source stays in
/// a &lt;pre&gt;, so a viewer that runs no script still shows the text.
/// The library is the npm package's dist/mermaid.min.js, fetched once from the npm registry ($npm_config_registry, else
/// registry.npmjs.org), checked against the SHA-512 npm publishes for the pinned version, and cached under
/// <see cref="UserCache"/>. A machine that never reaches the registry sets RESEARCHKIT_MERMAID_JS to a local copy.
/// </summary>
public static class MermaidHtml
{
    public const string Version = "12.3.0";
    const string TarballSha512 = "4113TdXeLAsMruJ79OpFL5O8+LTFXhQqZ260rF3tgUmiNAtRm4Uume04I+65PRN6yZ69J4f8rVYWW8zRk65UYw==";
    const string LibraryEntry = "package/dist/mermaid.min.js";

    /// <summary>Markers around the inlined library, so a report can strip per-output copies and keep one.</summary>
    public const string BeginMarker = "<!--researchkit:mermaid.js-->", EndMarker = "<!--/researchkit:mermaid.js-->";

    /// <summary>The class of a diagram's element: an output holding it needs the library.</summary>
    public const string DiagramClass = "researchkit-mermaid";

    static readonly Lock Gate = new();
    static string? library;

    /// <summary>mermaid.min.js's text: the local copy, the cached one, or a fresh download. Throws a one-line error.</summary>
    public static string Library()
    {
        lock (Gate) return library ??= Load();
    }

    /// <summary>The whole library in a script tag that then draws the diagrams queued before it loaded.</summary>
    public static string Script() =>
        $"{BeginMarker}<script type=\"text/javascript\">{Library()}\n" +
        "mermaid.initialize({startOnLoad:false});" +
        $"(window.__researchkitMermaid||[]).forEach(function(d){{d()}});window.__researchkitMermaid=[];</script>{EndMarker}";

    /// <summary>A diagram: its source in a pre that mermaid replaces with the drawing, and the script that asks it to.</summary>
    public static string Diagram(string source, string? id = null)
    {
        id ??= "mermaid-" + Guid.NewGuid().ToString("N")[..12];
        return $"<pre class=\"mermaid {DiagramClass}\" id=\"{id}\">{WebUtility.HtmlEncode(source.Trim())}</pre>" +
            "<script type=\"text/javascript\">(function(){" +
            $"var d=function(){{var g=document.getElementById('{id}');if(g&&!g.getAttribute('data-processed'))mermaid.run({{nodes:[g]}});}};" +
            "if(window.mermaid&&window.mermaid.run){d();}else{(window.__researchkitMermaid=window.__researchkitMermaid||[]).push(d);}" +
            "})();</script>";
    }

    static string Load()
    {
        if (Environment.GetEnvironmentVariable("RESEARCHKIT_MERMAID_JS") is { Length: > 0 } local)
            return File.Exists(local) ? File.ReadAllText(local)
                : throw new ResearchKitException($"RESEARCHKIT_MERMAID_JS: {local} does not exist; it should name a copy of mermaid.min.js");
        var cached = UserCache.Folder("mermaid", Version, "mermaid.min.js");
        if (File.Exists(cached)) return File.ReadAllText(cached);
        var registry = Environment.GetEnvironmentVariable("npm_config_registry") is { Length: > 0 } configured
            ? configured.TrimEnd('/') : "https://registry.npmjs.org";
        var url = $"{registry}/mermaid/-/mermaid-{Version}.tgz";
        var advice = $"set RESEARCHKIT_MERMAID_JS to a copy of mermaid.min.js (dist/ of `npm pack mermaid@{Version}`)";
        if (VerifiedDownload.Offline)
            throw new ResearchKitException($"mermaid.js {Version} is not cached and RESEARCHKIT_OFFLINE=1 forbids fetching {url}; {advice}");
        var tarball = UserCache.Folder("mermaid", Version, $"mermaid-{Version}.tgz");
        try { VerifiedDownload.Fetch(url, tarball, PublishedDigest.Sha512Base64(TarballSha512), TimeSpan.FromMinutes(2)); }
        catch (ResearchKitException e) { throw new ResearchKitException($"mermaid.js {Version}: {e.Message}; {advice}"); }
        var text = Extract(File.ReadAllBytes(tarball), LibraryEntry)
            ?? throw new ResearchKitException($"{url} has no {LibraryEntry}");
        AtomicFile.WriteAllText(cached, text);
        File.Delete(tarball);   // only the library is kept
        return text;
    }

    static string? Extract(byte[] tarball, string entryName)
    {
        using var gzip = new GZipStream(new MemoryStream(tarball), CompressionMode.Decompress);
        using var tar = new TarReader(gzip);
        while (tar.GetNextEntry() is { } entry)
        {
            if (entry.Name != entryName || entry.DataStream is null) continue;
            using var reader = new StreamReader(entry.DataStream);
            return reader.ReadToEnd();
        }
        return null;
    }
}
