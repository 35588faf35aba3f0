using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using SkiaSharp;

namespace ResearchKit.Notebooks.Kernel;

/// <summary>Where a kernelspec goes: the user's Jupyter data folder, a prefix (DIR/share/jupyter/kernels), or Python's sys.prefix.</summary>
public abstract record KernelLocation
{
    public sealed record User : KernelLocation;
    public sealed record Prefix(string Directory) : KernelLocation;
    public sealed record SysPrefix : KernelLocation;

    /// <summary>The kernels folder: ~/.local/share/jupyter/kernels on Linux, as `jupyter --data-dir` reports.</summary>
    public string KernelsFolder() => this switch
    {
        User => Path.Combine(UserDataDir(), "kernels"),
        Prefix p => Path.Combine(Path.GetFullPath(p.Directory), "share", "jupyter", "kernels"),
        _ => Path.Combine(PythonPrefix(), "share", "jupyter", "kernels"),
    };

    static string UserDataDir()
    {
        if (Environment.GetEnvironmentVariable("JUPYTER_DATA_DIR") is { Length: > 0 } data) return data;
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (OperatingSystem.IsMacOS()) return Path.Combine(home, "Library", "Jupyter");
        if (OperatingSystem.IsWindows()) return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.ApplicationData), "jupyter");
        var xdg = Environment.GetEnvironmentVariable("XDG_DATA_HOME");
        return Path.Combine(string.IsNullOrEmpty(xdg) ? Path.Combine(home, ".local", "share") : xdg, "jupyter");
    }

    static string PythonPrefix()
    {
        try
        {
            using var python = Process.Start(new ProcessStartInfo("python3", ["-c", "import sys; print(sys.prefix)"]) { RedirectStandardOutput = true })!;
            var prefix = python.StandardOutput.ReadToEnd().Trim();
            python.WaitForExit();
            if (python.ExitCode == 0 && prefix.Length > 0) return prefix;
        }
        catch (System.ComponentModel.Win32Exception) { }
        throw new ResearchKitException("--sys-prefix needs python3 on PATH (Jupyter's sys.prefix); use --user or --prefix DIR");
    }
}

/// <summary>
/// Installs, lists and removes the kernelspec that makes Jupyter, JupyterLab and VS Code start `researchkit kernel run`.
/// interrupt_mode is "message": interrupts arrive as interrupt_request on the control channel (a signal would reach the
/// worker process group too).
/// </summary>
public static class KernelSpecs
{
    public const string DefaultName = "researchkit-csharp";

    /// <summary>A kernelspec to install: its folder name, launcher name and the language of cells without a magic.</summary>
    public sealed record Spec(string Name, string DisplayName, string Language);

    /// <summary>The C# or F# kernelspec, with the given name and display name or the defaults.</summary>
    public static Spec For(string language, string? name = null, string? displayName = null) => language switch
    {
        "fsharp" => new Spec(name ?? "researchkit-fsharp", displayName ?? "F# (ResearchKit)", "fsharp"),
        "csharp" => new Spec(name ?? DefaultName, displayName ?? "C# (ResearchKit)", "csharp"),
        _ => throw new ResearchKitException($"--language '{language}': expected csharp or fsharp"),
    };

    /// <summary>How to start this kernel: the repository's launcher when we were started through it (it applies .config/researchkit.env), else dotnet and the CLI.</summary>
    public static string[] KernelCommand(string language = "csharp")
    {
        string[] run = ["kernel", "run", .. language == "csharp" ? Array.Empty<string>() : ["--language", language], "--connection-file", "{connection_file}"];
        if (Environment.GetEnvironmentVariable("RESEARCHKIT_LAUNCHER") is { Length: > 0 } launcher && File.Exists(launcher))
            return [launcher, .. run];
        var worker = WorkerCommand.Default();
        return [worker.FileName, worker.Arguments[0], .. run];
    }

    public static string Install(KernelLocation location, Spec kernel)
    {
        var folder = KernelFolder(location, kernel.Name);
        Directory.CreateDirectory(folder);
        var spec = new JsonObject
        {
            ["argv"] = new JsonArray(KernelCommand(kernel.Language).Select(a => (JsonNode)a!).ToArray()),
            ["display_name"] = kernel.DisplayName,
            ["language"] = kernel.Language == "fsharp" ? "F#" : "C#",
            ["interrupt_mode"] = "message",
            ["metadata"] = new JsonObject { ["researchkit"] = true, ["debugger"] = false },
        };
        AtomicFile.WriteAllText(Path.Combine(folder, "kernel.json"), spec.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        foreach (var size in new[] { 32, 64 }) File.WriteAllBytes(Path.Combine(folder, $"logo-{size}x{size}.png"), Logo(size, kernel.Language == "fsharp" ? "F#" : "C#"));
        return folder;
    }

    /// <summary>The kernelspec folders that start ResearchKit, in every place Jupyter looks (user, JUPYTER_PATH, system).</summary>
    public static IReadOnlyList<(string Name, string Folder)> List()
    {
        var places = new List<string> { new KernelLocation.User().KernelsFolder() };
        foreach (var p in (Environment.GetEnvironmentVariable("JUPYTER_PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
            places.Add(Path.Combine(p, "kernels"));
        places.AddRange(["/usr/local/share/jupyter/kernels", "/usr/share/jupyter/kernels"]);
        var found = new List<(string, string)>();
        foreach (var place in places.Distinct().Where(Directory.Exists))
            foreach (var folder in Directory.GetDirectories(place))
            {
                var file = Path.Combine(folder, "kernel.json");
                try
                {
                    if (File.Exists(file) && JsonNode.Parse(File.ReadAllText(file))?["metadata"]?["researchkit"]?.GetValue<bool>() == true)
                        found.Add((Path.GetFileName(folder), folder));
                }
                catch (JsonException) { }
            }
        return found;
    }

    /// <summary>
    /// The kernel's own folder, directly inside the location's kernels folder. A name is one path segment of Jupyter's
    /// characters: "." and ".." pass a character check but name the kernels folder or its parent, which uninstall
    /// would then delete with everything in it.
    /// </summary>
    static string KernelFolder(KernelLocation location, string name)
    {
        if (name.Length == 0 || name.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_')))
            throw new ResearchKitException($"--name '{name}': a kernel name is ASCII letters, digits, '.', '-' and '_'");
        if (name.All(c => c == '.'))
            throw new ResearchKitException($"--name '{name}': a kernel name needs a letter, digit, '-' or '_' ('.' and '..' are folders)");
        var kernels = Path.GetFullPath(location.KernelsFolder());
        var folder = Path.GetFullPath(Path.Combine(kernels, name));
        if (Path.GetDirectoryName(folder) != Path.TrimEndingDirectorySeparator(kernels))
            throw new ResearchKitException($"--name '{name}': not a folder directly inside {kernels}");
        return folder;
    }

    public static string Uninstall(KernelLocation location, string name = DefaultName)
    {
        var folder = KernelFolder(location, name);
        var file = Path.Combine(folder, "kernel.json");
        if (!File.Exists(file)) throw new ResearchKitException($"no kernel '{name}' in {location.KernelsFolder()}");
        if (JsonNode.Parse(File.ReadAllText(file))?["metadata"]?["researchkit"]?.GetValue<bool>() != true)
            throw new ResearchKitException($"{folder} is not a ResearchKit kernel; not removed");
        Directory.Delete(folder, recursive: true);
        return folder;
    }

    /// <summary>A small square logo drawn here (no image files to ship): "C#" or "F#" on the kit's blue.</summary>
    static byte[] Logo(int size, string text)
    {
        using var bitmap = new SKBitmap(size, size);
        using var canvas = new SKCanvas(bitmap);
        canvas.Clear(new SKColor(0x4a, 0x7b, 0xd0));
        using var font = new SKFont(ResearchKit.Reporting.Typefaces.DejaVuSans(bold: true), size * 0.45f);
        using var paint = new SKPaint { Color = SKColors.White, IsAntialias = true };
        canvas.DrawText(text, size / 2f, size * 0.66f, SKTextAlign.Center, font, paint);
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }
}
