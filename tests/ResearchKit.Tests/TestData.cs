using ResearchKit.Data;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>Small data sets for tests: random bytes, the shapes generator, or real Fashion-MNIST.</summary>
static class TestData
{
    /// <summary>The checkout the tests were built from: the folder above their binaries that holds ResearchKit.sln.</summary>
    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "ResearchKit.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"no ResearchKit.sln above {AppContext.BaseDirectory}");
    }

    public static ImageDataset Random(int count, int channels = 1, int size = 28, int classes = 10, int seed = 0)
    {
        var g = new Generator((ulong)seed);
        var images = randint(0, 256, new long[] { count, channels, size, size }, generator: g).to_type(ScalarType.Byte);
        var labels = randint(0, classes, new long[] { count }, generator: g);
        return new ImageDataset("random", "train", images, labels, Enumerable.Range(0, classes).Select(i => i.ToString()).ToArray(), "test");
    }

    /// <summary>
    /// Every evaluation <paramref name="config"/>'s method declares that needs no extra data, on normalised images whose labels
    /// are not read (class 0 stands in): the scalars by name, as sweeps store them.
    /// </summary>
    public static Dictionary<string, double> Measure(ResearchKit.Methods.MethodConfig config, ResearchKit.Methods.IPretrainModel model,
        Normalization normalization, Tensor images, Generator generator)
    {
        var request = new ResearchKit.Methods.EvaluationRequest(model, normalization, images,
            zeros(images.shape[0], ScalarType.Int64, device: images.device), new Dictionary<string, ImageDataset>(), generator);
        var info = ResearchKit.Methods.MethodRegistry.Of(config);
        return ResearchKit.Methods.MethodEvaluations.Scalars(ResearchKit.Methods.MethodEvaluations.Run(info, request));
    }

    /// <summary>
    /// Trains <paramref name="config"/> (seed 0) for <paramref name="epochs"/> without a folder, and again into a folder for
    /// one epoch, then resumed there to <paramref name="epochs"/>; asserts the resumed run continues the unbroken run's losses
    /// and ends with its weights. Returns the unbroken run and its model.
    /// </summary>
    public static (ResearchKit.Training.TrainResult Result, ResearchKit.Methods.IPretrainModel Model) AssertResumeEqualsUnbroken(
        ResearchKit.Methods.MethodConfig config, ImageDataset train, Normalization normalization, int batch, int epochs = 2)
    {
        ResearchKit.Training.TrainResult Train(string? dir, int upTo, out ResearchKit.Methods.IPretrainModel model)
        {
            model = ResearchKit.Runs.Pretraining.Build(config, 0, ResearchKit.Methods.BuildContext.Of(config, normalization));
            var loader = new DataLoader(train, batch, normalization, seed: 0);
            return new ResearchKit.Training.Trainer(new ResearchKit.Training.TrainConfig(upTo, batch, config.Optimizer, Seed: 0, CheckpointEvery: 1000), dir)
                .Fit(loader, model);
        }
        var unbroken = Train(null, epochs, out var whole);
        var dir = TempDir();
        Train(dir, 1, out var first);
        first.Module.Dispose();
        var resumed = Train(dir, epochs, out var second);
        Xunit.Assert.True(resumed.Resumed);
        Xunit.Assert.Equal(unbroken.Losses, resumed.Losses);
        Xunit.Assert.All(whole.Module.state_dict().Zip(second.Module.state_dict()),
            pair => Xunit.Assert.True(pair.First.Value.Same(pair.Second.Value), $"{pair.First.Key} differs after resuming"));
        second.Module.Dispose();
        return (unbroken, whole);
    }

    /// <summary>A wide supervised CNN (width 32) trained one epoch on <paramref name="data"/> in a new run folder: the teacher a gwtn
    /// configuration needs (its width and normalisation are read from the folder).</summary>
    public static string WideTeacher(ImageDataset data)
    {
        var dir = Path.Combine(TempDir(), "teacher");
        var wide = ResearchKit.Models.SupervisedConfig.Wide();
        ResearchKit.Runs.Pretraining.Run(wide with { Cnn = wide.Cnn with { Width = 32 } }, new ResearchKit.Runs.PretrainOptions(Epochs: 1, BatchSize: 32), data, dir);
        return dir;
    }

    /// <summary>Real Fashion-MNIST (CI installs Debian's dataset-fashion-mnist); fails with the catalog's how-to when missing.</summary>
    public static DatasetSplits FashionMnist(long train, long test) => DatasetCatalog.Load("fashion-mnist", train, test);

    /// <summary>
    /// The environment every `researchkit` process of the tests runs in: under the device guard (<see cref="Compute.GuardEnabled"/>),
    /// so each command-line test is also a device test: a tensor, module or generator made without a device fails it.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> Guarded = new Dictionary<string, string> { ["RESEARCHKIT_DEVICE_GUARD"] = "1" };

    /// <summary>Runs `researchkit ARGS` (the CLI built beside the tests) under the device guard, to completion (2 minutes at most).</summary>
    public static (int Code, string Out, string Err) Cli(params string[] args) =>
        RunProcess("dotnet", [Path.Combine(AppContext.BaseDirectory, "ResearchKit.Cli.dll"), .. args], Guarded, TimeSpan.FromMinutes(2));

    /// <summary>Runs a program to completion (2 minutes at most); returns its exit code and output.</summary>
    public static (int Code, string Out, string Err) RunProcess(string file, params string[] args) =>
        RunProcess(file, args, new Dictionary<string, string>(), TimeSpan.FromMinutes(2));

    /// <summary>Runs a program with extra environment variables, to completion within <paramref name="limit"/>.</summary>
    public static (int Code, string Out, string Err) RunProcess(string file, IEnumerable<string> args, IReadOnlyDictionary<string, string> environment, TimeSpan limit)
    {
        var start = new System.Diagnostics.ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) start.ArgumentList.Add(a);
        foreach (var (name, value) in environment) start.Environment[name] = value;
        using var process = System.Diagnostics.Process.Start(start) ?? throw new InvalidOperationException($"could not start {file}");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(limit)) { process.Kill(true); throw new TimeoutException($"{file} did not finish in {limit.TotalMinutes:0} minutes"); }
        return (process.ExitCode, output.Result, error.Result);
    }

    public static string TempDir()
    {
        var dir = Path.Combine(Path.GetTempPath(), "researchkit-tests", Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}

static class TensorAssert
{
    /// <summary>Same shape and every element equal.</summary>
    public static bool Same(this Tensor a, Tensor b) =>
        a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();
}
