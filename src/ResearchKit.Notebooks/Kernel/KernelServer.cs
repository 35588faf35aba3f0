using System.Text.Json.Nodes;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using NetMQ;
using NetMQ.Sockets;

namespace ResearchKit.Notebooks.Kernel;

/// <summary>
/// A Jupyter kernel for C# (messaging protocol 5.3 over ZeroMQ): shell and control are served on their own threads so an
/// interrupt reaches a running cell; every message's HMAC signature is checked and a replayed message is dropped; cells
/// run in a supervised <see cref="WorkerSession"/>, the headless runner's engine, so a native abort restarts the session
/// instead of killing the kernel. Every request publishes status busy/idle on iopub (VS Code waits for it).
/// </summary>
public sealed class KernelServer : IDisposable
{
    readonly ConnectionInfo connection;
    readonly MessageSigner signer;
    readonly string session = Guid.NewGuid().ToString();
    readonly RouterSocket shell = new(), control = new(), stdin = new();
    readonly PublisherSocket iopub = new();
    readonly ResponseSocket heartbeat = new();
    readonly object iopubGate = new();
    readonly HashSet<string> seen = [];
    readonly Queue<string> seenOrder = new();
    readonly Task<WorkerSession> worker;
    readonly TaskCompletionSource workerWanted = new(TaskCreationOptions.RunContinuationsAsynchronously);
    readonly TextWriter log = Console.Error;
    volatile CancellationTokenSource? running;
    int executionCount;
    volatile bool stopping;

    readonly string workingDirectory;
    readonly string language;   // csharp or fsharp: the kernelspec's; a cell's magics may still switch

    public KernelServer(ConnectionInfo connection, string workingDirectory, string language = "csharp")
    {
        this.connection = connection;
        this.language = PolyglotCell.Language(language) is "csharp" or "fsharp" ? PolyglotCell.Language(language)!
            : throw new ResearchKitException($"--language '{language}': expected csharp or fsharp");
        this.workingDirectory = workingDirectory;
        signer = new MessageSigner(connection.Key);
        // The worker (process start, Roslyn and TorchSharp loading) warms up while the front end shows the kernel as ready.
        // It starts once the first kernel_info is answered (or a request needs it, or after half a second): started at
        // once, it took one of the two cores from the kernel's own start-up, 0.15-0.25 s of the ready time.
        worker = Task.Run(async () =>
        {
            await Task.WhenAny(workerWanted.Task, Task.Delay(TimeSpan.FromSeconds(0.5)));
            return new WorkerSession(workingDirectory);
        });
    }

    public static int Run(string connectionFile, string language = "csharp")
    {
        using var kernel = new KernelServer(ConnectionInfo.Load(connectionFile), Directory.GetCurrentDirectory(), language);
        return kernel.Serve();
    }

    public int Serve()
    {
        shell.Bind(connection.Address(connection.ShellPort));
        control.Bind(connection.Address(connection.ControlPort));
        stdin.Bind(connection.Address(connection.StdinPort));
        iopub.Bind(connection.Address(connection.IopubPort));
        heartbeat.Bind(connection.Address(connection.HeartbeatPort));
        Log($"listening on {connection.Ip} (shell {connection.ShellPort}, control {connection.ControlPort}, iopub {connection.IopubPort})");
        var beat = new Thread(() =>
        {
            while (!stopping)
                if (heartbeat.TryReceiveFrameBytes(TimeSpan.FromMilliseconds(200), out var ping)) heartbeat.SendFrame(ping);
        }) { IsBackground = true, Name = "heartbeat" };
        var controlThread = new Thread(() => Loop(control, isControl: true)) { IsBackground = true, Name = "control" };
        beat.Start();
        controlThread.Start();
        WatchParent();
        Publish("status", new JsonObject { ["execution_state"] = "starting" }, null);
        Loop(shell);
        controlThread.Join(1000);
        return 0;
    }

    /// <summary>
    /// Jupyter's clients set JPY_PARENT_PID; when that process dies without shutting us down (a crashed client), the
    /// kernel ends too instead of lingering with its worker, as ipykernel does.
    /// </summary>
    void WatchParent()
    {
        if (!int.TryParse(Environment.GetEnvironmentVariable("JPY_PARENT_PID"), out var pid) || pid <= 1) return;
        new Thread(() =>
        {
            while (!stopping)
            {
                Thread.Sleep(1000);
                try { using var parent = System.Diagnostics.Process.GetProcessById(pid); if (!parent.HasExited) continue; }
                catch (ArgumentException) { }
                Log($"the front end (pid {pid}) is gone; shutting down");
                CancelRunning();
                stopping = true;
            }
        }) { IsBackground = true, Name = "parent watch" }.Start();
    }

    void Log(string message) => log.WriteLine($"[researchkit kernel {DateTime.Now:HH:mm:ss}] {message}");

    /// <summary>
    /// Serves one channel. Control answers only what must get through while a cell runs (interrupt, shutdown, kernel_info):
    /// anything else there would race the shell thread for the worker.
    /// </summary>
    void Loop(RouterSocket socket, bool isControl = false)
    {
        var message = new NetMQMessage();
        while (!stopping)
        {
            if (!socket.TryReceiveMultipartMessage(TimeSpan.FromMilliseconds(200), ref message)) continue;
            if (Accept(message) is not { } request) continue;
            if (isControl && request.Type is not ("interrupt_request" or "shutdown_request" or "kernel_info_request"))
            {
                Log($"ignored a {request.Type} on the control channel");
                continue;
            }
            Handle(socket, request);
        }
    }

    /// <summary>Interrupts the running cell, if any (its token source may be disposed as the cell ends).</summary>
    void CancelRunning()
    {
        try { running?.Cancel(); }
        catch (ObjectDisposedException) { }
    }

    /// <summary>A verified message seen for the first time, or null (logged, never executed).</summary>
    JupyterMessage? Accept(NetMQMessage raw)
    {
        var message = JupyterMessage.Parse(raw, signer, out var problem);
        if (message is null)
        {
            Log($"dropped a message: {problem}");
            return null;
        }
        lock (seen)
        {
            // Message ids are not unique across a client's sessions (jupyter_client numbers them per Session object);
            // signatures are, because the signed header carries the id, the session and the time.
            if (!seen.Add(message.ReplayKey))
            {
                Log($"dropped a replayed message {message.Id} ({message.Type})");
                return null;
            }
            seenOrder.Enqueue(message.ReplayKey);
            if (seenOrder.Count > 100_000) seen.Remove(seenOrder.Dequeue());
        }
        return message;
    }

    void Handle(RouterSocket socket, JupyterMessage request)
    {
        Publish("status", new JsonObject { ["execution_state"] = "busy" }, request);
        try
        {
            switch (request.Type)
            {
                case "kernel_info_request":
                    Reply(socket, request, "kernel_info_reply", KernelInfo(language));
                    workerWanted.TrySetResult();
                    break;
                case "execute_request": Execute(socket, request); break;
                case "is_complete_request": Reply(socket, request, "is_complete_reply", IsComplete(request.Content["code"]?.GetValue<string>() ?? "")); break;
                // Completion and inspection know C#; in an F# kernel they answer nothing rather than C# names.
                case "complete_request": Reply(socket, request, "complete_reply", (CSharp ? Worker()?.Complete(Code(request), Cursor(request)) : null) ?? EmptyCompletion(Cursor(request))); break;
                case "inspect_request": Reply(socket, request, "inspect_reply", (CSharp ? Worker()?.Inspect(Code(request), Cursor(request)) : null) ?? new JsonObject { ["status"] = "ok", ["found"] = false, ["data"] = new JsonObject(), ["metadata"] = new JsonObject() }); break;
                case "history_request": Reply(socket, request, "history_reply", new JsonObject { ["status"] = "ok", ["history"] = new JsonArray() }); break;
                case "comm_info_request": Reply(socket, request, "comm_info_reply", new JsonObject { ["status"] = "ok", ["comms"] = new JsonObject() }); break;
                case "comm_open":
                    // No comm targets (widgets) yet: close it at once, as kernels without the target do.
                    Publish("comm_close", new JsonObject { ["comm_id"] = request.Content["comm_id"]?.DeepClone(), ["data"] = new JsonObject() }, request);
                    break;
                case "comm_msg" or "comm_close": break;
                case "interrupt_request":
                    CancelRunning();
                    Reply(socket, request, "interrupt_reply", new JsonObject { ["status"] = "ok" });
                    break;
                case "shutdown_request":
                    bool restart = request.Content["restart"]?.GetValue<bool>() ?? false;
                    CancelRunning();
                    Reply(socket, request, "shutdown_reply", new JsonObject { ["status"] = "ok", ["restart"] = restart });
                    stopping = true;   // a restart is a new kernel process, started by the front end
                    break;
                default: Log($"ignored a {request.Type} message"); break;
            }
        }
        catch (Exception e)
        {
            // A malformed request (a field of the wrong type) or a failure answering it must not end the kernel.
            Log($"{request.Type} failed: {e.GetType().Name}: {e.Message}");
            if (request.Type.EndsWith("_request", StringComparison.Ordinal))
                Reply(socket, request, request.Type.Replace("_request", "_reply"), new JsonObject
                {
                    ["status"] = "error", ["ename"] = e.GetType().Name, ["evalue"] = e.Message, ["traceback"] = new JsonArray($"{e.GetType().Name}: {e.Message}"),
                });
        }
        finally { Publish("status", new JsonObject { ["execution_state"] = "idle" }, request); }
    }

    static string Code(JupyterMessage m) => m.Content["code"]?.GetValue<string>() ?? "";
    static int Cursor(JupyterMessage m) => m.Content["cursor_pos"]?.GetValue<int>() ?? Code(m).Length;
    static JsonObject EmptyCompletion(int cursor) => new() { ["status"] = "ok", ["matches"] = new JsonArray(), ["cursor_start"] = cursor, ["cursor_end"] = cursor, ["metadata"] = new JsonObject() };

    WorkerSession? Worker()
    {
        workerWanted.TrySetResult();
        try { return worker.Result; }
        catch (AggregateException e)
        {
            Log($"the notebook worker failed to start: {e.InnerException?.Message}");
            return null;
        }
    }

    bool CSharp => language == "csharp";

    static JsonObject KernelInfo(string language) => new()
    {
        ["status"] = "ok", ["protocol_version"] = JupyterMessage.ProtocolVersion,
        ["implementation"] = "researchkit", ["implementation_version"] = typeof(KernelServer).Assembly.GetName().Version?.ToString() ?? "0",
        // The names .NET Interactive's kernels report, so front ends highlight and save (.cs, .fsx) as they do there.
        ["language_info"] = language == "fsharp"
            ? new JsonObject
            {
                ["name"] = "F#", ["version"] = "10.0", ["mimetype"] = "text/x-fsharp", ["file_extension"] = ".fs",
                ["pygments_lexer"] = "fsharp", ["codemirror_mode"] = "fsharp",
            }
            : new JsonObject
            {
                ["name"] = "C#", ["version"] = "14.0", ["mimetype"] = "text/x-csharp", ["file_extension"] = ".cs",
                ["pygments_lexer"] = "csharp", ["codemirror_mode"] = "text/x-csharp",
            },
        ["banner"] = $"ResearchKit {(language == "fsharp" ? "F#" : "C#")} kernel (#!csharp and #!fsharp cells share values with #!share): TorchSharp, "
            + "Plotly.NET and Deedle loaded; interrupt stops loops; a native crash restarts the session",
        ["help_links"] = new JsonArray(),
    };

    JsonObject IsComplete(string code)
    {
        if (!CSharp) return new JsonObject { ["status"] = "unknown" };
        return SyntaxFactory.IsCompleteSubmission(NotebookSession.ParseCell(code))
            ? new JsonObject { ["status"] = "complete" }
            : new JsonObject { ["status"] = "incomplete", ["indent"] = "    " };
    }

    /// <summary>
    /// Which cell runs. Front ends send the cell's id in the request's metadata (JupyterLab, Notebook 7, VS Code); the
    /// notebook Jupyter opened (JPY_SESSION_NAME) or one in the kernel's folder holding that id gives its position, so
    /// errors name `cell 5` as the runner does. A cell no saved notebook has yet is named by its execution count alone.
    /// </summary>
    CellLabel Label(JupyterMessage request)
    {
        var id = request.Metadata["cellId"] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        if (id is not null && CellPositions.Find(workingDirectory, id) is var (index, count))
            return new CellLabel(index, executionCount, count) { Language = language };
        return new CellLabel(0, executionCount) { Language = language };
    }

    void Execute(RouterSocket socket, JupyterMessage request)
    {
        var code = Code(request);
        bool silent = request.Content["silent"]?.GetValue<bool>() ?? false;
        bool storeHistory = !silent && (request.Content["store_history"]?.GetValue<bool>() ?? true);
        bool allowStdin = request.Content["allow_stdin"]?.GetValue<bool>() ?? true;
        bool stopOnError = request.Content["stop_on_error"]?.GetValue<bool>() ?? true;
        if (storeHistory) executionCount++;
        if (!silent) Publish("execute_input", new JsonObject { ["code"] = code, ["execution_count"] = executionCount }, request);
        var session = Worker();
        if (session is null)
        {
            const string reason = "the C# session could not start; see the kernel log";
            Publish("error", new JsonObject { ["ename"] = "WorkerError", ["evalue"] = reason, ["traceback"] = new JsonArray($"WorkerError: {reason}") }, request);
            ReplyError(socket, request, "WorkerError", reason);
            return;
        }
        using var cancel = new CancellationTokenSource();
        running = cancel;
        void Forward(OutputEvent e)
        {
            if (silent) return;
            switch (e)
            {
                case OutputAdded { Output: var o, DisplayId: var id }:
                    var type = o["output_type"]!.GetValue<string>();
                    var content = (JsonObject)o.DeepClone();
                    content.Remove("output_type");
                    if (content["data"] is JsonObject bundle) content["data"] = Live(bundle);
                    if (type == "display_data") content["transient"] = new JsonObject { ["display_id"] = id };
                    Publish(type, content, request);
                    break;
                case DisplayUpdated u:
                    Publish("update_display_data", new JsonObject { ["data"] = Live(u.Data), ["metadata"] = new JsonObject(), ["transient"] = new JsonObject { ["display_id"] = u.DisplayId } }, request);
                    break;
                case StreamWritten s:
                    Publish("stream", new JsonObject { ["name"] = s.Name, ["text"] = s.Text }, request);
                    break;
            }
        }
        session.Output += Forward;
        session.InputHandler = allowStdin ? (prompt, password) => ReadInput(request, prompt, password, cancel.Token) : null;
        CellResult result;
        try { result = session.Execute(code, Label(request), cancel: cancel.Token); }
        finally
        {
            session.Output -= Forward;
            session.InputHandler = null;
            running = null;
        }
        if (result.SessionLost)
        {
            session.Restart();
            Publish("stream", new JsonObject { ["name"] = "stderr", ["text"] = "[researchkit] the C# session was restarted: variables from earlier cells are gone\n" }, request);
        }
        if (result.Succeeded)
        {
            Reply(socket, request, "execute_reply", new JsonObject
            {
                ["status"] = "ok", ["execution_count"] = executionCount, ["user_expressions"] = new JsonObject(), ["payload"] = new JsonArray(),
            });
            return;
        }
        var error = result.Outputs.OfType<JsonObject>().LastOrDefault(o => o["output_type"]?.GetValue<string>() == "error");
        // What was queued behind the failed cell is taken before its reply goes out: a request sent after the front end
        // saw the reply (Shift+Enter right after ■) is not aborted (ipykernel: stop_on_error_timeout 0).
        var queued = stopOnError ? TakeQueued(socket) : [];
        ReplyError(socket, request, result.ErrorName ?? "Error", result.ErrorValue ?? "", error?["traceback"]?.DeepClone() as JsonArray);
        foreach (var message in queued)
        {
            if (message.Type != "execute_request")
            {
                Handle(socket, message);
                continue;
            }
            Publish("status", new JsonObject { ["execution_state"] = "busy" }, message);
            Reply(socket, message, "execute_reply", new JsonObject { ["status"] = "aborted", ["execution_count"] = executionCount });
            Publish("status", new JsonObject { ["execution_state"] = "idle" }, message);
        }
    }

    /// <summary>
    /// A mime bundle as messages carry it: text as one string. Saved notebooks store text as a list of lines, and
    /// Jupyter Notebook drops a text/html or text/plain that arrives as a list.
    /// </summary>
    static JsonObject Live(JsonObject bundle)
    {
        var live = new JsonObject();
        foreach (var (mime, value) in bundle)
            live[mime] = value is JsonArray lines && !mime.EndsWith("json", StringComparison.Ordinal) ? NotebookDocument.Text(lines) : value?.DeepClone();
        return live;
    }

    void ReplyError(RouterSocket socket, JupyterMessage request, string name, string value, JsonArray? traceback = null) =>
        Reply(socket, request, "execute_reply", new JsonObject
        {
            ["status"] = "error", ["execution_count"] = executionCount, ["ename"] = name, ["evalue"] = value,
            ["traceback"] = traceback ?? new JsonArray($"{name}: {value}"),
        });

    /// <summary>
    /// The shell requests that arrived while a cell ran and wait in the socket's queue, without waiting for more: after a
    /// failed cell the execute requests among them are answered `aborted` (stop_on_error), as ipykernel does.
    /// </summary>
    List<JupyterMessage> TakeQueued(RouterSocket socket)
    {
        var queued = new List<JupyterMessage>();
        var raw = new NetMQMessage();
        while (socket.TryReceiveMultipartMessage(TimeSpan.Zero, ref raw))
            if (Accept(raw) is { } message) queued.Add(message);
        return queued;
    }

    /// <summary>Console.ReadLine in a cell: an input_request on stdin to the front end that sent the cell, answered by input_reply.</summary>
    string? ReadInput(JupyterMessage parent, string prompt, bool password, CancellationToken cancel)
    {
        Send(stdin, JupyterMessage.Create("input_request", new JsonObject { ["prompt"] = prompt, ["password"] = password }, parent, session));
        var raw = new NetMQMessage();
        while (!cancel.IsCancellationRequested && !stopping)
            if (stdin.TryReceiveMultipartMessage(TimeSpan.FromMilliseconds(200), ref raw) && Accept(raw) is { Type: "input_reply" } reply)
                return reply.Content["value"]?.GetValue<string>() ?? "";
        return null;
    }

    void Reply(RouterSocket socket, JupyterMessage request, string type, JsonObject content) =>
        Send(socket, JupyterMessage.Create(type, content, request, session));

    void Send(RouterSocket socket, JupyterMessage message)
    {
        var wire = message.ToNetMQ(signer);
        lock (socket) socket.SendMultipartMessage(wire);
    }

    void Publish(string type, JsonObject content, JupyterMessage? parent)
    {
        var message = JupyterMessage.Create(type, content, parent, session, identities: [System.Text.Encoding.UTF8.GetBytes($"kernel.{session}.{type}")]);
        var wire = message.ToNetMQ(signer);
        lock (iopubGate) iopub.SendMultipartMessage(wire);
    }

    public void Dispose()
    {
        stopping = true;
        if (worker.IsCompletedSuccessfully) worker.Result.Dispose();
        foreach (var socket in new NetMQSocket[] { shell, control, stdin, iopub, heartbeat }) socket.Dispose();
        NetMQConfig.Cleanup(block: false);
    }
}

/// <summary>Cell positions by cell id in the notebooks of a folder, re-read when a notebook is saved.</summary>
static class CellPositions
{
    static readonly Dictionary<string, (DateTime Written, Dictionary<string, (int Index, int Count)> Cells)> read = [];

    public static (int Index, int Count)? Find(string folder, string id)
    {
        var named = Environment.GetEnvironmentVariable("JPY_SESSION_NAME") is { Length: > 0 } session
            ? new[] { Path.GetFullPath(session, folder) } : [];
        var candidates = named.Concat(Directory.Exists(folder) ? Directory.EnumerateFiles(folder, "*.ipynb") : []).Distinct();
        lock (read)
            foreach (var path in candidates.Where(File.Exists))
                if (Cells(path).TryGetValue(id, out var position)) return position;
        return null;
    }

    static Dictionary<string, (int, int)> Cells(string path)
    {
        var written = File.GetLastWriteTimeUtc(path);
        if (read.TryGetValue(path, out var known) && known.Written == written) return known.Cells;
        var cells = new Dictionary<string, (int, int)>(StringComparer.Ordinal);
        try
        {
            var array = JsonNode.Parse(File.ReadAllText(path))?["cells"]?.AsArray() ?? [];
            for (int i = 0; i < array.Count; i++)
                if (array[i]?["id"] is JsonValue id && id.TryGetValue<string>(out var text)) cells.TryAdd(text, (i + 1, array.Count));
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or IOException or InvalidOperationException) { }
        read[path] = (written, cells);
        return cells;
    }
}
