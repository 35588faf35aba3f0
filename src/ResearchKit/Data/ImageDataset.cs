using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Data;

/// <summary>A data file that is missing, corrupt, truncated or inconsistent; the message names the file.</summary>
public sealed class DataFormatException(string file, string problem)
    : ResearchKitException($"{file}: {problem}")
{
    public string File { get; } = file;
}

/// <summary>
/// One split of a labelled image data set held in memory as bytes: images [N, C, H, W] uint8 on the CPU
/// (Fashion-MNIST's 60k training images are 47 MB). Batches are converted to float on demand.
/// </summary>
public sealed class ImageDataset : IDisposable
{
    public string Name { get; }
    public string Split { get; }
    /// <summary>[N, C, H, W] uint8, CPU.</summary>
    public Tensor Images { get; }
    /// <summary>[N] int64 class indices.</summary>
    public Tensor Labels { get; }
    public IReadOnlyList<string> ClassNames { get; }
    /// <summary>Where the data came from (a folder, a file, or "generated").</summary>
    public string Source { get; }

    public ImageDataset(string name, string split, Tensor images, Tensor labels, IReadOnlyList<string> classNames, string source)
    {
        if (images.dim() != 4 || images.dtype != ScalarType.Byte)
            throw new ArgumentException($"{name}/{split}: images must be uint8 [N, C, H, W]; got {images.dtype} [{string.Join(", ", images.shape)}]");
        if (labels.dim() != 1 || labels.shape[0] != images.shape[0])
            throw new ArgumentException($"{name}/{split}: {labels.shape[0]} labels for {images.shape[0]} images");
        Name = name; Split = split; ClassNames = classNames; Source = source;
        Images = images.DetachFromDisposeScope();
        Labels = labels.to_type(ScalarType.Int64).DetachFromDisposeScope();
    }

    (Device Device, Tensor Images, Tensor Labels)? resident;   // a copy on the compute device, made on first use

    /// <summary>
    /// The images and labels on <paramref name="device"/>: the host tensors themselves on the CPU; elsewhere a copy made on
    /// first use (one upload, kept until the split is disposed), so batches are gathered on the device instead of
    /// uploaded every step. Fashion-MNIST's training split is 47 MB.
    /// </summary>
    public (Tensor Images, Tensor Labels) On(Device device)
    {
        if (device.type == DeviceType.CPU) return (Images, Labels);
        if (resident is not { } r || r.Device.type != device.type || r.Device.index != device.index)
        {
            DisposeResident();
            resident = (device, Images.to(device).DetachFromDisposeScope(), Labels.to(device).DetachFromDisposeScope());
        }
        return (resident.Value.Images, resident.Value.Labels);
    }

    void DisposeResident()
    {
        if (resident is not { } r) return;
        r.Images.Dispose();
        r.Labels.Dispose();
        resident = null;
    }

    public long Count => Images.shape[0];
    public int Channels => (int)Images.shape[1];
    public int Height => (int)Images.shape[2];
    public int Width => (int)Images.shape[3];
    public int ClassCount => ClassNames.Count;

    /// <summary>The first <paramref name="count"/> examples as a copy; this same object when null or not smaller (then not the caller's to dispose).</summary>
    public ImageDataset Take(long? count)
    {
        if (count is null || count >= Count) return this;
        if (count <= 0) throw new ResearchKitException($"{Name}/{Split}: limit must be positive; got {count}");
        return new ImageDataset(Name, Split, Images[..(int)count].clone(), Labels[..(int)count].clone(), ClassNames, Source);
    }

    /// <summary>Disposes <paramref name="subset"/> when it is a copy made by <see cref="Take"/> (not this split itself).</summary>
    public void DisposeIfCopy(ImageDataset subset)
    {
        if (!ReferenceEquals(subset, this)) subset.Dispose();
    }

    /// <summary>Per-channel mean and standard deviation of the pixels scaled to [0, 1].</summary>
    public (float[] Mean, float[] Std) ChannelStatistics()
    {
        using var scope = NewDisposeScope();
        var x = Images.to_type(ScalarType.Float32).div_(255f).transpose(0, 1).reshape(Channels, -1);
        var mean = x.mean(new long[] { 1 }).data<float>().ToArray();
        var std = x.std(1).data<float>().ToArray();
        return (mean, std);
    }

    public override string ToString() => $"{Name}/{Split}: {Count} images {Channels}×{Height}×{Width}, {ClassCount} classes ({Source})";

    public void Dispose()
    {
        DisposeResident();
        Images.Dispose();
        Labels.Dispose();
    }
}

/// <summary>A data set's train and test splits.</summary>
public sealed record DatasetSplits(ImageDataset Train, ImageDataset Test) : IDisposable
{
    public void Dispose()
    {
        Train.Dispose();
        Test.Dispose();
    }
}
