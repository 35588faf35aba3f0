using System.Text.Json.Serialization;
using ResearchKit.Data;
using ResearchKit.Evaluation;
using ResearchKit.Methods;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace ResearchKit.Runs;

/// <summary>
/// How a pre-trained backbone is measured in the ablation notebooks: a linear probe and kNN on every layer (fit
/// on <see cref="ProbeTrain"/> training images, scored on <see cref="ProbeTest"/> test images), the method's own
/// evaluations (<see cref="MethodInfo.Evaluations"/>) on <see cref="PretextImages"/> labelled test images, then
/// fine-tuning (<see cref="FineTuneBlocks"/> last blocks, all by default; the method's default objective) on
/// <see cref="FineTuneTrain"/> images. FineTuneEpochs = 0 skips fine-tuning.
/// </summary>
/// <param name="ExtraData">Extra data sets by role for the evaluations that need them ("ood" → "mnist"); null: none, and
/// evaluations that need one are skipped. Left out of the JSON when null, so cached results keep their keys.</param>
/// <param name="Evaluations">The method evaluations to run by name (those on request included); null: every one not on
/// request whose extra data are given. Left out of the JSON when null.</param>
public sealed record EvaluationOptions(long ProbeTrain = 10_000, long ProbeTest = 10_000, int FineTuneEpochs = 2,
    long FineTuneTrain = 10_000, int FineTuneBlocks = int.MaxValue, int PretextImages = 256,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] Dictionary<string, string>? ExtraData = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string[]? Evaluations = null);

/// <summary>One point of an ablation: any method's configuration, pre-training options, evaluation. Pretrain.Epochs = 0 measures the untrained network (the floors).</summary>
public sealed record Experiment(MethodConfig Method, PretrainOptions Pretrain, EvaluationOptions Evaluation);

/// <summary>What one ablation point measured (accuracies in 0..1; FineTune is NaN when skipped). <see cref="Pretext"/> holds
/// the scalars of every evaluation the method declares, by name (rotation_accuracy, reconstruction_psnr, ece…).</summary>
public sealed record ExperimentResult(
    double[] ProbeByLayer, double[] KnnByLayer, int BestLayer, double BestProbe, double FineTune,
    double FinalLoss, Dictionary<string, double> Pretext, double PretrainSeconds, double EvaluationSeconds);

/// <summary>Floor: a linear probe on standardised raw pixels, with the same protocol as the layer probes.</summary>
public sealed record RawPixelFloor(string Dataset, long ProbeTrain, long ProbeTest);

/// <summary>
/// One point of partial fine-tuning (MAE §4.3, Fig. 9): the backbone of <paramref name="Source"/>'s pre-trained model
/// with its last <paramref name="Blocks"/> blocks and a new linear head trained (0: the head alone on frozen features,
/// a linear probe by fine-tuning; int.MaxValue: every block). A source with Pretrain.Epochs = 0 is the untrained
/// network: fine-tuning every block of it is training from scratch with the same budget.
/// </summary>
/// <param name="Objective">The fine-tuning objective by name (<see cref="MethodInfo.Objective"/>); null: the method's default.</param>
/// <param name="ObjectiveOptions">Its options by name ("--lambda" → "0.5"); null: its defaults.</param>
/// <param name="BaseLearningRate">Fine-tuning's base learning rate (per 256 images); null: <see cref="FineTuneConfig.BaseLearningRate"/>'s default.</param>
/// <param name="Dataset">Transfer: fine-tune on this data set instead of the source's, its images brought to the source's
/// input shape (<see cref="InputAdapter"/>: grey ↔ RGB, resize); null: the source's data set.</param>
/// <remarks>Unset (null) settings are left out of the JSON, so sweep results cached before they existed keep their keys.</remarks>
public sealed record FineTuneExperiment(Experiment Source, int Blocks, int Epochs, long TrainLimit, long TestLimit, int Seed = 0,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? BaseLearningRate = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Objective = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] Dictionary<string, string>? ObjectiveOptions = null,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Dataset = null);

/// <summary>What one fine-tuning point measured: test accuracy (0..1), its last training losses' mean, the parameters it updated;
/// for a transfer, how the target's images were adapted ("rgb->grey, 32x32->28x28", or "none").</summary>
public sealed record FineTuneOutcome(double Accuracy, double FinalLoss, long TrainableParameters, double Seconds,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Adapter = null);

/// <summary>An experiment evaluated after <paramref name="Step"/> steps of its pre-training (0: at initialisation).</summary>
/// <param name="TrainLoss">Mean main pre-training loss of the last 20 steps before that step (NaN at step 0).</param>
public sealed record StepResult(long Step, double TrainLoss, ExperimentResult Result);

/// <summary>An experiment evaluated at the end of epoch <paramref name="Epoch"/> of its pre-training (0: at initialisation).</summary>
/// <param name="TrainLoss">Mean pre-training loss of the last 20 steps before that epoch's end (NaN at epoch 0).</param>
public sealed record EpochResult(int Epoch, double TrainLoss, ExperimentResult Result);

/// <summary>Runs experiments end to end in a work folder (pre-training resumes from it) and reads their run folders.</summary>
public static class Experiments
{
    /// <summary>The pre-training run folder inside an experiment's work folder.</summary>
    public static string PretrainFolder(string workFolder) => Path.Combine(workFolder, "pretrain");

    /// <summary>The data an experiment needs: enough training images for pre-training, probe and fine-tuning; enough test images for probe and pretext metrics.</summary>
    static DatasetSplits LoadData(Experiment experiment)
    {
        var (_, p, e) = experiment;
        long trainNeeded = Math.Max(p.TrainLimit ?? long.MaxValue, Math.Max(e.ProbeTrain, e.FineTuneTrain));
        return DatasetCatalog.Load(p.Dataset, trainNeeded == long.MaxValue ? null : trainNeeded, Math.Max(e.ProbeTest, e.PretextImages));
    }

    public static ExperimentResult Run(Experiment experiment, string workFolder, IProgress<TrainProgress>? progress = null, Action<string>? status = null,
        CancellationToken cancel = default)
    {
        using var data = LoadData(experiment);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (model, normalization, losses) = Pretrained(experiment, data, workFolder, progress, status, cancel);
        double pretrainSeconds = clock.Elapsed.TotalSeconds;
        clock.Restart();
        var result = Evaluate(model, normalization, data, experiment, progress, status, cancel,
            experiment.Pretrain.Epochs > 0 ? (PretrainFolder(workFolder), "final") : null);
        model.Module.Dispose();   // free its native memory now, not whenever finalizers run: a sweep builds many models
        return result with { FinalLoss = Math.Round(MeanOfLast(losses, losses.Count), 4), PretrainSeconds = Math.Round(pretrainSeconds, 1), EvaluationSeconds = Math.Round(clock.Elapsed.TotalSeconds, 1) };
    }

    /// <summary>
    /// One pre-training run evaluated along the way (MAE Fig. 7's question, training length, without one run per length):
    /// pre-trains (or resumes) keeping a snapshot at every epoch end, then evaluates the model at each epoch of
    /// <paramref name="epochs"/> (0 = this run's own initial weights) with the experiment's evaluation. Note that every
    /// snapshot but the last is taken mid-schedule: its learning rate has not decayed to zero as a run of that length would.
    /// </summary>
    public static List<EpochResult> RunAlongTraining(Experiment experiment, IReadOnlyList<int> epochs, string workFolder,
        IProgress<TrainProgress>? progress = null, Action<string>? status = null, CancellationToken cancel = default)
    {
        var p = experiment.Pretrain;
        if (p.Epochs < 1) throw new ResearchKitException("training length: the experiment must pre-train for at least one epoch");
        if (epochs.Count == 0 || epochs.Any(e => e < 0 || e > p.Epochs))
            throw new ResearchKitException($"training length: epochs to evaluate must be in 0 … {p.Epochs}; got {string.Join(", ", epochs)}");
        var folder = PretrainFolder(workFolder);
        return AlongSnapshots(experiment, workFolder, [new EpochSnapshots(folder)], (losses, perEpoch) => epochs.Select(epoch =>
            new SnapshotPoint($"after {epoch} epochs", $"epoch-{epoch}", epoch * perEpoch,
                () => Pretraining.Load(folder, epoch).Model)).ToList(), progress, status, cancel)
            .Select((r, i) => new EpochResult(epochs[i], r.TrainLoss, r.Result)).ToList();
    }

    /// <summary>
    /// One pre-training run evaluated every <paramref name="every"/> steps (SSGAN's forgetting curve, Chen et al. 2019
    /// Fig. 2: a probe of the discriminator every few thousand generator steps): pre-trains (or resumes) keeping a snapshot
    /// every <paramref name="every"/> steps (<see cref="StepSnapshots"/>), then evaluates the initial weights (step 0) and every
    /// snapshot with the experiment's evaluation, and the final weights when the run is not a whole number of intervals. The
    /// optimizer state is not part of what is evaluated, so a constant schedule (the GAN recipes') makes each snapshot what a
    /// run of that length would have been.
    /// </summary>
    public static List<StepResult> RunAlongSteps(Experiment experiment, long every, string workFolder,
        IProgress<TrainProgress>? progress = null, Action<string>? status = null, CancellationToken cancel = default)
    {
        if (experiment.Pretrain.Epochs < 1) throw new ResearchKitException("training curve: the experiment must pre-train for at least one epoch");
        if (every < 1) throw new ResearchKitException($"training curve: the snapshot interval must be at least 1 step; got {every}");
        var folder = PretrainFolder(workFolder);
        return AlongSnapshots(experiment, workFolder, [new StepSnapshots(folder, every)], (losses, _) =>
        {
            var points = Enumerable.Range(0, (int)(losses.Count / every) + 1).Select(i => i * every).Select(step =>
                new SnapshotPoint($"after {step} steps", $"step-{step}", step, () => Pretraining.Load(folder, step: step).Model)).ToList();
            if (losses.Count % every != 0)   // the end of a run that is not a whole number of intervals: its final weights
                points.Add(new SnapshotPoint($"after {losses.Count} steps (final)", "final", losses.Count, () => Pretraining.Load(folder).Model));
            return points;
        }, progress, status, cancel);
    }

    /// <summary>A point of a run to evaluate: what to say, its weights' name in evaluations.json, steps done, its loader
    /// (not called at step 0: the run's initial weights are rebuilt).</summary>
    sealed record SnapshotPoint(string Description, string Weights, long Step, Func<IPretrainModel> Load);

    /// <summary>Pre-trains with <paramref name="keepers"/>, then evaluates each point <paramref name="points"/> lists for the
    /// run's losses and steps per epoch.</summary>
    static List<StepResult> AlongSnapshots(Experiment experiment, string workFolder, IEnumerable<ITrainerCallback> keepers,
        Func<IReadOnlyList<double>, int, List<SnapshotPoint>> points, IProgress<TrainProgress>? progress, Action<string>? status,
        CancellationToken cancel)
    {
        var p = experiment.Pretrain;
        using var data = LoadData(experiment);
        var folder = PretrainFolder(workFolder);
        var (model, _, losses) = Pretrained(experiment, data, workFolder, progress, status, cancel, keepers);
        model.Module.Dispose();
        var config = Pretraining.ReadConfig(folder);
        var results = new List<StepResult>();
        foreach (var point in points(losses, losses.Count / p.Epochs))
        {
            status?.Invoke($"evaluating the model {point.Description}");
            // Step 0: this run's initial weights (the trainer builds them the same way); later points: their snapshots.
            var snapshot = point.Step == 0 ? Pretraining.Build(config.Method, p.Seed, Pretraining.Context(config)) : point.Load();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var result = Evaluate(snapshot, config.Normalization, data, experiment, progress, status, cancel, (folder, point.Weights));
            snapshot.Module.Dispose();
            results.Add(new StepResult(point.Step, point.Step == 0 ? double.NaN : Math.Round(MeanOfLast(losses, (int)point.Step), 4),
                result with { EvaluationSeconds = Math.Round(clock.Elapsed.TotalSeconds, 1) }));
        }
        return results;
    }

    /// <summary>
    /// Partial fine-tuning of a pre-trained experiment (see <see cref="FineTuneExperiment"/>). The source is pre-trained in
    /// <paramref name="sourceWorkFolder"/> if it is not yet (usually it is: the work folder of the same experiment in a sweep).
    /// </summary>
    public static FineTuneOutcome FineTune(FineTuneExperiment experiment, string sourceWorkFolder, IProgress<TrainProgress>? progress = null,
        Action<string>? status = null, CancellationToken cancel = default)
    {
        var (source, blocks, epochs, trainLimit, testLimit, seed, learningRate, objective, objectiveOptions, target) = experiment;
        if (blocks < 0) throw new ResearchKitException($"fine-tuning: the number of trainable blocks must be ≥ 0; got {blocks}");
        var loss = MethodRegistry.Of(source.Method).Objective(objective, objectiveOptions);
        // The source's data pre-train it (when its work folder holds no finished run); a transfer fine-tunes on the target's.
        long trainNeeded = target is null ? Math.Max(source.Pretrain.TrainLimit ?? long.MaxValue, trainLimit) : source.Pretrain.TrainLimit ?? long.MaxValue;
        using var data = DatasetCatalog.Load(source.Pretrain.Dataset, trainNeeded == long.MaxValue ? null : trainNeeded, target is null ? testLimit : 1);
        var (model, normalization, _) = Pretrained(source, data, sourceWorkFolder, progress, status, cancel);
        using var loaded = target is null ? null : DatasetCatalog.Load(target, trainLimit, testLimit);
        // The source was sized from its data set's images (Pretraining.Sized): the target's are brought to that shape.
        var adapter = loaded is null ? null : InputAdapter.For(loaded.Train, data.Train.Channels, data.Train.Height);
        using var adapted = adapter is null || adapter.IsIdentity ? null : adapter.Apply(loaded!);
        var tuneData = adapted ?? loaded ?? data;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        status?.Invoke((blocks >= model.Backbone.Depth ? "fine-tuning every block" : $"fine-tuning the last {blocks} of {model.Backbone.Depth} blocks") +
            (target is null ? "" : $" on {target}"));
        var recipe = new FineTuneConfig(epochs, blocks, Seed: seed, TrainLimit: trainLimit);
        recipe = recipe with { BaseLearningRate = learningRate ?? recipe.BaseLearningRate };
        var result = FineTuning.Run(model.Backbone, tuneData, normalization, recipe, progress, cancel, loss);
        model.Module.Dispose();
        return new FineTuneOutcome(Math.Round(result.Accuracy, 4), Math.Round(MeanOfLast(result.Training.Losses, result.Training.Losses.Count), 4),
            result.TrainableParameters, Math.Round(clock.Elapsed.TotalSeconds, 1), adapter?.Description);
    }

    /// <summary>Mean of the (up to) 20 values before index <paramref name="end"/>: a loss at a point of training, smoothed.</summary>
    static double MeanOfLast(IReadOnlyList<double> values, int end)
    {
        int start = Math.Max(0, end - 20);
        return end > start ? values.Skip(start).Take(end - start).Average() : double.NaN;
    }

    /// <summary>The experiment's model: pre-trained (or resumed) in its work folder, or built untrained for Epochs = 0; with its normalisation and loss curve.</summary>
    static (IPretrainModel Model, Normalization Normalization, IReadOnlyList<double> Losses) Pretrained(Experiment experiment, DatasetSplits data,
        string workFolder, IProgress<TrainProgress>? progress, Action<string>? status, CancellationToken cancel, IEnumerable<ITrainerCallback>? callbacks = null)
    {
        var (method, p, _) = experiment;
        var split = data.Train.Take(p.TrainLimit);
        try
        {
            if (p.Epochs > 0)
            {
                status?.Invoke($"pre-training {MethodRegistry.Of(method).Name}, {p.Epochs} epochs");
                var run = Pretraining.Run(method, p, split, PretrainFolder(workFolder), progress, cancel, callbacks);
                return (run.Model, run.Config.Normalization, run.Result.Losses);
            }
            var normalization = Normalization.Of(split);
            var sized = Pretraining.Sized(method, split, normalization);
            return (Pretraining.Build(sized, p.Seed, BuildContext.Of(sized, normalization)), normalization, []);
        }
        finally { data.Train.DisposeIfCopy(split); }
    }

    /// <summary>
    /// Probes every layer, runs the method's evaluations and fine-tunes, as <paramref name="experiment"/>'s evaluation says
    /// (times and loss left to the caller). The evaluations' outcomes are also stored in <paramref name="store"/>'s run folder
    /// under its weights' name, when one is given.
    /// </summary>
    static ExperimentResult Evaluate(IPretrainModel model, Normalization normalization, DatasetSplits data, Experiment experiment,
        IProgress<TrainProgress>? progress, Action<string>? status, CancellationToken cancel, (string Folder, string Weights)? store = null)
    {
        var (method, p, e) = experiment;
        var info = MethodRegistry.Of(method);
        model.Module.eval();
        status?.Invoke("probing every layer");
        var probeTrain = data.Train.Take(e.ProbeTrain);
        using var trainFeatures = LayerFeatures.Extract(model.Backbone, probeTrain, normalization);
        data.Train.DisposeIfCopy(probeTrain);
        var probeTest = data.Test.Take(e.ProbeTest);
        using var testFeatures = LayerFeatures.Extract(model.Backbone, probeTest, normalization);
        data.Test.DisposeIfCopy(probeTest);
        var probes = LinearProbe.PerLayer(trainFeatures, testFeatures, data.Train.ClassCount);

        status?.Invoke($"evaluating ({string.Join(", ", info.Evaluations.Select(v => v.Name))})");
        List<EvaluationOutcome> outcomes;
        using (var extra = ExtraData.Load(e.ExtraData, (data.Test.Height, data.Test.Channels), e.PretextImages))
        using (var scope = NewDisposeScope())
        using (var generator = new Generator((ulong)p.Seed))
        {
            long n = Math.Min(e.PretextImages, data.Test.Count);
            var request = new EvaluationRequest(model, normalization, normalization.Apply(data.Test.Images[..(int)n], Compute.Device),
                data.Test.Labels[..(int)n].to(Compute.Device), extra.Sets, generator) { References = extra.References };
            outcomes = MethodEvaluations.Run(info, request, e.Evaluations);
            if (store is { } target)
                MethodEvaluations.Store(target.Folder, target.Weights, outcomes, EvaluationContext(n, p.Seed, extra));
        }
        var pretext = MethodEvaluations.Scalars(outcomes);

        double fineTune = double.NaN;
        if (e.FineTuneEpochs > 0)
        {
            status?.Invoke("fine-tuning");
            fineTune = FineTuning.Run(model.Backbone, data, normalization,
                new FineTuneConfig(e.FineTuneEpochs, e.FineTuneBlocks, Seed: p.Seed, TrainLimit: e.FineTuneTrain), progress, cancel,
                info.Objective(null)).Accuracy;
        }
        int best = probes.MaxBy(r => r.Accuracy)!.Layer;
        return new ExperimentResult(
            probes.Select(r => Math.Round(r.Accuracy, 4)).ToArray(), probes.Select(r => Math.Round(r.KnnAccuracy ?? double.NaN, 4)).ToArray(),
            best, Math.Round(probes[best].Accuracy, 4), Math.Round(fineTune, 4), double.NaN, pretext, 0, 0);
    }

    /// <summary>What a stored evaluation was measured on: test images, seed, extra data sets.</summary>
    public static System.Text.Json.Nodes.JsonObject EvaluationContext(long images, int seed, ExtraData extra) => new()
    {
        ["testImages"] = images,
        ["seed"] = seed,
        ["extra"] = System.Text.Json.JsonSerializer.SerializeToNode(extra.Descriptions),
    };

    /// <summary>Test accuracy (0..1) of a linear probe on raw pixels, standardised per pixel: the floor a learned feature must beat.</summary>
    public static double RawPixelProbe(RawPixelFloor floor)
    {
        using var data = DatasetCatalog.Load(floor.Dataset, floor.ProbeTrain, floor.ProbeTest);
        using var scope = NewDisposeScope();
        var normalization = Normalization.Of(data.Train);
        Tensor Flat(ImageDataset split) => normalization.Apply(split.Images, CPU).flatten(1);
        return Math.Round(LinearProbe.Fit(Flat(data.Train), data.Train.Labels, Flat(data.Test), data.Test.Labels, data.Train.ClassCount), 4);
    }

    /// <summary>Reloads the pre-trained model of an experiment's work folder.</summary>
    public static (RunConfig Config, IPretrainModel Model) Load(string workFolder) => Pretraining.Load(PretrainFolder(workFolder));

    /// <summary>The logged pre-training steps of an experiment's work folder.</summary>
    public static List<StepMetrics> Metrics(string workFolder) => Trainer.ReadMetrics(PretrainFolder(workFolder));
}
