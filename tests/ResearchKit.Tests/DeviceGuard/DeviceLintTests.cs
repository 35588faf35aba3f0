namespace ResearchKit.Tests.DeviceGuard;

/// <summary>
/// The static half of the CPU-side device guard (<see cref="DeviceLint"/>): the kit's sources hold none of the patterns
/// that broke on CUDA, and every remaining read from a tensor to .NET is in a member known to run outside a training step.
/// </summary>
public class DeviceLintTests
{
    static readonly string Root = TestData.RepositoryRoot();
    static readonly string[] Projects = ["src/ResearchKit", "src/ResearchKit.Cli"];
    static readonly Lazy<List<LintFinding>> Findings = new(() => Projects.SelectMany(p => DeviceLint.Check(Root, p)).ToList());

    static void AssertNone(string rule, string fix)
    {
        var found = Findings.Value.Where(f => f.Rule == rule).ToList();
        Assert.True(found.Count == 0, $"{found.Count} × {rule} ({fix}):\n{string.Join("\n", found)}");
    }

    [Fact]
    public void Every_tensor_made_outside_a_module_constructor_says_which_device_it_is_made_on() =>
        AssertNone(DeviceLint.ImplicitDevice, "pass device: (CPU for host data, the input's device for computation)");

    [Fact]
    public void Generators_reach_TorchSharp_ops_only_through_Draws() =>
        AssertNone(DeviceLint.GeneratorOnOp, "use Draws.Uniform/Normal/Integers/Multinomial/Host");

    [Fact]
    public void No_number_is_passed_where_TorchSharp_takes_a_dtype() =>
        AssertNone(DeviceLint.LiteralDtype, "name the dimension: t.sum(dim: 0), not t.sum(0)");

    [Fact]
    public void No_module_is_loaded_or_zeroed_through_TorchSharp()
    {
        AssertNone(DeviceLint.ModuleLoad, "load with CheckpointStore/ModuleState.CopyInto, in place");
        AssertNone(DeviceLint.ModuleZeroGrad, "zero gradients through the FlatOptimizer");
    }

    /// <summary>
    /// Members that may read a tensor back to .NET, with why it does not happen inside a training step (or happens once).
    /// A new read anywhere else fails this test: on a GPU every read waits for the device.
    /// </summary>
    static readonly Dictionary<string, string> AllowedHostReads = new()
    {
        ["PendingLosses.Read"] = "the trainer's one read per logging interval, checkpoint and epoch end",
        ["Draws.NextSeed"] = "a draw of the host generator: a CPU tensor, no device involved",
        ["CheckpointStore.Checksums"] = "checkpoints: hashes of the weights as written or read",
        ["CheckpointStore.LoadWeights"] = "checkpoints: weights checked on the host before they are copied in",
        ["ModuleState.WriteTensor"] = "checkpoints: writing",
        ["TensorIO.Write"] = "checkpoints: a method's extra state",
        ["ImageDataset.ChannelStatistics"] = "once per data set: its normalisation",
        ["IdxReader.ReadPair"] = "reading files into host tensors",
        ["FineTuning.Accuracy"] = "evaluation: reads its result",
        ["LinearProbe.Train"] = "evaluation: L-BFGS reads its objective",
        ["LinearProbe.Accuracy"] = "evaluation: reads its result",
        ["Knn.Accuracy"] = "evaluation: reads its result",
        ["Lbfgs.Minimize"] = "evaluation: the line search works on host numbers",
        ["Reconstruction.Mse"] = "evaluation: reads its result",
        ["RotNet.MeasureRotation"] = "evaluation: reads its result",
        ["ClassifierMetrics.Report"] = "evaluation: calibration bins on the host",
        ["Supervised.MeasureOod"] = "evaluation: AUROC ranks on the host",
        ["ImageGptOutput.BitsPerPixel"] = "evaluation: reads its result",
        ["TokenTarget.MaskedAccuracy"] = "evaluation: reads its result",
        ["TokenizerRun.Measure"] = "the tokenizer's report, every ReportEvery steps",
        ["VisualTokenizer.Perplexity"] = "the tokenizer's report",
        ["PatchPca.IsFitted"] = "once after building or loading, then mirrored on the host",
        ["PatchPca.ExplainedVariance"] = "a report",
        ["DiscreteVae.Steps"] = "once after building or loading, then mirrored on the host",
        ["VqTokenizer.UpdateCodebook"] = "once after building or loading: the step count, then mirrored on the host",
        ["ImageGpt.ToPixels"] = "figures",
        ["ImageGrid.FromRows"] = "figures",
        ["MimeBundles.TensorHtml"] = "displays: a tensor's summary statistics in a notebook output",
        ["MimeBundles.TensorValues"] = "displays: a small tensor's values (notebook outputs, exported programs)",
        ["ColorBins.RebalancingWeights"] = "once before training: the colour prior of the training images",
        ["ColorPalette..ctor"] = "palettes live on the host (fitted once, before training)",
        ["ColorPalette.Decode"] = "figures: checks the token range",
        ["ColorPalette.QuantisationPsnr"] = "a palette's report",
        ["ColorPalette.ColorRows"] = "a palette written to config.json",
        ["KMeans.Fit"] = "k-means runs on the host in float64, once before training",
        ["KMeans.Lloyd"] = "k-means runs on the host",
        ["KMeans.PlusPlus"] = "k-means runs on the host",
        ["Masking.FromMask"] = "the checking overload, for callers without a count; samplers call FromMask(mask, keep)",
        ["Masking.RandomLike"] = "host masks (CPU tensors) for BEiT's random-masking ablation",
        ["PaletteCommand.Sklearn"] = "palette bench: hands host pixels to scikit-learn",
        ["SampleQuality.FrechetDistance"] = "evaluation: covariances and eigenvalues in float64 on the host",
        ["SampleQuality.PrecisionRecall"] = "evaluation: reads its result",
        ["SampleQuality.DiversityRatio"] = "evaluation: reads its result",
        ["SelfSupervisedGan.MeasureRotation"] = "evaluation: reads its result",
        ["SelfSupervisedGan.MeasureStability"] = "evaluation: reads its result",
        ["Pgd.RobustAccuracy"] = "evaluation: reads its result",
        ["Jem.MeasureOod"] = "evaluation: AUROC ranks on the host",
        ["ImageSimilarity.Ssim"] = "evaluation: reads its result",
        ["Tsit.MeasureTranslation"] = "evaluation: reads its result",
        ["Tsit.StyleDistance"] = "evaluation: reads its result",
        ["Tsit.MeasureContent"] = "evaluation: reads its result",
    };

    [Fact]
    public void Every_read_from_a_tensor_is_in_a_member_that_runs_outside_a_training_step()
    {
        var reads = Findings.Value.Where(f => f.Rule == DeviceLint.HostRead).ToList();
        var unexpected = reads.Where(f => !AllowedHostReads.ContainsKey(f.Member)).ToList();
        Assert.True(unexpected.Count == 0, "reads from tensors outside the allowed members (each waits for a GPU):\n" + string.Join("\n", unexpected));
        var stale = AllowedHostReads.Keys.Where(m => reads.All(f => f.Member != m)).ToList();
        Assert.True(stale.Count == 0, $"allowed members that no longer read (remove them from the list): {string.Join(", ", stale)}");
    }

    [Fact]
    public void The_lint_finds_each_pattern_that_broke_on_CUDA()
    {
        // The shapes of the bugs the GPU issue found, and their fixes beside them.
        var findings = DeviceLint.CheckSource("""
            using ResearchKit;
            using TorchSharp;
            using static TorchSharp.torch;
            static class Snippet
            {
                static Tensor Broken(Tensor z, Generator g, nn.Module m, System.IO.BinaryReader r)
                {
                    var first = randint(0, z.shape[0], 1, generator: g, device: z.device);   // a CPU generator into a device op
                    var noise = rand(new long[] { 2, 3 });                                   // lands on the CPU beside device tensors
                    m.load(r);                                                              // replaces every parameter on CUDA
                    m.zero_grad();
                    var counts = noise.sum(0);                                              // the literal 0 is a dtype here
                    return z + noise + first.item<long>() + counts;
                }
                static Tensor Fixed(Tensor z, Generator g) =>
                    Draws.Integers(g, 0, z.shape[0], [1], z.device) + Draws.Uniform(g, [2, 3], z.device) + zeros(3, device: CPU).sum(dim: 0);
            }
            """);
        string Rules(string member) => string.Join(", ", findings.Where(f => f.Member == member).Select(f => f.Rule).Order());
        Assert.Equal(string.Join(", ", new[] { DeviceLint.GeneratorOnOp, DeviceLint.HostRead, DeviceLint.ImplicitDevice, DeviceLint.LiteralDtype,
            DeviceLint.ModuleLoad, DeviceLint.ModuleZeroGrad }.Order()), Rules("Snippet.Broken"));
        Assert.Equal("", Rules("Snippet.Fixed"));
    }
}
