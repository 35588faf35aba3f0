using System.CommandLine;

namespace ResearchKit.Cli;

/// <summary>`researchkit kernel`: the Jupyter kernel (run) and its kernelspec (install, uninstall, list).</summary>
static class KernelCommand
{
    public static Command Create()
    {
        var connection = new Option<string>("--connection-file", "-f") { Description = "the connection file Jupyter writes", Required = true };
        var language = new Option<string>("--language") { Description = "the language of cells without a magic: csharp or fsharp", DefaultValueFactory = _ => "csharp" };
        language.AcceptOnlyFromAmong("csharp", "fsharp");
        var run = new Command("run", "Serve a Jupyter front end (started by Jupyter from the kernelspec)") { connection, language };
        run.SetAction(r => ResearchKit.Notebooks.Kernel.KernelServer.Run(r.GetValue(connection)!, r.GetValue(language)!));

        var user = new Option<bool>("--user") { Description = "the user's Jupyter folder (default)" };
        var prefix = new Option<string?>("--prefix") { Description = "DIR/share/jupyter/kernels" };
        var sysPrefix = new Option<bool>("--sys-prefix") { Description = "Python's sys.prefix/share/jupyter/kernels" };
        var name = new Option<string?>("--name") { Description = "kernel name (default researchkit-csharp, researchkit-fsharp); .net-csharp opens Polyglot notebooks directly" };
        var display = new Option<string?>("--display-name") { Description = "name shown in the launcher (default C# (ResearchKit), F# (ResearchKit))" };
        ResearchKit.Notebooks.Kernel.KernelLocation Location(ParseResult r)
        {
            int chosen = (r.GetValue(user) ? 1 : 0) + (r.GetValue(prefix) is null ? 0 : 1) + (r.GetValue(sysPrefix) ? 1 : 0);
            if (chosen > 1) throw new ResearchKitException("choose one of --user, --prefix DIR, --sys-prefix");
            return r.GetValue(prefix) is { } p ? new ResearchKit.Notebooks.Kernel.KernelLocation.Prefix(p)
                : r.GetValue(sysPrefix) ? new ResearchKit.Notebooks.Kernel.KernelLocation.SysPrefix() : new ResearchKit.Notebooks.Kernel.KernelLocation.User();
        }
        var install = new Command("install", "Register the kernel with Jupyter, JupyterLab and VS Code (C#, or F# with --language fsharp)")
            { user, prefix, sysPrefix, name, display, language };
        install.SetAction(r =>
        {
            var spec = ResearchKit.Notebooks.Kernel.KernelSpecs.For(r.GetValue(language)!, r.GetValue(name), r.GetValue(display));
            Console.WriteLine($"installed kernel '{spec.Name}' in {ResearchKit.Notebooks.Kernel.KernelSpecs.Install(Location(r), spec)}");
        });
        var uninstall = new Command("uninstall", "Remove a kernelspec installed by `kernel install`") { user, prefix, sysPrefix, name, language };
        uninstall.SetAction(r => Console.WriteLine(
            $"removed {ResearchKit.Notebooks.Kernel.KernelSpecs.Uninstall(Location(r), ResearchKit.Notebooks.Kernel.KernelSpecs.For(r.GetValue(language)!, r.GetValue(name), null).Name)}"));
        var list = new Command("list", "ResearchKit kernelspecs Jupyter can find");
        list.SetAction(_ =>
        {
            foreach (var (n, folder) in ResearchKit.Notebooks.Kernel.KernelSpecs.List()) Console.WriteLine($"{n}\t{folder}");
        });
        return new Command("kernel", "The Jupyter kernels for C# and F#") { run, install, uninstall, list };
    }
}
