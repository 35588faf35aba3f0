using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Layers;

/// <summary>
/// The decoder of the convolutional pretext tasks (denoising, context encoder): a feature map at a quarter of the image
/// side → an image. Two 4×4 transposed convolutions of stride 2, each followed by BatchNorm and ReLU (DCGAN's generator
/// blocks, which the context encoder's decoder uses, Pathak et al., 2016, §3.1), then a 3×3 convolution to the output
/// channels with no activation: the output is compared with normalised images, which are not bounded.
/// </summary>
public sealed class ConvDecoder : Module<Tensor, Tensor>
{
    readonly Sequential up;
    readonly Conv2d output;

    /// <param name="inChannels">Channels of the input map [B, inChannels, s/4, s/4].</param>
    /// <param name="width">Channels after the first upsampling; the second halves them.</param>
    /// <param name="outChannels">Channels of the output [B, outChannels, s, s].</param>
    public ConvDecoder(int inChannels, int width, int outChannels) : base(nameof(ConvDecoder))
    {
        int half = Math.Max(1, width / 2);
        up = Sequential(
            ConvTranspose2d(inChannels, width, 4, stride: 2, padding: 1, bias: false), BatchNorm2d(width), ReLU(),
            ConvTranspose2d(width, half, 4, stride: 2, padding: 1, bias: false), BatchNorm2d(half), ReLU());
        output = Conv2d(half, outChannels, 3, padding: 1);
        RegisterComponents();
    }

    /// <summary>map [B, C_in, h, w] → image [B, C_out, 4h, 4w].</summary>
    public override Tensor forward(Tensor map) => Mixed.Conv(output, up.call(map));
}
