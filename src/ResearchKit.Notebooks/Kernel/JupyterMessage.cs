using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using NetMQ;

namespace ResearchKit.Notebooks.Kernel;

/// <summary>The connection file a front end writes for a kernel it starts (transport, ip, five ports, HMAC key and scheme).</summary>
public sealed record ConnectionInfo(string Transport, string Ip, int ShellPort, int ControlPort, int IopubPort, int StdinPort, int HeartbeatPort, string Key, string SignatureScheme)
{
    public static ConnectionInfo Load(string path)
    {
        if (!File.Exists(path)) throw new ResearchKitException($"{path}: connection file not found");
        JsonObject o;
        try { o = JsonNode.Parse(File.ReadAllText(path))!.AsObject(); }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { throw new ResearchKitException($"{path}: not a Jupyter connection file ({e.Message})"); }
        int Port(string name) => o[name]?.GetValue<int>() ?? throw new ResearchKitException($"{path}: connection file has no {name}");
        var scheme = o["signature_scheme"]?.GetValue<string>() ?? "hmac-sha256";
        if (scheme is not ("hmac-sha256" or ""))
            throw new ResearchKitException($"{path}: signature_scheme {scheme} is not supported; expected hmac-sha256");
        return new ConnectionInfo(o["transport"]?.GetValue<string>() ?? "tcp", o["ip"]?.GetValue<string>() ?? "127.0.0.1",
            Port("shell_port"), Port("control_port"), Port("iopub_port"), Port("stdin_port"), Port("hb_port"), o["key"]?.GetValue<string>() ?? "", scheme);
    }

    public string Address(int port) => Transport == "ipc" ? $"ipc://{Ip}-{port}" : $"{Transport}://{Ip}:{port}";
}

/// <summary>
/// One message of the Jupyter messaging protocol (5.3) on the wire: routing identities, the `&lt;IDS|MSG&gt;` delimiter,
/// the HMAC-SHA256 signature of the four JSON frames, then header, parent header, metadata, content and buffers.
/// </summary>
public sealed record JupyterMessage(IReadOnlyList<byte[]> Identities, JsonObject Header, JsonObject ParentHeader, JsonObject Metadata, JsonObject Content)
{
    /// <summary>What makes a received message unique for replay protection: its signature (as Jupyter's Session keeps a digest history), or its header's hash when unsigned.</summary>
    public string ReplayKey { get; init; } = "";

    public const string ProtocolVersion = "5.3";
    static readonly byte[] Delimiter = "<IDS|MSG>"u8.ToArray();

    public string Type => Header["msg_type"]?.GetValue<string>() ?? "";
    public string Id => Header["msg_id"]?.GetValue<string>() ?? "";
    public string Session => Header["session"]?.GetValue<string>() ?? "";

    /// <summary>A new message replying to (or published on behalf of) <paramref name="parent"/>, sharing its session.</summary>
    public static JupyterMessage Create(string type, JsonObject content, JupyterMessage? parent, string session, IReadOnlyList<byte[]>? identities = null) =>
        new(identities ?? parent?.Identities ?? [], new JsonObject
        {
            ["msg_id"] = Guid.NewGuid().ToString(), ["session"] = session, ["username"] = "researchkit",
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.ffffffZ"), ["msg_type"] = type, ["version"] = ProtocolVersion,
        }, parent?.Header.DeepClone().AsObject() ?? new JsonObject(), new JsonObject(), content);

    /// <summary>Parses a multipart message; null (with the reason) when it is malformed or its signature does not verify.</summary>
    public static JupyterMessage? Parse(NetMQMessage message, MessageSigner signer, out string? problem)
    {
        var frames = message.Select(f => f.ToByteArray()).ToList();
        int delimiter = frames.FindIndex(f => f.AsSpan().SequenceEqual(Delimiter));
        if (delimiter < 0 || frames.Count < delimiter + 6)
        {
            problem = "malformed message (no <IDS|MSG> delimiter or too few frames)";
            return null;
        }
        var parts = frames.Skip(delimiter + 2).Take(4).ToArray();
        if (!signer.Verify(frames[delimiter + 1], parts))
        {
            problem = "bad signature";
            return null;
        }
        try
        {
            JsonObject Json(byte[] b) => JsonNode.Parse(b)?.AsObject() ?? new JsonObject();
            problem = null;
            var signature = frames[delimiter + 1].Length > 0 ? frames[delimiter + 1] : SHA256.HashData(parts[0]);
            return new JupyterMessage(frames.Take(delimiter).ToList(), Json(parts[0]), Json(parts[1]), Json(parts[2]), Json(parts[3]))
                { ReplayKey = Convert.ToHexString(signature) };
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            problem = $"malformed JSON ({e.Message})";
            return null;
        }
    }

    public NetMQMessage ToNetMQ(MessageSigner signer)
    {
        var parts = new[] { Header, ParentHeader, Metadata, Content }.Select(j => Encoding.UTF8.GetBytes(j.ToJsonString())).ToArray();
        var message = new NetMQMessage();
        foreach (var id in Identities) message.Append(id);
        message.Append(Delimiter);
        message.Append(signer.Sign(parts));
        foreach (var part in parts) message.Append(part);
        return message;
    }
}

/// <summary>HMAC-SHA256 over header, parent header, metadata and content, hex-encoded; an empty key disables signing (as Jupyter allows).</summary>
public sealed class MessageSigner(string key)
{
    readonly byte[] key = Encoding.UTF8.GetBytes(key);

    public byte[] Sign(IReadOnlyList<byte[]> parts)
    {
        if (key.Length == 0) return [];
        using var hmac = new HMACSHA256(key);
        foreach (var part in parts) hmac.TransformBlock(part, 0, part.Length, null, 0);
        hmac.TransformFinalBlock([], 0, 0);
        return Encoding.ASCII.GetBytes(Convert.ToHexStringLower(hmac.Hash!));
    }

    public bool Verify(byte[] signature, IReadOnlyList<byte[]> parts) =>
        key.Length == 0 || CryptographicOperations.FixedTimeEquals(signature, Sign(parts));
}
