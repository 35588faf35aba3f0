using ResearchKit.Training;
using ShellProgressBar;

namespace ResearchKit.Cli;

/// <summary>
/// Training progress in the terminal: a progress bar when stderr is a terminal, otherwise one plain line
/// every few seconds (CI logs, pipes) so output stays readable.
/// </summary>
sealed class TerminalProgress(string title) : IProgress<TrainProgress>, IDisposable
{
    ProgressBar? bar;
    DateTime lastLine = DateTime.MinValue;

    public void Report(TrainProgress p)
    {
        string message = $"{title} epoch {p.Epoch + 1}/{p.Epochs} loss {p.Loss:F4} lr {p.LearningRate:E2} {p.ImagesPerSecond:F0} img/s eta {p.Remaining:hh\\:mm\\:ss}";
        if (!Console.IsErrorRedirected && !Console.IsOutputRedirected)
        {
            bar ??= new ProgressBar((int)p.TotalSteps, message, new ProgressBarOptions { ProgressCharacter = '─', DisplayTimeInRealTime = false, CollapseWhenFinished = true });
            bar.Tick((int)p.Step, message);
            return;
        }
        if (DateTime.UtcNow - lastLine > TimeSpan.FromSeconds(5) || p.Step == p.TotalSteps)
        {
            lastLine = DateTime.UtcNow;
            Console.Error.WriteLine($"[{p.Step}/{p.TotalSteps}] {message}");
        }
    }

    public void Dispose() => bar?.Dispose();
}
