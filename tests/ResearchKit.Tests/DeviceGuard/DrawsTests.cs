using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests.DeviceGuard;

/// <summary>Random draws from a step's host generator on any device (<see cref="Draws"/>), and the thread-count setter.</summary>
public class DrawsTests
{
    [Fact]
    public void On_the_CPU_draws_are_the_generators_own_values()
    {
        using var a = new Generator(5);
        using var b = new Generator(5);
        Assert.True(Draws.Uniform(a, [3, 4], CPU).Same(rand(new long[] { 3, 4 }, generator: b, device: CPU)));
        Assert.True(Draws.Normal(a, [6], CPU).Same(randn(new long[] { 6 }, generator: b, device: CPU)));
        Assert.True(Draws.Integers(a, 2, 9, [5], CPU).Same(randint(2, 9, new long[] { 5 }, generator: b, device: CPU)));
        var weights = tensor(new float[] { 0, 1, 3, 0.5f }, device: CPU);
        Assert.True(Draws.Multinomial(a, weights, 2).Same(weights.multinomial(2, generator: b)));
        // The host sampler is seeded by one draw, as BEiT's block masks always were: the same masks for the same seed.
        Assert.Equal(new Random((int)randint(0, int.MaxValue, new long[] { 1 }, generator: b, device: CPU).item<long>()).Next(), Draws.Host(a).Next());
    }

    [Fact]
    public void Off_the_CPU_a_draw_takes_one_seed_from_the_host_generator_and_runs_on_the_device()
    {
        // Meta stands in for CUDA: the draw is made there (no values, no copy) and the host generator advances by one draw,
        // so the next draws of a step do not depend on where the earlier ones ran.
        using var g = new Generator(11);
        using var h = new Generator(11);
        var drawn = Draws.Uniform(g, [2, 3], META);
        Assert.Equal(DeviceType.META, drawn.device_type);
        Assert.Equal(new long[] { 2, 3 }, drawn.shape);
        randint(0, long.MaxValue, new long[] { 1 }, generator: h, device: CPU);
        Assert.True(Draws.Uniform(g, [4], CPU).Same(rand(new long[] { 4 }, generator: h, device: CPU)));
    }

    [Fact]
    public void Setting_the_thread_count_it_already_has_changes_nothing_and_another_count_takes_effect()
    {
        int threads = get_num_threads();
        ThreadPolicy.Set(threads);
        Assert.Equal(threads, get_num_threads());
        ThreadPolicy.Set(1);
        try { Assert.Equal(1, get_num_threads()); }
        finally { ThreadPolicy.Set(threads); }
        Assert.Equal(threads, get_num_threads());
        Assert.Equal("thread count must be positive; got 0", Assert.Throws<ResearchKitException>(() => ThreadPolicy.Set(0)).Message);
    }
}
