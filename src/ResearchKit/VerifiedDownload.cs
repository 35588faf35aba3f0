using System.Security.Cryptography;

namespace ResearchKit;

/// <summary>
/// Published files fetched on first use (data sets, mermaid.js): into place whole and with the published digest, or not at
/// all. The download is hashed as it streams to a temporary sibling, which is renamed over the target only if the digest
/// matches (<see cref="AtomicFile"/>). RESEARCHKIT_OFFLINE=1 forbids every fetch.
/// </summary>
public static class VerifiedDownload
{
    /// <summary>Whether RESEARCHKIT_OFFLINE=1 forbids fetching.</summary>
    public static bool Offline => Environment.GetEnvironmentVariable("RESEARCHKIT_OFFLINE") == "1";

    /// <summary>
    /// Makes <paramref name="path"/> hold the file at <paramref name="url"/>, whose digest is <paramref name="digest"/>:
    /// nothing to do when it already does. Throws a one-line <see cref="ResearchKitException"/> naming the address when
    /// offline, unreachable, or when the digest differs (the download is then discarded).
    /// </summary>
    public static void Fetch(string url, string path, PublishedDigest digest, TimeSpan timeout)
    {
        if (File.Exists(path) && digest.Matches(path)) return;
        if (Offline) throw new ResearchKitException($"{url}: RESEARCHKIT_OFFLINE=1 forbids fetching it");
        try
        {
            using var http = new HttpClient { Timeout = timeout };
            using var response = http.GetAsync(url, HttpCompletionOption.ResponseHeadersRead).GetAwaiter().GetResult();
            response.EnsureSuccessStatusCode();
            using var body = response.Content.ReadAsStream();
            AtomicFile.Write(path, file =>
            {
                using var hash = IncrementalHash.CreateHash(digest.Algorithm);
                var buffer = new byte[1 << 16];
                for (int read; (read = body.Read(buffer)) > 0;)
                {
                    hash.AppendData(buffer, 0, read);
                    file.Write(buffer, 0, read);
                }
                if (!digest.Matches(hash.GetHashAndReset()))
                    throw new ResearchKitException($"{url}: its {digest.Algorithm.Name} is not the published {digest.Value}; the download was discarded");
            });
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or IOException)
        {
            throw new ResearchKitException($"{url} could not be fetched ({e.Message})");
        }
    }
}

/// <summary>A file's published digest: a SHA-256 in hex (the data sets' sites) or npm's SHA-512 integrity in base64.</summary>
public sealed record PublishedDigest(HashAlgorithmName Algorithm, string Value)
{
    public static PublishedDigest Sha256Hex(string hex) => new(HashAlgorithmName.SHA256, hex);
    public static PublishedDigest Sha512Base64(string base64) => new(HashAlgorithmName.SHA512, base64);

    /// <summary>Whether <paramref name="hash"/> is this digest, whichever of the two encodings it was published in.</summary>
    public bool Matches(byte[] hash) =>
        string.Equals(Convert.ToHexString(hash), Value, StringComparison.OrdinalIgnoreCase) || Convert.ToBase64String(hash) == Value;

    /// <summary>Whether the file at <paramref name="path"/> has this digest.</summary>
    public bool Matches(string path)
    {
        using var stream = File.OpenRead(path);
        return Matches(CryptographicOperations.HashData(Algorithm, stream));
    }
}
