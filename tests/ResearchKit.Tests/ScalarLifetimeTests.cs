using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>
/// TorchSharp 0.107 reads a Scalar's (or a temporary Tensor's) native handle and then calls libtorch, with nothing keeping
/// the .NET object alive: a garbage collection started by another thread during the call lets the finalizer free it, and
/// libtorch reads freed memory. The build patches the output copy of TorchSharp.dll (Directory.Build.targets,
/// tools/TorchSharpScalarLifetime). Without the patch each operation below failed here within 10,000–130,000 calls
/// beside one allocating thread ("INTERNAL ASSERT FAILED at c10/core/Scalar.h:279", "Unknown scalar type").
/// </summary>
public class ScalarLifetimeTests
{
    [Fact]
    public void The_TorchSharp_beside_the_kit_is_the_patched_copy() =>
        Assert.NotNull(typeof(torch).Assembly.GetType("ResearchKit.ScalarLifetimePatched"));

    [Theory]
    [InlineData("x * 2.0")]
    [InlineData("x + 1e-5f")]
    [InlineData("x.mul(2.0)")]
    [InlineData("x.add_(y, alpha)")]
    [InlineData("x.pow(2.0)")]
    [InlineData("(x * y).sum()")]
    public void Tensor_and_number_operations_survive_garbage_collections_from_another_thread(string operation)
    {
        Func<Tensor, Tensor, Tensor> op = operation switch
        {
            "x * 2.0" => (x, _) => x * 2.0,
            "x + 1e-5f" => (x, _) => x + 1e-5f,
            "x.mul(2.0)" => (x, _) => x.mul(2.0),
            "x.add_(y, alpha)" => (x, y) => x.add_(y, alpha: 1e-9),
            "x.pow(2.0)" => (x, _) => x.pow(2.0),
            _ => (x, y) => (x * y).sum(),   // a temporary tensor outside any dispose scope
        };
        using var x = randn(new long[] { 64, 64 }, device: CPU);
        using var y = randn(new long[] { 64, 64 }, device: CPU);
        var stop = 0;
        var allocating = new Thread(() =>
        {
            var garbage = new List<byte[]>();
            while (Volatile.Read(ref stop) == 0)
            {
                garbage.Add(new byte[20_000]);
                if (garbage.Count > 200) garbage.Clear();
            }
        });
        allocating.Start();
        try
        {
            for (int i = 0; i < 150_000; i++)
            {
                var result = op(x, y);
                if (!ReferenceEquals(result, x)) result.Dispose();
            }
        }
        finally
        {
            Volatile.Write(ref stop, 1);
            allocating.Join();
        }
    }
}
