using static TorchSharp.torch;

namespace ResearchKit.Data;

/// <summary>A batch: images [B, C, H, W] float (normalised) and labels [B] int64, on the compute device.</summary>
public sealed record Batch(Tensor Images, Tensor Labels)
{
    public long Size => Images.shape[0];
}

/// <summary>Per-channel normalisation x ↦ (x/255 − mean) / std, and its inverse for display.</summary>
public sealed record Normalization(float[] Mean, float[] Std)
{
    /// <summary>
    /// [1, C, 1, 1] mean and std on <paramref name="device"/>, uploaded once per array and device rather than at every
    /// batch (each upload from ordinary memory would wait for the device). Kept beside the arrays, not in the record, so
    /// equality and `with` see only the numbers.
    /// </summary>
    (Tensor Mean, Tensor Std) Statistics(Device device) =>
        (DeviceCopy.Of(Mean, [1, Mean.Length, 1, 1], device), DeviceCopy.Of(Std, [1, Std.Length, 1, 1], device));

    /// <summary>Throws a one-line error unless there is a finite mean and a positive, finite std for each channel.</summary>
    public void Validate()
    {
        if (Mean.Length == 0 || Mean.Length != Std.Length)
            throw new ResearchKitException($"normalization: expected a mean and a std per channel; got {Mean.Length} means and {Std.Length} stds");
        if (Mean.Any(m => !float.IsFinite(m)) || Std.Any(s => !(s > 0 && float.IsFinite(s))))
            throw new ResearchKitException($"normalization: means must be finite and stds positive and finite; got mean [{string.Join(", ", Mean)}], std [{string.Join(", ", Std)}]");
    }

    /// <summary>No normalisation: images stay pixel values in [0, 1] (mean 0, std 1 per channel).</summary>
    public static Normalization Identity(int channels) => new(new float[channels], Enumerable.Repeat(1f, channels).ToArray());

    public static Normalization Of(ImageDataset train)
    {
        var (mean, std) = train.ChannelStatistics();
        return new Normalization(mean, std);
    }

    /// <summary>uint8 [B, C, H, W] → normalised float on <paramref name="device"/>.</summary>
    public Tensor Apply(Tensor bytes, Device device) => Standardize(ToUnit(bytes, device));

    /// <summary>uint8 [B, C, H, W] → float pixel values in [0, 1] on <paramref name="device"/>.</summary>
    public static Tensor ToUnit(Tensor bytes, Device device) => bytes.to(device).to_type(ScalarType.Float32).div_(255f);

    /// <summary>pixel values in [0, 1] → normalised: (x − mean) / std per channel.</summary>
    public Tensor Standardize(Tensor unit)
    {
        var (mean, std) = Statistics(unit.device);
        return (unit - mean) / std;
    }

    /// <summary>normalised [B, C, H, W] → pixel values in [0, 1].</summary>
    public Tensor Invert(Tensor x)
    {
        var (mean, std) = Statistics(x.device);
        return (x * std + mean).clamp(0, 1);
    }
}

/// <summary>The pre-training augmentations MAE compares (Table 1e), by name.</summary>
public enum AugmentKind
{
    /// <summary>The image as it is.</summary>
    None,
    /// <summary>A crop of fixed size (MAE: 224 of a 256 resize, 7/8 of the side) at a random position, resized back; horizontal flip.</summary>
    FixedCrop,
    /// <summary>Random resized crop (area 0.2–1, aspect 3/4–4/3) and horizontal flip: MAE's default.</summary>
    RandomCrop,
    /// <summary>Random resized crop and flip, then colour jitter (brightness and contrast ±0.4).</summary>
    CropJitter,
}

/// <summary>
/// The papers' training augmentations, on pixel values in [0, 1] (before normalisation, so jitter acts on real
/// intensities): a random resized crop (MAE: scale 0.2–1, aspect 3/4–4/3) or a fixed-size crop
/// (<paramref name="FixedCrop"/>: the crop's side as a fraction of the image's), horizontal flip, and colour jitter
/// (torchvision's ColorJitter brightness and contrast: factors drawn from [1 − s, 1 + s]). Applied to a whole batch at
/// once with one affine sampling grid per image.
/// </summary>
public sealed record Augmentation(bool RandomResizedCrop = true, double MinScale = 0.2, double MaxScale = 1.0, bool HorizontalFlip = true,
    double FixedCrop = 0, double Brightness = 0, double Contrast = 0)
{
    public static Augmentation None => new(false, 1, 1, false);
    public static Augmentation Mae => new();

    /// <summary>The augmentation MAE's Table 1e names: none, fixed-size crop, random-size crop, crop + colour jitter.</summary>
    public static Augmentation Of(AugmentKind kind) => kind switch
    {
        AugmentKind.None => None,
        AugmentKind.FixedCrop => new(false, 1, 1, true, FixedCrop: 224.0 / 256),
        AugmentKind.RandomCrop => Mae,
        AugmentKind.CropJitter => Mae with { Brightness = 0.4, Contrast = 0.4 },
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>images [B, C, H, W] in [0, 1] → same shape, each image cropped, resized back, maybe flipped, maybe jittered.</summary>
    public Tensor Apply(Tensor images, Random random)
    {
        bool crop = RandomResizedCrop || FixedCrop > 0;
        if (!crop && !HorizontalFlip && Brightness == 0 && Contrast == 0) return images;
        long B = images.shape[0];
        var theta = new float[B * 6];
        var factors = new float[B * 2];
        for (long b = 0; b < B; b++)
        {
            var (w, h, cx, cy) = RandomResizedCrop ? SampleCrop(random) : FixedCrop > 0 ? PlaceCrop(FixedCrop, random) : (1.0, 1.0, 0.0, 0.0);
            double flip = HorizontalFlip && random.NextDouble() < 0.5 ? -1 : 1;
            // Output grid x_out ∈ [−1, 1] samples input x_in = w·flip·x_out + cx (normalised coordinates).
            theta[b * 6 + 0] = (float)(w * flip); theta[b * 6 + 2] = (float)cx;
            theta[b * 6 + 4] = (float)h; theta[b * 6 + 5] = (float)cy;
            // Jitter draws only when jitter is on, so the crop and flip draws of the other augmentations stay as they were.
            factors[b * 2] = Brightness > 0 ? (float)(1 + Brightness * (2 * random.NextDouble() - 1)) : 1f;
            factors[b * 2 + 1] = Contrast > 0 ? (float)(1 + Contrast * (2 * random.NextDouble() - 1)) : 1f;
        }
        var output = images;
        if (crop || HorizontalFlip)
        {
            var grid = nn.functional.affine_grid(Compute.Upload(theta, [B, 2, 3], images.device), images.shape, align_corners: false);
            output = nn.functional.grid_sample(images, grid, mode: GridSampleMode.Bilinear, padding_mode: GridSamplePaddingMode.Border, align_corners: false);
        }
        if (Brightness == 0 && Contrast == 0) return output;
        var f = Compute.Upload(factors, [B, 2, 1, 1], images.device);
        // Brightness scales the intensities; contrast blends with the image's mean grey level (torchvision's order when both are drawn first).
        output = (output * f[.., 0..1]).clamp(0, 1);
        var grey = output.mean(new long[] { 1, 2, 3 }, keepdim: true);
        return ((output - grey) * f[.., 1..2] + grey).clamp(0, 1);
    }

    /// <summary>A square crop of side <paramref name="side"/> (fraction of the image) at a uniformly random position.</summary>
    static (double W, double H, double Cx, double Cy) PlaceCrop(double side, Random random) =>
        (side, side, (2 * random.NextDouble() - 1) * (1 - side), (2 * random.NextDouble() - 1) * (1 - side));

    /// <summary>torchvision's RandomResizedCrop sampling, as fractions: (width, height, centre x, centre y) in [−1, 1] units.</summary>
    (double W, double H, double Cx, double Cy) SampleCrop(Random random)
    {
        for (int attempt = 0; attempt < 10; attempt++)
        {
            double area = MinScale + random.NextDouble() * (MaxScale - MinScale);
            double logRatio = Math.Log(3.0 / 4) + random.NextDouble() * (Math.Log(4.0 / 3) - Math.Log(3.0 / 4));
            double ratio = Math.Exp(logRatio);
            double w = Math.Sqrt(area * ratio), h = Math.Sqrt(area / ratio);
            if (w > 1 || h > 1) continue;
            double left = random.NextDouble() * (1 - w), top = random.NextDouble() * (1 - h);
            return (w, h, 2 * (left + w / 2) - 1, 2 * (top + h / 2) - 1);
        }
        return (1, 1, 0, 0);   // fall back to the whole image
    }
}

/// <summary>
/// Batches of a data set in a seeded order. The order and augmentation of epoch e depend only on
/// (seed, e), so a run resumed mid-epoch sees exactly the batches the uninterrupted run saw.
/// Enumerate <see cref="Epoch"/> for index lists and call <see cref="Load"/> inside the step's dispose scope.
/// </summary>
public sealed class DataLoader
{
    public ImageDataset Data { get; }
    public int BatchSize { get; }
    public Normalization Normalization { get; }
    public Augmentation Augmentation { get; }
    readonly bool shuffle, dropLast;
    readonly int seed;
    readonly Device device;

    public DataLoader(ImageDataset data, int batchSize, Normalization normalization, bool shuffle = true, int seed = 0,
        Augmentation? augmentation = null, bool dropLast = true, Device? device = null)
    {
        if (batchSize <= 0) throw new ResearchKitException($"batch size must be positive; got {batchSize}");
        Data = data; BatchSize = batchSize; Normalization = normalization;
        Augmentation = augmentation ?? Augmentation.None;
        this.shuffle = shuffle; this.seed = seed; this.dropLast = dropLast;
        this.device = device ?? Compute.Device;
        if (dropLast && data.Count < batchSize)
            throw new ResearchKitException($"{data.Name}/{data.Split} has {data.Count} images, fewer than one batch of {batchSize}; lower the batch size or raise the limit");
    }

    public int BatchesPerEpoch => (int)(dropLast ? Data.Count / BatchSize : (Data.Count + BatchSize - 1) / BatchSize);

    /// <summary>The batches of epoch <paramref name="epoch"/> as index arrays, starting at batch <paramref name="skip"/>.</summary>
    public IEnumerable<BatchIndices> Epoch(int epoch, int skip = 0)
    {
        var order = Enumerable.Range(0, (int)Data.Count).ToArray();
        if (shuffle) new Random(Seeds.Mix(seed, epoch, 0x0dde)).Shuffle(order);
        for (int b = skip; b < BatchesPerEpoch; b++)
        {
            int start = b * BatchSize, count = Math.Min(BatchSize, order.Length - start);
            yield return new BatchIndices(epoch, b, order.AsSpan(start, count).ToArray().Select(i => (long)i).ToArray());
        }
    }

    /// <summary>
    /// Materialises a batch on the device: gathered from the split's copy there (<see cref="ImageDataset.On"/>; only the
    /// indices are uploaded, asynchronously), augmented in pixel space with its own seeded draw, then normalised.
    /// </summary>
    public Batch Load(BatchIndices indices)
    {
        var (images, labels) = Data.On(device);
        var index = Compute.Upload(indices.Indices, device);
        var pixels = Normalization.ToUnit(images.index_select(0, index), device);
        pixels = Augmentation.Apply(pixels, new Random(Seeds.Mix(seed, indices.Epoch, indices.Number, 0xa06)));
        return new Batch(Normalization.Standardize(pixels), labels.index_select(0, index));
    }

    /// <summary>Every example once, in order, without augmentation: for evaluation.</summary>
    public static IEnumerable<BatchIndices> Sequential(long count, int batchSize)
    {
        for (long start = 0, b = 0; start < count; start += batchSize, b++)
        {
            long end = Math.Min(count, start + batchSize);
            var idx = new long[end - start];
            for (long i = start; i < end; i++) idx[i - start] = i;
            yield return new BatchIndices(0, (int)b, idx);
        }
    }
}

/// <summary>Which examples form batch <paramref name="Number"/> of an epoch.</summary>
public sealed record BatchIndices(int Epoch, int Number, long[] Indices);
