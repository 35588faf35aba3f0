using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace ResearchKit.Notebooks;

/// <summary>How to start a notebook worker process: the program and its arguments (the socket and folder are appended).</summary>
public sealed record WorkerCommand(string FileName, IReadOnlyList<string> Arguments)
{
    /// <summary>`dotnet ResearchKit.Cli.dll notebook worker`, the CLI beside this assembly (as in the CLI's and the tests' output folders).</summary>
    public static WorkerCommand Default()
    {
        var cli = Path.Combine(AppContext.BaseDirectory, "ResearchKit.Cli.dll");
        if (!File.Exists(cli)) throw new ResearchKitException($"the notebook worker needs {cli}; build src/ResearchKit.Cli");
        var host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } path && File.Exists(path) ? path
            : Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        return new WorkerCommand(host, [cli, "notebook", "worker"]);
    }
}

/// <summary>
/// A notebook session in a supervised worker process. TorchSharp lets some libtorch errors escape as C++ exceptions
/// that abort the process (see environment.md), and a cell may overflow the stack, call Environment.Exit or be killed
/// for memory; any of these ends only the worker. The cell then fails with what native code printed (e.g. `mat1 and
/// mat2 shapes cannot be multiplied (2x3 and 4x5)`) and <see cref="CellResult.SessionLost"/>; <see cref="Restart"/>
/// starts a fresh session. Time limits and interrupts are enforced here: a cell that ignores cancellation for
/// <see cref="CancelGrace"/> has its worker killed.
/// </summary>
public sealed class WorkerSession : ICellSession
{
    readonly string directory;
    readonly WorkerCommand command;
    readonly object logGate = new();
    readonly List<string> nativeLines = [];   // what the worker's own stdout/stderr printed in the current cell
    Process? process;
    Socket? socket;
    StreamWriter? writer;
    BlockingCollection<JsonObject?> inbox = [];
    bool exitRequested;

    public event Action<OutputEvent>? Output;
    public TimeSpan CancelGrace { get; init; } = TimeSpan.FromSeconds(5);
    public bool IsAlive => process is { HasExited: false };

    public WorkerSession(string workingDirectory, WorkerCommand? command = null)
    {
        directory = Path.GetFullPath(workingDirectory);
        this.command = command ?? WorkerCommand.Default();
        Start();
    }

    void Start()
    {
        var socketPath = Path.Combine(Path.GetTempPath(), $"researchkit-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        listener.Listen(1);
        try
        {
            var start = new ProcessStartInfo(command.FileName) { WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in command.Arguments.Concat(["--socket", socketPath, "--directory", directory])) start.ArgumentList.Add(a);
            process = Process.Start(start) ?? throw new ResearchKitException($"could not start the notebook worker ({command.FileName})");
            process.OutputDataReceived += (_, e) => Log(e.Data);
            process.ErrorDataReceived += (_, e) => Log(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var accept = listener.AcceptAsync();
            while (!accept.Wait(100))
                if (process.HasExited) throw StartFailed();
            socket = accept.Result;
        }
        finally { File.Delete(socketPath); }
        writer = WorkerWire.Writer(socket);
        inbox = [];
        exitRequested = false;
        var reader = WorkerWire.Reader(socket);
        var queue = inbox;
        new Thread(() =>
        {
            try
            {
                while (reader.ReadLine() is { } line) queue.Add((JsonObject)JsonNode.Parse(line)!);
            }
            catch (Exception) { }   // a socket error, or half a line from a worker killed mid-write: either way it is gone
            queue.Add(null);   // closed: the worker is gone
        }) { IsBackground = true, Name = "worker reader" }.Start();
        // Warm-up (Roslyn, TorchSharp) takes seconds; a worker silent for two minutes is hung.
        if (!inbox.TryTake(out var ready, TimeSpan.FromMinutes(2)) || ready is null || WorkerWire.Text(ready, "ev") != "ready")
        {
            Kill();
            throw StartFailed();
        }
        lock (logGate) nativeLines.Clear();
    }

    ResearchKitException StartFailed()
    {
        if (process?.WaitForExit(5000) == true) process.WaitForExit();
        string[] lines;
        lock (logGate) lines = nativeLines.ToArray();
        var reason = lines.FirstOrDefault(l => l.StartsWith("Unhandled exception. ", StringComparison.Ordinal)) ?? lines.FirstOrDefault() ?? "no output";
        return new ResearchKitException($"the notebook worker ({command.FileName} {string.Join(" ", command.Arguments)}) did not start: {reason}");
    }

    void Log(string? line)
    {
        if (line is null) return;
        lock (logGate)
        {
            nativeLines.Add(line);
            if (nativeLines.Count > 2000) nativeLines.RemoveRange(0, 1000);
        }
    }

    string[] NativeTail(int count)
    {
        lock (logGate) return nativeLines.Where(l => l.Length > 0 && !ErrorText.IsNativeContext(l)).TakeLast(count).ToArray();
    }

    void Send(JsonObject message)
    {
        try { writer?.WriteLine(message.ToJsonString()); }
        catch (IOException) { }   // the worker died; the reader reports it
    }

    /// <summary>Answers Console.ReadLine in a cell (prompt, password → the line, or null for end of input); unset: end of input.</summary>
    public Func<string, bool, string?>? InputHandler { get; set; }

    /// <summary>Completions for code typed as the next cell (Jupyter's complete_reply content); null when the worker is gone.</summary>
    public JsonObject? Complete(string code, int cursor) => Request("complete", code, cursor);

    /// <summary>The symbol at the cursor, its signature and documentation (inspect_reply content); null when the worker is gone.</summary>
    public JsonObject? Inspect(string code, int cursor) => Request("inspect", code, cursor);

    JsonObject? Request(string op, string code, int cursor)
    {
        if (!IsAlive) return null;
        var id = Guid.NewGuid().ToString("N");
        Send(new JsonObject { ["op"] = op, ["id"] = id, ["code"] = code, ["cursor"] = cursor });
        while (inbox.TryTake(out var message, TimeSpan.FromSeconds(30)))
        {
            if (message is null)
            {
                inbox.Add(null);   // the next Execute reports the lost session
                return null;
            }
            if (WorkerWire.Text(message, "ev") == "reply" && WorkerWire.Text(message, "id") == id) return message["result"] as JsonObject;
        }
        return null;
    }

    /// <summary>Ends this worker (if alive) and starts a fresh session: every earlier cell's state is gone.</summary>
    public void Restart()
    {
        Stop();
        Start();
    }

    public CellResult Execute(string source, CellLabel cell, OutputList? outputs = null, TimeSpan? timeout = null, CancellationToken cancel = default)
    {
        outputs ??= new OutputList();
        // Ended between cells (a thread the last cell started threw, say): this cell reports the lost session.
        if (!IsAlive) return Lost(outputs, Stopwatch.StartNew(), null, null);
        lock (logGate) nativeLines.Clear();
        var clock = Stopwatch.StartNew();
        Send(new JsonObject { ["op"] = "execute", ["source"] = source, ["index"] = cell.Index, ["count"] = cell.ExecutionCount, ["cells"] = cell.CellCount, ["language"] = cell.Language });
        // Deadlines on the monotonic clock: a wall-clock step must not fire (or skip) a time limit.
        TimeSpan? deadline = null, killAt = null;
        (string Name, string Value)? stop = null;
        void RequestStop((string Name, string Value) why)
        {
            stop = why;
            Send(new JsonObject { ["op"] = "cancel", ["ename"] = why.Name, ["evalue"] = why.Value });
            killAt = clock.Elapsed + CancelGrace;
            deadline = null;
        }
        while (true)
        {
            var next = killAt ?? deadline;   // a kill time replaces the deadline once a stop is requested
            var wait = next is { } n ? TimeSpan.FromTicks(Math.Max(0, (n - clock.Elapsed).Ticks)) : Timeout.InfiniteTimeSpan;
            JsonObject? message;
            try
            {
                if (!inbox.TryTake(out message, (int)Math.Min(int.MaxValue, wait == Timeout.InfiniteTimeSpan ? -1 : Math.Ceiling(wait.TotalMilliseconds)), stop is null ? cancel : CancellationToken.None))
                {
                    if (stop is not null)
                    {
                        Kill();
                        return Lost(outputs, clock, stop!.Value.Name, $"{stop.Value.Value}; it did not stop within {CancelGrace.TotalSeconds:0} s of being cancelled, so its worker was ended");
                    }
                    RequestStop(("TimeoutError", $"the cell ran longer than {timeout!.Value.TotalSeconds:0.#} s (--timeout)"));
                    continue;
                }
            }
            catch (OperationCanceledException)
            {
                RequestStop(("Interrupted", "the cell was interrupted"));
                continue;
            }
            if (message is null) return Lost(outputs, clock, null, null);
            switch (WorkerWire.Text(message, "ev"))
            {
                case "started":
                    if (timeout is { } t && stop is null) deadline = clock.Elapsed + t;   // compile time is not the cell's
                    Output?.Invoke(new CellStarted());
                    break;
                case "output":
                    var output = (JsonObject)message["output"]!.DeepClone();
                    var id = WorkerWire.Text(message, "display_id");
                    outputs.Add(output, id);
                    Output?.Invoke(new OutputAdded(output, id));
                    break;
                case "update":
                    var data = (JsonObject)message["data"]!.DeepClone();
                    outputs.Update(WorkerWire.Text(message, "display_id")!, data);
                    Output?.Invoke(new DisplayUpdated(WorkerWire.Text(message, "display_id")!, data));
                    break;
                case "stream":
                    var (name, text) = (WorkerWire.Text(message, "name")!, WorkerWire.Text(message, "text")!);
                    outputs.Stream(name, text);
                    Output?.Invoke(new StreamWritten(name, text));
                    break;
                case "progress":
                    Output?.Invoke(new ProgressChanged(WorkerWire.Text(message, "text")!));
                    break;
                case "exit":
                    exitRequested = true;
                    break;
                case "input":
                    var value = InputHandler?.Invoke(WorkerWire.Text(message, "prompt") ?? "", message["password"]?.GetValue<bool>() ?? false);
                    Send(new JsonObject { ["op"] = "input_reply", ["value"] = value });
                    break;
                case "done":
                    ForwardNativeText(outputs);
                    outputs.Complete();
                    return new CellResult(outputs.ToJson(), message["succeeded"]!.GetValue<bool>(), WorkerWire.Text(message, "ename"),
                        WorkerWire.Text(message, "evalue"), clock.Elapsed);
            }
        }
    }

    /// <summary>Lines native code printed while the cell ran (a libtorch warning, say) go to the cell's stderr, without C++ frames.</summary>
    void ForwardNativeText(OutputList outputs)
    {
        string[] lines;
        lock (logGate)
        {
            lines = nativeLines.Where(l => !ErrorText.IsNativeFrame(l)).ToArray();
            nativeLines.Clear();
        }
        if (lines.Length == 0) return;
        var text = string.Join("\n", lines) + "\n";
        outputs.Stream("stderr", text);
        Output?.Invoke(new StreamWritten("stderr", text));
    }

    /// <summary>The worker is gone: the cell fails with the reason and the session is marked lost.</summary>
    CellResult Lost(OutputList outputs, Stopwatch clock, string? name, string? value)
    {
        if (process!.WaitForExit(10_000)) process.WaitForExit();   // the second wait drains stdout/stderr
        if (name is null) (name, value) = Explain(process.HasExited ? process.ExitCode : -1);
        value += $" — the C# session ended (worker exit code {(process.HasExited ? process.ExitCode : -1)}): variables from earlier cells are lost";
        var traceback = new List<string> { $"{name}: {value}" };
        var tail = NativeTail(12);
        if (tail.Length > 0) traceback.AddRange(["", "last lines the worker printed:", .. tail]);
        var error = OutputList.ErrorOutput(name, value!, traceback);
        outputs.Add(error);
        outputs.Complete();
        Output?.Invoke(new OutputAdded(error, null));
        return new CellResult(outputs.ToJson(), false, name, value, clock.Elapsed, SessionLost: true);
    }

    /// <summary>Why the worker died, from its exit code and what it printed last.</summary>
    (string Name, string Value) Explain(int exitCode)
    {
        string[] lines;
        lock (logGate) lines = nativeLines.ToArray();
        var all = string.Join("\n", lines);
        var what = Regex.Match(all, @"what\(\):\s*(?<m>.*?)(?:\nException raised from|\nframe #|$)", RegexOptions.Singleline);
        if (what.Success) return ("NativeError", ErrorText.Clean(what.Groups["m"].Value));
        if (all.Contains("Stack overflow.", StringComparison.Ordinal))
        {
            var frame = lines.Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith("at ", StringComparison.Ordinal));
            return ("StackOverflow", "stack overflow (unbounded recursion?)" + (frame is null ? "" : $" in {Regex.Replace(frame[3..], @"^Submission#\d+\.", "")}"));
        }
        var unhandled = lines.FirstOrDefault(l => l.StartsWith("Unhandled exception. ", StringComparison.Ordinal));
        if (unhandled is not null) return ("UnhandledException", $"{ErrorText.Clean(unhandled["Unhandled exception. ".Length..])} (thrown outside the cell, e.g. on a background thread)");
        if (exitRequested && exitCode is >= 0 and < 128) return ("ProcessExit", $"the cell ended the process (Environment.Exit({exitCode}))");
        return exitCode switch
        {
            137 => ("Killed", "the worker was killed by SIGKILL, most often the kernel's out-of-memory killer (use smaller batches or free memory)"),
            139 => ("NativeCrash", "a segmentation fault in native code"),
            134 => ("NativeCrash", "native code aborted the process" + (lines.Length > 0 ? $": {lines[^1]}" : "")),
            _ => ("WorkerExited", $"the worker process exited unexpectedly with code {exitCode}"),
        };
    }

    void Kill()
    {
        try { process?.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
    }

    void Stop()
    {
        if (process is null) return;
        writer?.Dispose();   // closing the socket tells the worker to exit
        socket?.Dispose();
        if (!process.WaitForExit(3000)) Kill();
        process.WaitForExit();
        process.Dispose();
        process = null;
    }

    public void Dispose() => Stop();
}
