using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace ResearchKit.Tests;

/// <summary>The one fetch of published files (data sets, mermaid.js): whole and verified, or nothing.</summary>
public class VerifiedDownloadTests
{
    /// <summary>Serves <paramref name="body"/> at http://127.0.0.1:PORT/file on a free port; counts the requests.</summary>
    sealed class LocalServer : IDisposable
    {
        readonly HttpListener listener = new();
        public int Requests;
        public string Url { get; }

        public LocalServer(byte[] body)
        {
            using (var probe = new TcpListener(IPAddress.Loopback, 0))
            {
                probe.Start();
                Url = $"http://127.0.0.1:{((IPEndPoint)probe.LocalEndpoint).Port}/";
            }
            listener.Prefixes.Add(Url);
            listener.Start();
            Url += "file";
            _ = Task.Run(async () =>
            {
                while (listener.IsListening)
                {
                    HttpListenerContext context;
                    try { context = await listener.GetContextAsync(); } catch { return; }
                    Interlocked.Increment(ref Requests);
                    await context.Response.OutputStream.WriteAsync(body);
                    context.Response.Close();
                }
            });
        }

        public void Dispose() => listener.Close();
    }

    [Fact]
    public void A_file_lands_only_with_its_published_digest_and_offline_fetches_nothing()
    {
        var body = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat("published bytes ", 10_000)));
        using var server = new LocalServer(body);
        var folder = Directory.CreateTempSubdirectory("rk-download-").FullName;
        try
        {
            var sha256 = PublishedDigest.Sha256Hex(Convert.ToHexString(SHA256.HashData(body)));
            var sha512 = PublishedDigest.Sha512Base64(Convert.ToBase64String(SHA512.HashData(body)));

            // A digest that is not the file's: one line naming the address, and nothing left in the folder.
            var wrong = PublishedDigest.Sha256Hex(new string('0', 64));
            var bad = Path.Combine(folder, "bad.bin");
            var error = Assert.Throws<ResearchKitException>(() => VerifiedDownload.Fetch(server.Url, bad, wrong, TimeSpan.FromSeconds(30)));
            Assert.Contains(server.Url, error.Message);
            Assert.Contains("discarded", error.Message);
            Assert.DoesNotContain('\n', error.Message);
            Assert.Empty(Directory.GetFiles(folder));

            // Both published encodings: the file lands whole.
            foreach (var (digest, name) in new[] { (sha256, "a.bin"), (sha512, "b.bin") })
            {
                var path = Path.Combine(folder, name);
                VerifiedDownload.Fetch(server.Url, path, digest, TimeSpan.FromSeconds(30));
                Assert.Equal(body, File.ReadAllBytes(path));
            }
            Assert.Equal(3, server.Requests);

            // A file already in place with the digest is not fetched again, even offline; a missing one is refused offline.
            var before = Environment.GetEnvironmentVariable("RESEARCHKIT_OFFLINE");
            Environment.SetEnvironmentVariable("RESEARCHKIT_OFFLINE", "1");
            try
            {
                VerifiedDownload.Fetch(server.Url, Path.Combine(folder, "a.bin"), sha256, TimeSpan.FromSeconds(30));
                var offline = Assert.Throws<ResearchKitException>(() =>
                    VerifiedDownload.Fetch(server.Url, Path.Combine(folder, "c.bin"), sha256, TimeSpan.FromSeconds(30)));
                Assert.Contains("RESEARCHKIT_OFFLINE=1", offline.Message);
            }
            finally { Environment.SetEnvironmentVariable("RESEARCHKIT_OFFLINE", before); }
            Assert.Equal(3, server.Requests);
            Assert.Equal(["a.bin", "b.bin"], Directory.GetFiles(folder).Select(f => Path.GetFileName(f)!).Order().ToArray());

            // An address nothing answers: one line naming it.
            server.Dispose();
            var unreachable = Assert.Throws<ResearchKitException>(() =>
                VerifiedDownload.Fetch(server.Url, Path.Combine(folder, "d.bin"), sha256, TimeSpan.FromSeconds(30)));
            Assert.Contains("could not be fetched", unreachable.Message);
            Assert.False(File.Exists(Path.Combine(folder, "d.bin")));
        }
        finally { Directory.Delete(folder, recursive: true); }
    }
}
