using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace ResearchKit.Notebooks;

/// <summary>
/// `#r "nuget: Name[, Version]"` and `#i "nuget: SOURCE"` as .NET Interactive reads them. A session's packages restore
/// together in one small project (so their dependencies agree) with `dotnet restore`, from the sources of the NuGet.config
/// that governs the notebook's folder plus those #i added. Each reference stands alone: one that fails is reported and
/// the others are still referenced. What a set of requests resolved to is cached under the package cache, so running
/// the notebook again needs no network. The packages this process ships (its deps.json) keep their versions: a request for
/// another version, or a package that needs one, is an error naming both; packages .NET itself contains are no-ops.
/// </summary>
public sealed partial class PackageReferences(string workingDirectory, string? cacheRoot = null)
{
    /// <summary>`#r "nuget: Name[, Version]"`: group 1 the name, group 2 the version (empty for the newest).</summary>
    [GeneratedRegex(@"^\s*#r\s+""nuget:\s*([^,""\s]+)\s*(?:,\s*([^""\s]*)\s*)?""\s*$")]
    internal static partial Regex ReferenceLine();

    /// <summary>`#i "nuget: SOURCE"`: group 1 the source.</summary>
    [GeneratedRegex(@"^\s*#i\s+""nuget:\s*([^""]+?)\s*""\s*$")]
    internal static partial Regex SourceLine();

    [GeneratedRegex(@"error (NU\d{4}): (.*?)(?: \[[^\]]*\])?$", RegexOptions.Multiline)]
    private static partial Regex NuGetError();

    readonly string cache = cacheRoot ?? Environment.GetEnvironmentVariable("RESEARCHKIT_PACKAGE_CACHE") ?? UserCache.Folder("packages");
    readonly List<string> sources = [];
    readonly SortedDictionary<string, string> requested = new(StringComparer.OrdinalIgnoreCase);   // name → version ("" = newest)
    readonly List<string> assemblies = [];

    /// <summary>Every assembly the session's packages brought, in the order they were added.</summary>
    public IReadOnlyList<string> Assemblies => assemblies;

    /// <summary>A line that is a package reference or a package source, for cells that only need to skip them.</summary>
    public static bool IsPackageLine(string line) => ReferenceLine().IsMatch(line) || SourceLine().IsMatch(line);

    /// <summary>
    /// Handles the code's package lines: returns it with them blanked (line numbers keep), the packages it installed
    /// ("Name, Version"), the assemblies they added, and one error line per reference that could not be honoured.
    /// </summary>
    public (string Code, IReadOnlyList<string> Installed, IReadOnlyList<string> Added, IReadOnlyList<string> Errors) Apply(string code)
    {
        var lines = code.Split('\n');
        var asked = new List<(string Name, string Version, int Line)>();
        var errors = new List<string>();
        for (int i = 0; i < lines.Length; i++)
        {
            if (SourceLine().Match(lines[i]) is { Success: true } source)
            {
                var value = source.Groups[1].Value;
                var isUrl = Uri.TryCreate(value, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https";
                var resolved = isUrl ? value : Path.GetFullPath(value, workingDirectory);
                if (!isUrl && !Directory.Exists(resolved)) errors.Add($"line {i + 1}: #i: package source folder {resolved} does not exist");
                else if (!sources.Contains(resolved)) sources.Add(resolved);
                lines[i] = "";
            }
            else if (ReferenceLine().Match(lines[i]) is { Success: true } reference)
            {
                asked.Add((reference.Groups[1].Value, reference.Groups[2].Value, i + 1));
                lines[i] = "";
            }
        }
        var installed = new List<string>();
        var added = new List<string>();
        var wanted = new List<(string Name, string Version, int Line)>();
        foreach (var (name, version, line) in asked)
        {
            if (Shipped.Packages.TryGetValue(name, out var shipped))
            {
                // A NuGet version is a minimum ("13.0.3" takes 13.0.4); "[13.0.3]" asks for exactly that one.
                if (!Satisfies(shipped.Version, version))
                    errors.Add($"line {line}: package {name}: ResearchKit ships version {shipped.Version}, this cell asks for {version}; ask for {shipped.Version} or no version");
                else
                {
                    installed.Add($"{name}, {shipped.Version}");
                    added.AddRange(Add(shipped.Assemblies));
                }
            }
            else if (IsInDotNet(name)) installed.Add($"{name} (part of .NET {Environment.Version})");
            else wanted.Add((name, version, line));
        }
        if (wanted.Count > 0)
        {
            foreach (var (name, version, _) in wanted) requested[name] = version;
            var (resolved, failed) = Resolve();
            foreach (var (name, version, line) in wanted)
            {
                if (failed.TryGetValue(name, out var why))
                {
                    requested.Remove(name);
                    errors.Add($"line {line}: package {name}{(version.Length > 0 ? $", {version}" : "")}: {why}");
                }
                else installed.Add($"{name}, {resolved.Versions[name]}");
            }
            added.AddRange(Add(resolved.Assemblies));
        }
        return (string.Join("\n", lines), installed, added, errors);
    }

    /// <summary>Whether the shipped version meets a request: none, "*", a minimum ("1.2") or an exact one ("[1.2]").</summary>
    internal static bool Satisfies(string shipped, string requested)
    {
        if (requested.Length == 0 || requested == "*") return true;
        bool exact = requested.StartsWith('[') && requested.EndsWith(']') && !requested.Contains(',');
        var wanted = requested.Trim('[', ']', '(', ')').Split(',')[0].Trim();
        int order = CompareVersions(shipped, wanted);
        return exact ? order == 0 : order >= 0;
    }

    /// <summary>SemVer order: numeric parts, then a release above its prereleases ("1.0.0" > "1.0.0-beta").</summary>
    static int CompareVersions(string a, string b)
    {
        static (long[] Numbers, string Label) Split(string v)
        {
            var dash = v.IndexOf('-');
            var core = (dash < 0 ? v : v[..dash]).Split('+')[0].Split('.').Select(p => long.TryParse(p, out var n) ? n : 0).ToList();
            while (core.Count < 4) core.Add(0);
            return ([.. core], dash < 0 ? "" : v[(dash + 1)..]);
        }
        var (x, y) = (Split(a), Split(b));
        for (int i = 0; i < 4; i++)
            if (x.Numbers[i] != y.Numbers[i]) return x.Numbers[i].CompareTo(y.Numbers[i]);
        if (x.Label.Length == 0 || y.Label.Length == 0) return -x.Label.Length.CompareTo(0) + y.Label.Length.CompareTo(0);
        return string.CompareOrdinal(x.Label, y.Label);
    }

    IEnumerable<string> Add(IEnumerable<string> paths)
    {
        foreach (var path in paths)
            if (!assemblies.Contains(path))
            {
                assemblies.Add(path);
                yield return path;
            }
    }

    /// <summary>A base-library package (System.Text.Json, System.Memory): .NET's own folder has its assembly.</summary>
    static bool IsInDotNet(string name) =>
        File.Exists(Path.Combine(System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory(), name + ".dll"));

    sealed record Resolution(Dictionary<string, string> Versions, List<string> Assemblies);

    /// <summary>
    /// Restores every requested package; one that fails is dropped and the rest restored again, so each stands alone.
    /// Returns the resolution and, per failed package, why.
    /// </summary>
    (Resolution Resolved, Dictionary<string, string> Failed) Resolve()
    {
        var failed = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var unreachable = new List<string>();   // errors of sources #i added that could not be reached
        while (true)
        {
            var packages = requested.Where(p => !failed.ContainsKey(p.Key)).ToList();
            if (packages.Count == 0) return (new Resolution(new(StringComparer.OrdinalIgnoreCase), []), failed);
            var outcome = Restore(packages);
            if (outcome.Resolution is { } resolution) return (resolution, failed);
            // A source #i added that cannot be reached leaves the session, and the rest restore again without it.
            var gone = sources.Where(source => outcome.Errors.Any(e => e.Contains(source, StringComparison.OrdinalIgnoreCase))).ToList();
            if (gone.Count > 0)
            {
                sources.RemoveAll(gone.Contains);
                unreachable.AddRange(outcome.Errors.Where(e => gone.Any(g => e.Contains(g, StringComparison.OrdinalIgnoreCase))));
                continue;
            }
            // Blame the packages the errors name; an error that names none (a source in NuGet.config) fails them all.
            // A name ends where no word character follows, nor a dot starting one (`Find package A.B.` names A.B, not A).
            var blamed = packages.Where(p => outcome.Errors.Any(e => Regex.IsMatch(e, $@"(?<![\w.]){Regex.Escape(p.Key)}(?!\w|\.\w)", RegexOptions.IgnoreCase))).ToList();
            foreach (var (name, _) in blamed.Count > 0 ? blamed : packages)
            {
                var why = outcome.Errors.Where(e => blamed.Count == 0 || e.Contains(name, StringComparison.OrdinalIgnoreCase));
                failed[name] = string.Join("; ", unreachable.Concat(why).Distinct().Take(2));
            }
        }
    }

    (Resolution? Resolution, List<string> Errors) Restore(List<KeyValuePair<string, string>> packages)
    {
        var config = NuGetConfig();
        var framework = $"net{Environment.Version.Major}.0";
        var key = string.Join("\n", packages.Select(p => $"{p.Key.ToLowerInvariant()}={p.Value}").Concat(sources).Append(framework).Append(config ?? ""));
        var folder = Path.Combine(cache, Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(key)))[..16].ToLowerInvariant());
        var resolvedFile = Path.Combine(folder, "resolved.json");
        var notFoundFile = Path.Combine(folder, "not-found.json");
        if (File.Exists(resolvedFile) && Read(resolvedFile) is { } cached) return (cached, []);
        // A package the sources did not have is remembered too, so a second run is offline even with a bad reference.
        if (File.Exists(notFoundFile)) return (null, [.. JsonNode.Parse(File.ReadAllText(notFoundFile))!.AsArray().Select(e => e!.GetValue<string>())]);

        Directory.CreateDirectory(folder);
        var project = new StringBuilder("""
            <Project Sdk="Microsoft.NET.Sdk">
              <!-- Written by ResearchKit for a notebook's #r "nuget: …" lines; restored, never built. -->
              <PropertyGroup>
            """);
        project.Append($"    <TargetFramework>{framework}</TargetFramework>\n");
        project.Append("    <ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally>\n");
        project.Append("    <ImportDirectoryBuildProps>false</ImportDirectoryBuildProps><ImportDirectoryBuildTargets>false</ImportDirectoryBuildTargets>\n");
        if (sources.Count > 0) project.Append($"    <RestoreAdditionalProjectSources>{System.Security.SecurityElement.Escape(string.Join(";", sources))}</RestoreAdditionalProjectSources>\n");
        project.Append("  </PropertyGroup>\n  <ItemGroup>\n");
        foreach (var (name, version) in packages)
            project.Append($"    <PackageReference Include=\"{System.Security.SecurityElement.Escape(name)}\" Version=\"{System.Security.SecurityElement.Escape(version.Length > 0 ? version : "*")}\" />\n");
        project.Append("  </ItemGroup>\n</Project>\n");
        var projectFile = Path.Combine(folder, "packages.csproj");
        AtomicFile.WriteAllText(projectFile, project.ToString());

        var arguments = new List<string> { "restore", projectFile, "--nologo", "-v", "q" };
        if (config is not null) arguments.AddRange(["--configfile", config]);
        var (exit, output) = Dotnet(arguments);
        var matches = NuGetError().Matches(output);
        var errors = matches.Select(m => Explain(m.Groups[1].Value, m.Groups[2].Value.Trim())).Distinct().ToList();
        if (exit != 0)
        {
            if (errors.Count > 0 && matches.All(m => m.Groups[1].Value is "NU1101" or "NU1102" or "NU1103"))
                AtomicFile.WriteAllText(notFoundFile, new JsonArray([.. errors.Select(e => (JsonNode?)e)]).ToJsonString());
            return (null, errors.Count > 0 ? errors : [$"dotnet restore failed: {output.Trim().Split('\n').LastOrDefault()}"]);
        }
        var assets = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "obj", "project.assets.json")))!;
        var (resolution, conflicts) = RuntimeAssemblies(assets, framework);
        if (conflicts.Count > 0) return (null, conflicts);
        var record = new JsonObject
        {
            ["versions"] = new JsonObject(resolution.Versions.Select(v => KeyValuePair.Create(v.Key, (JsonNode?)v.Value))),
            ["assemblies"] = new JsonArray([.. resolution.Assemblies.Select(a => (JsonNode?)a)]),
        };
        AtomicFile.WriteAllText(resolvedFile, record.ToJsonString());
        return (resolution, []);
    }

    static Resolution? Read(string file)
    {
        try
        {
            var json = JsonNode.Parse(File.ReadAllText(file))!;
            var resolution = new Resolution(
                json["versions"]!.AsObject().ToDictionary(p => p.Key, p => p.Value!.GetValue<string>(), StringComparer.OrdinalIgnoreCase),
                [.. json["assemblies"]!.AsArray().Select(a => a!.GetValue<string>())]);
            return resolution.Assemblies.All(File.Exists) ? resolution : null;   // the global packages folder was cleaned
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or NullReferenceException or InvalidOperationException) { return null; }
    }

    /// <summary>Runtime assemblies of every package the restore resolved, but the ones this process ships or .NET has.</summary>
    static (Resolution, List<string> Conflicts) RuntimeAssemblies(JsonObject assets, string framework)
    {
        var folders = assets["packageFolders"]!.AsObject().Select(p => p.Key).ToList();
        var libraries = assets["libraries"]!.AsObject();
        var versions = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var paths = new List<string>();
        var conflicts = new List<string>();
        foreach (var (id, target) in assets["targets"]![framework]!.AsObject())
        {
            if (target?["type"]?.GetValue<string>() != "package") continue;
            var (name, version) = (id[..id.IndexOf('/')], id[(id.IndexOf('/') + 1)..]);
            versions[name] = version;
            if (Shipped.Packages.TryGetValue(name, out var shipped))
            {
                if (shipped.Version != version)
                    conflicts.Add($"it needs {name} {version}, and ResearchKit ships {name} {shipped.Version}");
                continue;
            }
            if (target["runtime"] is not JsonObject runtime) continue;
            var folder = folders.Select(f => Path.Combine(f, libraries[id]!["path"]!.GetValue<string>())).FirstOrDefault(Directory.Exists);
            if (folder is null) continue;
            foreach (var (file, _) in runtime)
                if (!file.EndsWith("/_._", StringComparison.Ordinal) && !IsInDotNet(Path.GetFileNameWithoutExtension(file)))
                    paths.Add(Path.Combine(folder, file));
        }
        return (new Resolution(versions, paths), conflicts);
    }

    /// <summary>NuGet's messages in a notebook's terms.</summary>
    static string Explain(string code, string message) => code switch
    {
        "NU1301" => $"a package source cannot be reached ({message})",
        "NU1302" => $"NuGet refuses plain http:// sources; use https:// ({message})",
        "NU1101" or "NU1102" or "NU1103" => $"not found in the package sources ({message})",
        _ => $"{code}: {message}",
    };

    /// <summary>The NuGet.config nearest the notebook's folder (NuGet's own rule for a project there), if any.</summary>
    string? NuGetConfig()
    {
        for (var dir = new DirectoryInfo(workingDirectory); dir is not null; dir = dir.Parent)
            foreach (var name in new[] { "nuget.config", "NuGet.config", "NuGet.Config" })
                if (File.Exists(Path.Combine(dir.FullName, name))) return Path.Combine(dir.FullName, name);
        return null;
    }

    static (int Exit, string Output) Dotnet(IEnumerable<string> arguments)
    {
        var start = new ProcessStartInfo(DotnetHost(), arguments) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(start) ?? throw new ResearchKitException("could not start `dotnet restore` for a #r \"nuget: …\" line");
        var error = process.StandardError.ReadToEndAsync();
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, output + error.Result);
    }

    /// <summary>The dotnet host running us (a notebook worker runs under it), else the one on PATH.</summary>
    static string DotnetHost() =>
        Environment.ProcessPath is { } host && Path.GetFileNameWithoutExtension(host) == "dotnet" ? host : "dotnet";

    /// <summary>The packages this process was built with (its deps.json): what `#r "nuget: …"` must not replace.</summary>
    internal static class Shipped
    {
        public sealed record Package(string Version, IReadOnlyList<string> Assemblies);

        public static readonly IReadOnlyDictionary<string, Package> Packages = Read();

        static Dictionary<string, Package> Read()
        {
            var packages = new Dictionary<string, Package>(StringComparer.OrdinalIgnoreCase);
            var files = (AppContext.GetData("APP_CONTEXT_DEPS_FILES") as string ?? "").Split(';', StringSplitOptions.RemoveEmptyEntries);
            foreach (var file in files.Where(File.Exists))
            {
                var deps = JsonNode.Parse(File.ReadAllText(file))!;
                var targets = deps["targets"]?.AsObject().FirstOrDefault().Value?.AsObject();
                foreach (var (id, library) in deps["libraries"]?.AsObject() ?? [])
                {
                    if (library?["type"]?.GetValue<string>() is not ("package" or "project")) continue;   // the kit itself is a project here
                    var (name, version) = (id[..id.IndexOf('/')], id[(id.IndexOf('/') + 1)..]);
                    var runtime = targets?[id]?["runtime"]?.AsObject().Select(p => Path.Combine(AppContext.BaseDirectory, Path.GetFileName(p.Key)))
                        .Where(File.Exists).ToList() ?? [];
                    packages.TryAdd(name, new Package(version, runtime));
                }
            }
            return packages;
        }
    }
}
