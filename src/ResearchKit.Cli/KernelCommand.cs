using System.CommandLine;

namespace ResearchKit.Cli;

/// <summary>`researchkit kernel`: the Jupyter kernel (run) and its kernelspec (install, uninstall, list).</summary>
static class KernelCommand
{
    public static Command Create()
    {
        var connection = new Option<string>("--connection-file", "-f") { Description = "the connection file Jupyter writes", Required = true };
        var run = new Command("run", "Serve a Jupyter front end (started by Jupyter from the kernelspec)") { connection };
        run.SetAction(r => ResearchKit.Notebooks.Kernel.KernelServer.Run(r.GetValue(connection)!));

        var user = new Option<bool>("--user") { Description = "the user's Jupyter folder (default)" };
        var prefix = new Option<string?>("--prefix") { Description = "DIR/share/jupyter/kernels" };
        var sysPrefix = new Option<bool>("--sys-prefix") { Description = "Python's sys.prefix/share/jupyter/kernels" };
        var name = new Option<string>("--name") { Description = "kernel name; .net-csharp opens Polyglot notebooks directly", DefaultValueFactory = _ => ResearchKit.Notebooks.Kernel.KernelSpecs.DefaultName };
        var display = new Option<string>("--display-name") { Description = "name shown in the launcher", DefaultValueFactory = _ => "C# (ResearchKit)" };
        ResearchKit.Notebooks.Kernel.KernelLocation Location(ParseResult r)
        {
            int chosen = (r.GetValue(user) ? 1 : 0) + (r.GetValue(prefix) is null ? 0 : 1) + (r.GetValue(sysPrefix) ? 1 : 0);
            if (chosen > 1) throw new ResearchKitException("choose one of --user, --prefix DIR, --sys-prefix");
            return r.GetValue(prefix) is { } p ? new ResearchKit.Notebooks.Kernel.KernelLocation.Prefix(p)
                : r.GetValue(sysPrefix) ? new ResearchKit.Notebooks.Kernel.KernelLocation.SysPrefix() : new ResearchKit.Notebooks.Kernel.KernelLocation.User();
        }
        var install = new Command("install", "Register the kernel with Jupyter, JupyterLab and VS Code") { user, prefix, sysPrefix, name, display };
        install.SetAction(r => Console.WriteLine($"installed kernel '{r.GetValue(name)}' in {ResearchKit.Notebooks.Kernel.KernelSpecs.Install(Location(r), r.GetValue(name)!, r.GetValue(display)!)}"));
        var uninstall = new Command("uninstall", "Remove a kernelspec installed by `kernel install`") { user, prefix, sysPrefix, name };
        uninstall.SetAction(r => Console.WriteLine($"removed {ResearchKit.Notebooks.Kernel.KernelSpecs.Uninstall(Location(r), r.GetValue(name)!)}"));
        var list = new Command("list", "ResearchKit kernelspecs Jupyter can find");
        list.SetAction(_ =>
        {
            foreach (var (n, folder) in ResearchKit.Notebooks.Kernel.KernelSpecs.List()) Console.WriteLine($"{n}\t{folder}");
        });
        return new Command("kernel", "The Jupyter kernel for C#") { run, install, uninstall, list };
    }
}
