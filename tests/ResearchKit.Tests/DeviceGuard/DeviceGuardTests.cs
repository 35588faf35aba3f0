using System.Runtime.InteropServices;
using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Models;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests.DeviceGuard;

/// <summary>
/// The dynamic half of the CPU-side device guard, in process. TorchSharp's implicit device is switched to the data-less
/// "meta" device (as RESEARCHKIT_DEVICE_GUARD=1 does for a whole process: the command-line tests and CI's notebook runs),
/// and the meta device also stands in for a second device that holds the model.
/// </summary>
public class DeviceGuardTests
{
    /// <summary>Runs <paramref name="body"/> with tensors and modules made without a device landing on meta.</summary>
    static T Guarded<T>(Func<T> body)
    {
        var previous = get_default_device();
        set_default_device(META);
        try { return body(); }
        finally { set_default_device(previous); }
    }

    [Fact]
    public void A_module_built_without_placing_it_fails_under_the_guard_and_Compute_Build_places_it()
    {
        // The rotnet notebook's failure on CUDA ("Input type (CUDAFloatType) and weight type (CPUFloatType)"): a helper built
        // a network and fed it images from the compute device. Under the guard the same code fails on the CPU.
        var config = ConvNetConfig.Tiny();
        using var images = randn(new long[] { 2, 1, 28, 28 }, device: CPU);
        var e = Assert.ThrowsAny<ExternalException>(() => Guarded(() => new ConvNet(config).FeatureMaps(images)));
        Assert.Contains("Meta", e.Message);
        var maps = Guarded(() => Compute.Build(() => new ConvNet(config)).FeatureMaps(images));
        Assert.Equal(new long[] { 2, 64, 28, 28 }, maps[0].shape);
        Assert.Equal(DeviceType.CPU, maps[^1].device_type);
    }

    [Fact]
    public void A_tensor_made_without_a_device_lands_on_meta_under_the_guard()
    {
        var (implicitDevice, explicitDevice) = Guarded(() => (zeros(3).device_type, zeros(3, device: CPU).device_type));
        Assert.Equal(DeviceType.META, implicitDevice);
        Assert.Equal(DeviceType.CPU, explicitDevice);
        Assert.Equal(DeviceType.CPU, zeros(3).device_type);   // and only inside the guard
    }

    /// <summary>Trains two steps on the CPU into a folder; returns the folder and the trainer's settings.</summary>
    static (string Directory, TrainConfig Config) TrainedOnTheCpu(MethodConfig method)
    {
        using var data = TestData.Random(64);
        var dir = TestData.TempDir();
        var config = new TrainConfig(Epochs: 1, BatchSize: 32, method.Optimizer);
        var model = Runs.Pretraining.Build(method, 0);
        new Trainer(config, dir).Fit(new DataLoader(data, 32, Normalization.Of(data), device: CPU), model);
        model.Module.Dispose();
        return (dir, config);
    }

    public static TheoryData<string> MethodNames => new() { "mae", "igpt", "rotnet", "ssgan", "tsit" };

    [Theory]
    [MemberData(nameof(MethodNames))]
    public void A_checkpoint_resumes_into_a_model_on_another_device_and_its_optimizer_keeps_the_models_parameters(string name)
    {
        // The iGPT notebook's failure on CUDA ("optimizer or method state does not fit the method: Tensor invalid -- empty
        // handle"): TorchSharp's Module.load moves a non-CPU module to the CPU and back, replacing every parameter under the
        // optimizer built before it. Here the second device is meta, where that move cannot even be made.
        var method = MethodRegistry.Get(name).Preset("tiny").ForInput(28, 1);
        var (dir, config) = TrainedOnTheCpu(method);
        IPretrainModel model;
        using (Compute.OnHost()) model = method.Build();
        model.Module.to(META);
        var phases = model.Phases();
        var optimizers = phases.Select(p => p.CreateOptimizer(config.Optimizer, config.BatchSize)).ToArray();
        var losses = phases.ToDictionary(p => p.Name, _ => new List<double>());
        long step = new CheckpointStore(dir).Load(config, model.Module, phases, optimizers, model.State, losses);
        Assert.Equal(2, step);
        Assert.Equal(2, losses[phases[0].Name].Count);
        var own = model.Module.parameters().ToList();
        Assert.All(optimizers.SelectMany(o => o.Parameters), p => Assert.Contains(own, q => ReferenceEquals(p, q)));
        Assert.All(own, p => Assert.Equal(DeviceType.META, p.device_type));

        // What the old loader did: TorchSharp's Module.load on a module that is not on the CPU.
        using var file = new BinaryReader(File.OpenRead(Path.Combine(dir, Trainer.CheckpointFile)));
        file.ReadString();
        file.ReadString();
        Assert.ThrowsAny<ExternalException>(() => model.Module.load(file));
    }
}
