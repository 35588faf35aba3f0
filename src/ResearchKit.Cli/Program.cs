using System.CommandLine;
using ResearchKit;
using ResearchKit.Cli;

// One-line errors and a non-zero exit on failure; usage on bad arguments (System.CommandLine).
// The kernel process only relays messages to its worker, which loads TorchSharp itself (and says so when it cannot):
// loading libtorch here took 0.4 s of the kernel's ready time, and building the other commands 60 ms more.
bool kernelProcess = args is ["kernel", ..];
if (!kernelProcess && NativeLibraries.TorchSharpError() is { } unloadable)
{
    Console.Error.WriteLine($"error: {unloadable}");
    return 1;
}
try
{
    // `pretrain` takes the options of the method it trains, so its command is built for that method.
    var method = args.Length > 0 && args[0] is "pretrain" or "bench" ? Commands.MethodOf(args) : null;
    var description = "ResearchKit: reproduce self-supervised vision papers on a CPU";
    var root = kernelProcess ? new RootCommand(description) { KernelCommand.Create() } : new RootCommand(description)
    {
        Commands.Pretrain(method ?? ResearchKit.Methods.MethodRegistry.Get("mae")), Commands.Methods(), Commands.Probe(), Commands.FineTune(),
        Commands.Data(), Commands.Bench(method ?? ResearchKit.Methods.MethodRegistry.Get("mae")), TokenizerCommand.Create(), PaletteCommand.Palette(), ShowCommand.Create(), EvaluateCommand.Create(), NotebookCommand.Create(), KernelCommand.Create(), SweepCommand.Create(),
    };
    var parsed = root.Parse(args);
    if (method is not null && Commands.UnknownOptionError(method, parsed.UnmatchedTokens, args[0]) is { } unknown)
        throw new ResearchKitException(unknown);
    if (args.Length > 0 && ParseErrors.OneLine(parsed) is { } badArguments)
    {
        Console.Error.WriteLine(badArguments);
        return 2;
    }
    return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e) when (NativeLibraries.Describe(e) is { } native)
{
    Console.Error.WriteLine($"error: {native}");
    return 1;
}
catch (Exception e) when (e is ResearchKitException || e.InnerException is ResearchKitException)
{
    Console.Error.WriteLine($"error: {(e as ResearchKitException ?? e.InnerException)!.Message}");
    return 1;
}
catch (Exception e) when (e is IOException or UnauthorizedAccessException || e.InnerException is IOException or UnauthorizedAccessException)
{
    // A path that cannot be created, read or written: .NET's message names it; no stack trace.
    var io = e is IOException or UnauthorizedAccessException ? e : e.InnerException!;
    Console.Error.WriteLine($"error: {io.Message.ReplaceLineEndings(" ")}");
    return 1;
}
