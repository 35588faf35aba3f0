using System.CommandLine;
using System.Text.Json;
using ResearchKit.Methods;
using ResearchKit.Tokenizers;

namespace ResearchKit.Cli;

/// <summary>`researchkit tokenizer train|info`: BEiT's visual tokenizers, trained here (DALL-E's weights cannot be downloaded).</summary>
static class TokenizerCommand
{
    public static Command Create()
    {
        var command = new Command("tokenizer", "Train and inspect visual tokenizers (VQ-VAE or dVAE) that turn image patches into discrete codes");
        command.Subcommands.Add(Train());
        command.Subcommands.Add(Info());
        return command;
    }

    static Command Train()
    {
        var kind = new Option<string>("--kind") { Description = "vq (VQ-VAE, EMA codebook) or dvae (Gumbel-softmax, DALL-E's kind)", DefaultValueFactory = _ => "vq" };
        kind.AcceptOnlyFromAmong("vq", "dvae");
        var dataset = Commands.DatasetOption();
        var preset = new Option<string>("--preset") { Description = "tiny (patch 4, 256 codes) or paper (patch 16, 8192 codes)", DefaultValueFactory = _ => "tiny" };
        preset.AcceptOnlyFromAmong("tiny", "paper");
        var codes = new Option<int?>("--codes") { Description = "codebook size (default: the preset's)" };
        var epochs = new Option<int>("--epochs") { DefaultValueFactory = _ => 3 };
        var limit = new Option<long?>("--train-limit") { Description = "use only the first N training images" };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 0 };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => 64 };
        var outDir = new Option<string>("--out") { Description = "tokenizer folder (tokenizer.json, checkpoint.bin, reports.jsonl); rerun to resume", Required = true };
        var device = Commands.DeviceOption();
        var command = new Command("train", "Train a visual tokenizer; reports codebook usage and reconstruction PSNR on held-out images as it goes")
            { kind, dataset, preset, codes, epochs, limit, seed, batch, outDir, device };
        command.SetAction(r =>
        {
            Compute.Device = Compute.Choose(r.GetValue(device)!);
            var k = r.GetValue(kind) == "dvae" ? TokenizerKind.Dvae : TokenizerKind.Vq;
            var config = r.GetValue(preset) == "paper" ? new TokenizerConfig(k) : TokenizerConfig.Tiny(k);
            if (r.GetValue(codes) is { } n) config = config with { Codes = n };
            var options = new TokenizerTrainOptions(r.GetValue(dataset)!, r.GetValue(epochs), r.GetValue(limit), r.GetValue(seed), r.GetValue(batch));
            string dir = r.GetValue(outDir)!;
            using var progress = new TerminalProgress("tokenizer");
            using var stop = new GracefulStop();
            try
            {
                var (manifest, _) = TokenizerRun.Train(config, options, dir, stop.Track(progress), report =>
                {
                    Console.Error.WriteLine($"  {report}");
                    if (report.Warning is { } warning) Console.Error.WriteLine(warning);
                }, stop.Token);
                progress.Dispose();
                var final = manifest.Report!;
                Console.WriteLine($"trained a {manifest.Tokenizer.Kind.ToString().ToLowerInvariant()} tokenizer on {options.Dataset} in {manifest.TrainSeconds:F0} s: {final}; saved to {dir}");
                if (final.Warning is { } collapsed) { Console.Error.WriteLine(collapsed); return 3; }
                return 0;
            }
            catch (OperationCanceledException) when (stop.ExitCode != 0)
            {
                progress.Dispose();
                Console.Error.WriteLine($"stopped at step {stop.LastStep} of {stop.TotalSteps}; run the same command again to resume from {dir}");
                return stop.ExitCode;
            }
        });
        return command;
    }

    static Command Info()
    {
        var dir = new Argument<string>("folder") { Description = "tokenizer folder written by `tokenizer train`" };
        var json = new Option<bool>("--json") { Description = "the manifest's report as one JSON object" };
        var command = new Command("info", "Codebook usage, perplexity and reconstruction PSNR of a trained tokenizer") { dir, json };
        command.SetAction(r =>
        {
            var folder = r.GetValue(dir)!;
            var manifest = TokenizerRun.ReadManifest(folder);
            var report = manifest.Report ?? throw new ResearchKitException($"{Path.Combine(folder, TokenizerRun.ManifestFile)}: training has not finished (no report yet); rerun `tokenizer train` with the same --out to resume");
            var t = manifest.Tokenizer;
            if (r.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    kind = t.Kind.ToString().ToLowerInvariant(), codes = t.Codes, imageSize = t.ImageSize, patchSize = t.PatchSize, channels = t.Channels,
                    dataset = manifest.Train.Dataset, epochs = manifest.Train.Epochs, steps = report.Step,
                    usedCodes = report.UsedCodes, perplexity = report.Perplexity, deadShare = report.DeadShare, psnr = report.Psnr, collapsed = report.Collapsed,
                    trainSeconds = manifest.TrainSeconds,
                }));
            }
            else
            {
                Console.WriteLine($"{t.Kind.ToString().ToLowerInvariant()} tokenizer: {t.Codes} codes, {t.ImageSize}×{t.ImageSize}×{t.Channels} images in {t.PatchSize}×{t.PatchSize} patches " +
                    $"({t.GridSize}×{t.GridSize} tokens); trained {manifest.Train.Epochs} epochs on {manifest.Train.Dataset} in {manifest.TrainSeconds:F0} s");
                Console.WriteLine($"held-out ({report.Images} images): {report.UsedCodes} of {report.Codes} codes used ({report.UsedShare:P0}), perplexity {report.Perplexity:F1}, " +
                    $"dead {report.DeadShare:P0}, PSNR {report.Psnr:F1} dB");
            }
            if (report.Warning is { } warning) Console.Error.WriteLine(warning);
            return 0;
        });
        return command;
    }
}
