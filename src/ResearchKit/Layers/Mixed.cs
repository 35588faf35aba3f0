using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Layers;

/// <summary>
/// Mixed precision done in the kit's own layers, as PyTorch's autocast does it (TorchSharp has no autocast): under
/// <see cref="Precision.Bf16"/> linear layers, convolutions and attention take bfloat16 operands (cast from the float32
/// weights at each use, so the weights, their gradients and the optimizer state stay float32), and their outputs are
/// bfloat16; anything that meets a float32 tensor (the residual stream, positions, norms) is promoted back to float32.
/// Heads whose output feeds a loss or a softmax return float32 (<see cref="Head"/>). Under fp32 and TF32 every call is
/// the module's own.
/// </summary>
public static class Mixed
{
    /// <summary>The dtype matrix products take now: bfloat16 under <see cref="Precision.Bf16"/>, else float32.</summary>
    public static ScalarType MatmulType => Compute.Precision == Precision.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32;

    static bool Active => Compute.Precision == Precision.Bf16;

    /// <summary>x [.., in] → [.., out]; bfloat16 under bf16.</summary>
    public static Tensor Linear(Linear layer, Tensor x)
    {
        if (!Active) return layer.call(x);
        var t = ScalarType.BFloat16;
        return functional.linear(x.to_type(t), layer.weight!.to_type(t), layer.bias?.to_type(t));
    }

    /// <summary>A linear head whose output feeds a loss, softmax or metric: float32 whatever the precision.</summary>
    public static Tensor Head(Linear layer, Tensor x) => Active ? Linear(layer, x).to_type(ScalarType.Float32) : layer.call(x);

    /// <summary>
    /// A 2-D convolution (zero padding); under bf16 the product runs in bfloat16 and the output returns to float32 for the
    /// BatchNorm that follows it (autocast would keep bfloat16 there; a float32 BatchNorm input is the simpler contract).
    /// </summary>
    public static Tensor Conv(Conv2d layer, Tensor x)
    {
        if (layer.padding_mode != TorchSharp.PaddingModes.Zeros || layer.padding is null) return layer.call(x);
        if (NeedsPaddedFilters(layer, x)) return PaddedFilters(layer, x);
        if (!Active) return layer.call(x);
        var t = ScalarType.BFloat16;
        return functional.conv2d(x.to_type(t), layer.weight.to_type(t), layer.bias?.to_type(t), layer.stride, layer.padding, layer.dilation, layer.groups)
            .to_type(ScalarType.Float32);
    }

    /// <summary>A Sequential's layers in order with each Conv2d through <see cref="Conv"/>, so the narrow-filter fix below and bf16
    /// reach convolutions held in a Sequential (a tokenizer's decoder ends in a 3×3 convolution to 1 or 3 channels).</summary>
    public static Tensor Stack(Sequential layers, Tensor x)
    {
        foreach (var layer in layers.children()) x = layer is Conv2d conv ? Conv(conv, x) : ((Module<Tensor, Tensor>)layer).call(x);
        return x;
    }

    /// <summary>Fewest filters for which libtorch's CPU convolution backward was never seen to fail (see <see cref="PaddedFilters"/>).</summary>
    public const int SafeFilters = 16;

    /// <summary>
    /// libtorch's CPU backward of a k × k convolution (k &gt; 1) with fewer than 16 filters sometimes returns NaN in the input
    /// gradient: measured with TorchSharp 0.107 on this machine, 1–2 calls in 20 for 1, 2, 4 and 8 filters, none in 20 for 16,
    /// 32 and 64, with one thread or two; the weight gradient stays finite. A decoder's last convolution to 1 or 3 channels
    /// and a 8-wide network hit it (NaN loss a few steps in). Such a convolution runs with zero filters appended up to
    /// <see cref="SafeFilters"/> and the extra outputs dropped: the same function and the same gradients.
    /// </summary>
    static bool NeedsPaddedFilters(Conv2d layer, Tensor x) =>
        x.device.type == TorchSharp.DeviceType.CPU && x.requires_grad && layer.groups == 1 && layer.weight.shape[0] < SafeFilters
        && (layer.weight.shape[2] > 1 || layer.weight.shape[3] > 1);

    static Tensor PaddedFilters(Conv2d layer, Tensor x)
    {
        long filters = layer.weight.shape[0], extra = SafeFilters - filters;
        var weight = functional.pad(layer.weight, new long[] { 0, 0, 0, 0, 0, 0, 0, extra });      // 16, C_in, k, k
        var bias = layer.bias is { } b ? functional.pad(b, new long[] { 0, extra }) : null;
        if (Active) (x, weight, bias) = (x.to_type(ScalarType.BFloat16), weight.to_type(ScalarType.BFloat16), bias?.to_type(ScalarType.BFloat16));
        var y = functional.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, 1)[.., ..(int)filters];
        return Active ? y.to_type(ScalarType.Float32) : y;
    }

    /// <summary>Scaled dot-product attention; q, k, v in the matmul type (flash attention on CUDA under bf16).</summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, Tensor? mask = null, bool causal = false)
    {
        if (Active)
        {
            var t = ScalarType.BFloat16;
            (q, k, v) = (q.to_type(t), k.to_type(t), v.to_type(t));
        }
        return functional.scaled_dot_product_attention(q, k, v, mask, is_casual: causal);
    }
}
