using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;

namespace ResearchKit.Notebooks;

/// <summary>
/// The wire between a <see cref="WorkerSession"/> and its worker process: one JSON object per line over a
/// Unix domain socket. The worker's own stdout and stderr stay free for what native code prints, which the
/// supervisor reads to explain a crash.
/// Supervisor → worker: {op: execute, source, index, count, cells} · {op: cancel, ename, evalue} · {op: complete|inspect, id,
/// code, cursor} · {op: input_reply, value}.
/// Worker → supervisor: {ev: ready} · {ev: started} · {ev: output, output, display_id} · {ev: update, display_id, data}
/// · {ev: stream, name, text} · {ev: progress, text} · {ev: input, prompt, password} · {ev: reply, id, result}
/// · {ev: done, succeeded, ename, evalue, seconds} · {ev: exit}.
/// </summary>
static class WorkerWire
{
    public static StreamReader Reader(Socket socket) => new(new NetworkStream(socket, ownsSocket: false), new UTF8Encoding(false));
    public static StreamWriter Writer(Socket socket) => new(new NetworkStream(socket, ownsSocket: false), new UTF8Encoding(false)) { AutoFlush = true, NewLine = "\n" };
    public static string? Text(JsonObject message, string key) => message[key]?.GetValue<string>();
}

/// <summary>
/// The worker process (`researchkit notebook worker`): one <see cref="NotebookSession"/> driven over the socket.
/// Stream writes are batched (every 50 ms or 64 K characters) so a cell printing megabytes costs linear time.
/// Ctrl+C in the terminal reaches the whole process group; the worker ignores it and lets the supervisor decide.
/// </summary>
public static class WorkerHost
{
    public static int Run(string socketPath, string workingDirectory)
    {
        using var ignoreInterrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => c.Cancel = true);
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Connect(new UnixDomainSocketEndPoint(socketPath));
        using var reader = WorkerWire.Reader(socket);
        var outbox = new Outbox(WorkerWire.Writer(socket));
        // Environment.Exit in a cell: tell the supervisor it was asked for, not a crash.
        AppDomain.CurrentDomain.ProcessExit += (_, _) => outbox.Send(new JsonObject { ["ev"] = "exit", ["code"] = Environment.ExitCode });

        using var session = new NotebookSession(workingDirectory) { ReleaseAfterEachCell = false };   // after `done`, below
        session.Output += e => outbox.Send(e switch
        {
            OutputAdded a => new JsonObject { ["ev"] = "output", ["output"] = a.Output.DeepClone(), ["display_id"] = a.DisplayId },
            DisplayUpdated u => new JsonObject { ["ev"] = "update", ["display_id"] = u.DisplayId, ["data"] = u.Data.DeepClone() },
            StreamWritten s => new JsonObject { ["ev"] = "stream", ["name"] = s.Name, ["text"] = s.Text },
            ProgressChanged p => new JsonObject { ["ev"] = "progress", ["text"] = p.Text },
            CellStarted => new JsonObject { ["ev"] = "started" },
            _ => throw new InvalidOperationException($"unknown output event {e}"),
        });
        // Console.ReadLine in a cell asks the supervisor (a kernel forwards it to the front end as input_request).
        var input = new InputReader(outbox);
        Console.SetIn(input);
        session.WarmUp();
        outbox.Send(new JsonObject { ["ev"] = "ready" });

        CancellationTokenSource? running = null;
        Thread? cellThread = null;
        while (reader.ReadLine() is { } line)
        {
            var message = (JsonObject)JsonNode.Parse(line)!;
            switch (WorkerWire.Text(message, "op"))
            {
                case "execute":
                    cellThread?.Join();
                    running = new CancellationTokenSource();
                    var token = running.Token;
                    var cell = new CellLabel(message["index"]!.GetValue<int>(), message["count"]!.GetValue<int>(), message["cells"]?.GetValue<int>() ?? 0)
                        { Language = WorkerWire.Text(message, "language") ?? "csharp" };
                    var source = WorkerWire.Text(message, "source")!;
                    // Cells run on their own thread (8 MB stack, like a main thread) so this loop can still receive a cancel.
                    cellThread = new Thread(() =>
                    {
                        // Whatever happens, the supervisor hears `done`: a lost reply would leave it waiting on a live worker.
                        JsonObject done;
                        try
                        {
                            var result = session.Execute(source, cell, cancel: token);
                            done = new JsonObject { ["succeeded"] = result.Succeeded, ["ename"] = result.ErrorName, ["evalue"] = result.ErrorValue, ["seconds"] = result.Elapsed.TotalSeconds };
                        }
                        catch (Exception e)
                        {
                            done = new JsonObject { ["succeeded"] = false, ["ename"] = e.GetType().Name, ["evalue"] = $"the notebook engine failed: {e.Message}", ["seconds"] = 0.0 };
                        }
                        done["ev"] = "done";
                        outbox.Send(done);
                        session.ReleaseUnreachable();   // the next cell joins this thread, so it starts after this
                    }, 8 << 20) { IsBackground = true, Name = "cell" };
                    cellThread.Start();
                    break;
                case "complete" or "inspect":
                    var code = WorkerWire.Text(message, "code") ?? "";
                    int cursor = message["cursor"]?.GetValue<int>() ?? code.Length;
                    JsonObject result;
                    try { result = WorkerWire.Text(message, "op") == "complete" ? session.Complete(code, cursor) : session.Inspect(code, cursor); }
                    catch (Exception e) { result = new JsonObject { ["status"] = "error", ["ename"] = e.GetType().Name, ["evalue"] = e.Message, ["traceback"] = new JsonArray() }; }
                    outbox.Send(new JsonObject { ["ev"] = "reply", ["id"] = message["id"]?.DeepClone(), ["result"] = result });
                    break;
                case "input_reply":
                    input.Reply(message["value"]?.GetValue<string>());
                    break;
                case "cancel":
                    session.CancelReason = (WorkerWire.Text(message, "ename") ?? "Interrupted", WorkerWire.Text(message, "evalue") ?? "the cell was interrupted");
                    running?.Cancel();
                    break;
            }
        }
        return 0;   // the supervisor closed the socket: it is done with us (or gone)
    }

    /// <summary>stdin for cells: each line read is asked of the supervisor; null (end of input) when it has no front end to ask.</summary>
    sealed class InputReader(Outbox outbox) : TextReader
    {
        readonly BlockingCollection<string?> replies = [];

        public void Reply(string? value) => replies.Add(value);

        public override string? ReadLine()
        {
            Console.Out.Flush();
            outbox.Send(new JsonObject { ["ev"] = "input", ["prompt"] = "", ["password"] = false });
            return replies.Take();
        }

        public override int Read() => -1;
        public override int Peek() => -1;
    }

    /// <summary>Serialises messages onto the socket; stream text is held briefly and merged, and always sent before any other message.</summary>
    sealed class Outbox : IDisposable
    {
        readonly StreamWriter writer;
        readonly object gate = new();
        readonly StringBuilder pending = new();
        readonly Timer timer;
        string? pendingName;

        public Outbox(StreamWriter writer)
        {
            this.writer = writer;
            timer = new Timer(_ => { lock (gate) FlushStream(); }, null, 50, 50);
        }

        public void Send(JsonObject message)
        {
            lock (gate)
            {
                if (WorkerWire.Text(message, "ev") == "stream")
                {
                    var name = WorkerWire.Text(message, "name");
                    if (pendingName != name) FlushStream();
                    pendingName = name;
                    pending.Append(WorkerWire.Text(message, "text"));
                    if (pending.Length >= 64 * 1024) FlushStream();
                    return;
                }
                FlushStream();
                Write(message);
            }
        }

        void FlushStream()
        {
            if (pending.Length == 0) return;
            Write(new JsonObject { ["ev"] = "stream", ["name"] = pendingName, ["text"] = pending.ToString() });
            pending.Clear();
        }

        void Write(JsonObject message)
        {
            try { writer.WriteLine(message.ToJsonString()); }
            catch (IOException) { }   // the supervisor is gone; the read loop ends the process
            catch (ObjectDisposedException) { }
        }

        public void Dispose() => timer.Dispose();
    }
}
