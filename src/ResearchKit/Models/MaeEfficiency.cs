using ResearchKit.Methods;
using ResearchKit.Runs;

namespace ResearchKit.Models;

/// <summary>One measured MAE configuration: its patch grid, which encoder, the FLOPs per image, the step time and the encoder's share of it.</summary>
/// <param name="MaskTokensInEncoder">false: MAE's encoder on the visible patches only; true: the encoder also processes a mask token at every removed patch.</param>
/// <param name="Timing">The whole training step: encoder, decoder, loss, backward and AdamW.</param>
/// <param name="EncoderTiming">The encoder alone, forward and backward (mask sampling included), on the same batch.</param>
public sealed record EfficiencyPoint(int PatchSize, int Patches, bool MaskTokensInEncoder, long EncoderTokens, double EncoderGflops, double TotalGflops,
    StepTiming Timing, StepTiming EncoderTiming)
{
    /// <summary>What the step spends outside the encoder (decoder, loss, AdamW), which leaving mask tokens out does not shrink.</summary>
    public double RestMs => Math.Max(0, Timing.MeanMs - EncoderTiming.MeanMs);
}

/// <summary>
/// MAE's efficiency claims measured on this machine (MAE §3, §4.1 "mask token"; Table 1c: the encoder without mask
/// tokens needs 3.3× fewer FLOPs and trains ≥ 3× faster): at each patch size, one training step with the visible-only
/// encoder and one with mask tokens in the encoder, at the configuration's mask ratio, timed on random images.
/// </summary>
/// <param name="Points">Each patch size (most patches first) with both encoders.</param>
public sealed record MaeEfficiencyReport(int ImageSize, double MaskRatio, int BatchSize, IReadOnlyList<EfficiencyPoint> Points)
{
    EfficiencyPoint Point(int patchSize, bool maskTokens) => Points.First(p => p.PatchSize == patchSize && p.MaskTokensInEncoder == maskTokens);

    /// <summary>How much faster a step is without mask tokens in the encoder: (step time with) / (step time without).</summary>
    public double Speedup(int patchSize) => Point(patchSize, true).Timing.MeanMs / Point(patchSize, false).Timing.MeanMs;

    /// <summary>The same ratio for the encoder alone, forward and backward: the part of the step whose work the visible-only encoder cuts.</summary>
    public double EncoderSpeedup(int patchSize) => Point(patchSize, true).EncoderTiming.MeanMs / Point(patchSize, false).EncoderTiming.MeanMs;

    /// <summary>The FLOPs saved by leaving mask tokens out of the encoder: total FLOPs with / without (encoder only with <paramref name="encoderOnly"/>).</summary>
    public double FlopsRatio(int patchSize, bool encoderOnly = false) => encoderOnly
        ? Point(patchSize, true).EncoderGflops / Point(patchSize, false).EncoderGflops
        : Point(patchSize, true).TotalGflops / Point(patchSize, false).TotalGflops;

    /// <summary>How step time grows with the number of patches: time at <paramref name="patchSize"/> over time at <paramref name="reference"/>, for one encoder.</summary>
    public double Growth(int patchSize, int reference, bool maskTokens) => Point(patchSize, maskTokens).Timing.MeanMs / Point(reference, maskTokens).Timing.MeanMs;

    /// <summary>One line per patch size: patches, both step times, the speed-up and the FLOPs ratio, and the same for the encoder alone.</summary>
    public IEnumerable<string> Lines()
    {
        var sizes = Points.Select(p => p.PatchSize).Distinct().ToList();
        int reference = sizes.Contains(4) ? 4 : sizes[^1];
        foreach (var size in sizes)
        {
            var (visible, masked) = (Point(size, false), Point(size, true));
            yield return $"patch {size} ({visible.Patches} patches): visible-only {visible.Timing.MeanMs:F0} ms/step ({visible.Timing.ImagesPerSecond:F0} img/s, {visible.TotalGflops:F3} GFLOPs/img), " +
                $"mask tokens in encoder {masked.Timing.MeanMs:F0} ms/step ({masked.Timing.ImagesPerSecond:F0} img/s, {masked.TotalGflops:F3} GFLOPs/img): " +
                $"{Speedup(size):F2}× faster without mask tokens (FLOPs {FlopsRatio(size):F2}×); " +
                $"the encoder alone {visible.EncoderTiming.MeanMs:F0} against {masked.EncoderTiming.MeanMs:F0} ms: {EncoderSpeedup(size):F2}× (encoder FLOPs {FlopsRatio(size, encoderOnly: true):F2}×), " +
                $"the rest of the step (decoder, loss, AdamW) {visible.RestMs:F0} and {masked.RestMs:F0} ms; " +
                $"step time vs {Point(reference, false).Patches} patches: {Growth(size, reference, false):F2}× visible-only, {Growth(size, reference, true):F2}× mask tokens";
        }
    }
}

public static class MaeEfficiency
{
    /// <summary>The study as the method offers it: `bench --method mae --study efficiency [--patch-sizes 7,4,2]`.</summary>
    public static MethodStudy Study { get; } = new("efficiency",
        "the visible-only encoder against mask tokens in the encoder at each patch size, with FLOPs and ratios (MAE §3, Table 1c)",
        [new CapabilityOption("--patch-sizes", "patch sizes to time, comma-separated (each divides --image-size)", "7,4,2")],
        request =>
        {
            var config = (MaeConfig)request.Config.ForInput(request.ImageSize, request.Channels);
            var report = Measure(config, request.Options.PositiveIntegers("--patch-sizes"), request.BatchSize, request.Steps, request.Warmup, request.Status);
            return new StudyReport(report.Lines().ToList(), new
            {
                report.ImageSize, report.MaskRatio, report.BatchSize, report.Points,
                Ratios = report.Points.Select(p => p.PatchSize).Distinct().Select(size => new
                {
                    PatchSize = size, Speedup = Math.Round(report.Speedup(size), 3), FlopsRatio = Math.Round(report.FlopsRatio(size), 3),
                    EncoderSpeedup = Math.Round(report.EncoderSpeedup(size), 3), EncoderFlopsRatio = Math.Round(report.FlopsRatio(size, encoderOnly: true), 3),
                }),
            });
        });

    /// <summary>
    /// Times both encoders at each patch size (each must divide the image size): the whole training step, then the
    /// encoder's forward and backward alone, so the report can say how much of the step the saving applies to.
    /// <paramref name="config"/> gives the model and mask ratio; its encoder's image size is the one measured.
    /// </summary>
    public static MaeEfficiencyReport Measure(MaeConfig config, IReadOnlyList<int> patchSizes, int batchSize, int steps, int warmup, Action<string>? status = null)
    {
        var e = config.Encoder;
        foreach (var size in patchSizes)
            if (size < 1 || e.ImageSize % size != 0)
                throw new ResearchKitException($"efficiency: patch size {size} must divide the image size {e.ImageSize}");
        var points = new List<EfficiencyPoint>();
        foreach (var size in patchSizes.OrderBy(s => s))
            foreach (var maskTokens in new[] { false, true })
            {
                var variant = config with { Encoder = e with { PatchSize = size }, MaskTokenInEncoder = maskTokens };
                variant.Validate();
                var flops = variant.Flops();
                status?.Invoke($"patch {size} ({variant.Encoder.Length} patches), {(maskTokens ? "mask tokens in the encoder" : "visible-only encoder")}");
                using var timer = new StepTimer(variant, batchSize, e.ImageSize, e.Channels);
                var step = timer.Measure(steps, warmup);
                var mae = (MaskedAutoencoder)timer.Model;
                var encoderAlone = timer.Measure((batch, generator) =>
                {
                    timer.ZeroGrad();   // the optimizer's own zeroing: Module.zero_grad would drop its flat gradients
                    var images = batch.Images;
                    var sum = mae.ForwardEncoder(images, mae.SampleMask(images.shape[0], generator, images.device)).sum();
                    sum.backward();
                }, steps, warmup);
                points.Add(new EfficiencyPoint(size, variant.Encoder.Length, maskTokens, flops.EncoderTokens, flops.Encoder / 1e9, flops.Total / 1e9,
                    step, encoderAlone));
            }
        return new MaeEfficiencyReport(e.ImageSize, config.MaskRatio, batchSize, points);
    }
}
