using static TorchSharp.torch;

namespace ResearchKit.Data;

/// <summary>
/// How the images of one data set are brought to the shape a run was trained on, for probing or fine-tuning it on another
/// data set (transfer). Channels first — grey to RGB repeats the channel; RGB to grey takes ITU-R BT.601 luma,
/// 0.299 R + 0.587 G + 0.114 B, as PIL's convert("L") — then size, bilinear (align_corners false, no antialiasing: the
/// transfers here change the side by at most 2×). Results record <see cref="Description"/>, so a number says how it was made.
/// </summary>
public sealed record InputAdapter(int FromChannels, int FromHeight, int FromWidth, int ToChannels, int ToSize)
{
    static readonly float[] Luma = [0.299f, 0.587f, 0.114f];

    /// <summary>The adapter from <paramref name="data"/>'s images to <paramref name="channels"/> × <paramref name="size"/>²; a one-line error when none exists.</summary>
    public static InputAdapter For(ImageDataset data, int channels, int size)
    {
        var adapter = new InputAdapter(data.Channels, data.Height, data.Width, channels, size);
        if (data.Channels != channels && !(data.Channels == 1 && channels == 3) && !(data.Channels == 3 && channels == 1))
            throw new ResearchKitException($"{data.Name}: {data.Channels}-channel images cannot be adapted to the run's {channels} channels (grey ↔ RGB only)");
        return adapter;
    }

    public bool IsIdentity => FromChannels == ToChannels && FromHeight == ToSize && FromWidth == ToSize;

    /// <summary>"none", or what changes in plain ASCII (it goes into JSON results): "rgb->grey, 32x32->28x28".</summary>
    public string Description
    {
        get
        {
            if (IsIdentity) return "none";
            var parts = new List<string>();
            if (FromChannels != ToChannels) parts.Add(FromChannels == 1 ? "grey->rgb" : "rgb->grey");
            if (FromHeight != ToSize || FromWidth != ToSize) parts.Add($"{FromHeight}x{FromWidth}->{ToSize}x{ToSize}");
            return string.Join(", ", parts);
        }
    }

    /// <summary>A copy of <paramref name="data"/> in the run's shape (uint8, rounded), or the split itself when nothing changes.</summary>
    public ImageDataset Apply(ImageDataset data)
    {
        if (IsIdentity) return data;
        const int Chunk = 4096;   // bounded float memory whatever the split's size
        var pieces = new List<Tensor>();
        for (long start = 0; start < data.Count; start += Chunk)
        {
            using var scope = NewDisposeScope();
            var x = data.Images.narrow(0, start, Math.Min(Chunk, data.Count - start)).to_type(ScalarType.Float32);
            if (FromChannels == 1 && ToChannels == 3) x = x.expand(-1, 3, -1, -1);
            else if (FromChannels == 3 && ToChannels == 1)
                x = (x * tensor(Luma, device: CPU).reshape(1, 3, 1, 1)).sum(dim: 1, keepdim: true);
            if (FromHeight != ToSize || FromWidth != ToSize)
                x = nn.functional.interpolate(x, [ToSize, ToSize], mode: InterpolationMode.Bilinear, align_corners: false);
            pieces.Add(x.round().clamp(0, 255).to_type(ScalarType.Byte).MoveToOuterDisposeScope());
        }
        var images = cat(pieces.ToArray(), 0);
        foreach (var piece in pieces) piece.Dispose();
        return new ImageDataset(data.Name, data.Split, images, data.Labels.clone(), data.ClassNames, $"{data.Source}, adapted: {Description}");
    }

    /// <summary>Both splits adapted (a new pair; the caller disposes it and, when it is a copy, the original).</summary>
    public DatasetSplits Apply(DatasetSplits data) => new(Apply(data.Train), Apply(data.Test));
}
