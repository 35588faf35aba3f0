using System.CommandLine;
using ResearchKit;
using ResearchKit.Cli;

// One-line errors and a non-zero exit on failure; usage on bad arguments (System.CommandLine).
var root = new RootCommand("ResearchKit: reproduce self-supervised vision papers on a CPU")
{
    Commands.Pretrain(), Commands.Probe(), Commands.FineTune(), Commands.Data(), Commands.Bench(), NotebookCommand.Create(),
};
try
{
    return root.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (Exception e) when (e is ResearchKitException || e.InnerException is ResearchKitException)
{
    Console.Error.WriteLine($"error: {(e as ResearchKitException ?? e.InnerException)!.Message}");
    return 1;
}
