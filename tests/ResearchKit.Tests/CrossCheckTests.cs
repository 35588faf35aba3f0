using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using ResearchKit.Models;
using ResearchKit.Tokenizers;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace ResearchKit.Tests;

/// <summary>
/// minGPT-style cross-check: given the same weights (exported from here) and the same masking noise, our MAE and
/// the independent PyTorch model in bench/mae_reference.py (run by bench/mae_crosscheck.py) must agree on every
/// encoder layer, the latent, the prediction and the loss. Needs Debian's python3-torch, which
/// .ci/setup --tests installs; without it the test fails rather than passing unchecked.
/// </summary>
public class CrossCheckTests(ITestOutputHelper output)
{
    const string Python = "/usr/bin/python3";
    const double Tolerance = 1e-4;

    [Theory]
    [InlineData(false, 4)]
    [InlineData(true, 2)]   // per-patch normalised targets change only the loss
    public void MAE_matches_the_PyTorch_reference_layer_by_layer(bool normPixLoss, int batch)
    {
        RequireTorch();
        Compute.Seed(0);
        var config = MaeConfig.Tiny(28, 1) with { Target = normPixLoss ? MaeTarget.NormPixel : MaeTarget.Pixel };
        var mae = new MaskedAutoencoder(config);
        mae.eval();
        using var _ = no_grad();
        // Fresh LayerNorms are ones and zeros and fresh biases zeros: perturb every parameter so a swapped,
        // ignored or mis-mapped norm or bias cannot agree by accident.
        foreach (var p in mae.parameters()) p.add_(randn_like(p) * 0.05);
        var e = config.Encoder;
        var images = randn(batch, e.Channels, e.ImageSize, e.ImageSize);
        var noise = rand(batch, e.Length);                              // B, L: MAE's masking noise
        var mask = Masking.FromNoise(noise, config.MaskRatio);          // the library's masking; the script builds its own from the noise
        Assert.Equal(12, mask.Keep.shape[1]);                           // ⌊49 · (1 − 0.75)⌋

        var hidden = new List<Tensor>();
        var latent = mae.ForwardEncoder(images, mask, hidden);
        var prediction = mae.ForwardDecoder(latent, mask);
        var loss = mae.ForwardLoss(images, prediction, mask.Mask);

        var dir = TestData.TempDir();
        var entries = new JsonArray();
        foreach (var (name, p) in mae.named_parameters()) Write(dir, entries, name, p);
        foreach (var (name, b) in mae.named_buffers()) Write(dir, entries, name, b);
        Write(dir, entries, "input.images", images);
        Write(dir, entries, "input.noise", noise);
        var manifest = new JsonObject
        {
            ["config"] = new JsonObject
            {
                ["image_size"] = e.ImageSize, ["channels"] = e.Channels, ["patch_size"] = e.PatchSize,
                ["dim"] = e.Dim, ["depth"] = e.Depth, ["heads"] = e.Heads,
                ["decoder_dim"] = config.DecoderDim, ["decoder_depth"] = config.DecoderDepth, ["decoder_heads"] = config.DecoderHeads,
                ["mask_ratio"] = config.MaskRatio, ["norm_pix_loss"] = config.Target == MaeTarget.NormPixel,
            },
            ["tensors"] = entries,
        };
        File.WriteAllText(Path.Combine(dir, "manifest.json"), manifest.ToJsonString());

        var script = Path.Combine(TestData.RepositoryRoot(), "bench", "mae_crosscheck.py");
        var (code, stdout, stderr) = TestData.RunProcess(Python, script, dir);
        Assert.True(code == 0, $"{script} exited {code}:\n{stderr}{stdout}");
        var reference = Read(Path.Combine(dir, "out"));

        var ours = new List<(string Name, Tensor Value)>
        {
            ("buffer.encoder.posEmbed", mae.named_buffers().Single(b => b.name == "encoder.posEmbed").buffer),
            ("buffer.decoderPos", mae.named_buffers().Single(b => b.name == "decoderPos").buffer),
            ("mask", mask.Mask),
        };
        ours.AddRange(hidden.Select((h, i) => ($"encoder.hidden.{i}", h)));
        ours.AddRange([("latent", latent), ("prediction", prediction), ("loss", loss.reshape(1))]);
        Assert.Equal(ours.Select(o => o.Name).Order(), reference.Keys.Order());

        var report = new List<string>();
        var failures = new List<string>();
        foreach (var (name, value) in ours)
        {
            var theirs = reference[name];
            Assert.True(value.shape.SequenceEqual(theirs.shape),
                $"{name}: ours [{string.Join(", ", value.shape)}], reference [{string.Join(", ", theirs.shape)}]");
            double largest = (value - theirs).abs().max().item<float>();
            report.Add($"{name,-24} {largest:E2}");
            if (!(largest <= Tolerance)) failures.Add($"{name}: largest |ours − reference| = {largest:E2} > {Tolerance:E0}");
        }
        output.WriteLine($"NormPixLoss={normPixLoss}, B={batch}: largest |ours − PyTorch| per tensor (loss ours {loss.item<float>():F6})");
        foreach (var line in report) output.WriteLine(line);
        Assert.True(failures.Count == 0, string.Join("\n", failures) + "\nall tensors:\n" + string.Join("\n", report));
    }

    static void RequireTorch()
    {
        const string hint = "this cross-check needs Debian's PyTorch: sudo bash .ci/setup --tests (or sudo apt-get install python3-torch libopenblas0-pthread)";
        Assert.True(File.Exists(Python), $"{Python} not found; {hint}");
        var (code, _, error) = TestData.RunProcess(Python, "-c", "import torch, numpy");
        Assert.True(code == 0, $"{Python} cannot import torch: {error.Trim()}\n{hint}");
    }

    /// <summary>Raw float32 in the machine's byte order: little-endian on every platform TorchSharp ships for.</summary>
    static void Write(string dir, JsonArray entries, string name, Tensor t)
    {
        var file = $"{entries.Count:D3}.f32";
        var values = t.detach().cpu().to_type(ScalarType.Float32).contiguous().data<float>().ToArray();
        File.WriteAllBytes(Path.Combine(dir, file), MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
        entries.Add(new JsonObject { ["name"] = name, ["shape"] = new JsonArray(t.shape.Select(s => (JsonNode)s).ToArray()), ["file"] = file });
    }

    static Dictionary<string, Tensor> Read(string dir)
    {
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json")))!;
        return manifest["tensors"]!.AsArray().ToDictionary(entry => (string)entry!["name"]!, entry =>
        {
            var bytes = File.ReadAllBytes(Path.Combine(dir, (string)entry!["file"]!));
            var shape = entry["shape"]!.AsArray().Select(s => (long)s!).ToArray();
            return tensor(MemoryMarshal.Cast<byte, float>(bytes).ToArray(), shape);
        });
    }
}
