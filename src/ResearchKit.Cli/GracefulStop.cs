using System.Runtime.InteropServices;
using ResearchKit.Training;

namespace ResearchKit.Cli;

/// <summary>
/// SIGINT (Ctrl+C) and SIGTERM (what Slurm sends before a time limit) cancel training instead of killing it: the
/// trainer finishes the current step and writes a checkpoint at that step, then the command says where it stopped
/// and exits with the conventional code (130, 143). A second signal quits at once.
/// </summary>
sealed class GracefulStop : IDisposable
{
    readonly CancellationTokenSource source = new();
    readonly PosixSignalRegistration[] registrations;
    int signalCode;

    readonly string action;

    /// <summary><paramref name="action"/> is what the first signal does, said on stderr when it arrives.</summary>
    public GracefulStop(string action = "stopping after the current step and saving a checkpoint")
    {
        this.action = action;
        registrations = [PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle), PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle)];
    }

    public CancellationToken Token => source.Token;

    /// <summary>128 + the signal number of the first signal received (130 for SIGINT, 143 for SIGTERM), or 0.</summary>
    public int ExitCode => signalCode;

    /// <summary>The last step training reported (for the stop message).</summary>
    public long LastStep { get; private set; }
    public long TotalSteps { get; private set; }

    /// <summary>Wraps a progress display so the last step is known when a signal stops training.</summary>
    public IProgress<TrainProgress> Track(IProgress<TrainProgress> inner) => new CallbackProgress<TrainProgress>(p =>
    {
        (LastStep, TotalSteps) = (p.Step, p.TotalSteps);
        inner.Report(p);
    });

    void Handle(PosixSignalContext context)
    {
        if (signalCode != 0) return;   // second signal: the default action ends the process at once
        context.Cancel = true;
        signalCode = context.Signal == PosixSignal.SIGINT ? 130 : 143;
        Console.Error.WriteLine($"\n{context.Signal}: {action} (send it again to quit at once)");
        source.Cancel();
    }

    public void Dispose()
    {
        foreach (var r in registrations) r.Dispose();
        source.Dispose();
    }
}
