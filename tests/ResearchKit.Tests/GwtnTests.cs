using ResearchKit.Data;
using ResearchKit.Methods;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Training;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ResearchKit.Tests;

/// <summary>Go Wide, Then Narrow (issue 27): the maps fold exactly, distillation matches its formula, stages resume, and
/// on real data imitation falls block by block and the student learns.</summary>
public class GwtnTests
{
    const string TeacherFolder = "gwtn-test-teacher";

    /// <summary>A layerwise student of width 8 and a random wide teacher of width 32 handed over in memory.</summary>
    static (Gwtn Student, Supervised Teacher) Pair(StudentImitation imitation = StudentImitation.Layerwise, int seed = 0)
    {
        var teacherConfig = SupervisedConfig.Wide() with { Cnn = SupervisedConfig.Wide().Cnn with { Width = 32 } };
        var teacher = (Supervised)Pretraining.Build(teacherConfig, 7);
        teacher.eval();
        foreach (var p in teacher.parameters()) p.requires_grad = false;
        var config = GwtnConfig.Tiny() with { Backbone = ConvNetConfig.Tiny() with { Width = 8 }, Teacher = TeacherFolder, TeacherWidth = 32, Imitation = imitation };
        var context = BuildContext.Pixels(config) with { Dependencies = new Dependencies().Use(TeacherFolder, teacher) };
        return ((Gwtn)Pretraining.Build(config, seed, context), teacher);
    }

    [Fact]
    public void Folding_the_maps_gives_the_student_exactly_what_the_imitating_network_and_the_teachers_head_compute()
    {
        var (student, _) = Pair();
        Compute.Seed(3);
        var images = rand(16, 1, 28, 28);
        // BatchNorm statistics away from their start, so the fold must carry them over too.
        student.train();
        using (no_grad()) for (int block = 0; block < 4; block++) student.ImitationLoss(block, rand(32, 1, 28, 28));
        student.eval();
        Tensor before, after;
        using (no_grad()) before = student.ImitatorLogits(images);
        using (no_grad()) Assert.False(student.call(images).allclose(before, rtol: 1e-3, atol: 1e-4), "the student matched before folding");
        student.Fold();
        using (no_grad()) after = student.call(images);
        Assert.True(after.allclose(before, rtol: 1e-4, atol: 1e-5), $"largest difference {(after - before).abs().max().item<float>()}");
        // The student is the plain thin CNN: its backbone has only its own blocks' weights.
        Assert.Equal(new ConvNet(ConvNetConfig.Tiny() with { Width = 8 }).parameters().Sum(p => p.numel()), student.Backbone.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void The_distillation_loss_matches_Hintons_formula_worked_in_doubles()
    {
        Compute.Seed(1);
        var studentLogits = randn(5, 4);
        var teacherLogits = randn(5, 4) * 3;
        var labels = tensor(new long[] { 0, 3, 1, 1, 2 });
        double t = 2.5, w = 0.7;
        double expected = 0;
        var s = studentLogits.data<float>().ToArray();
        var q = teacherLogits.data<float>().ToArray();
        double[] LogSoftmax(float[] x, int row, double temperature)
        {
            var z = Enumerable.Range(0, 4).Select(j => x[row * 4 + j] / temperature).ToArray();
            double log = Math.Log(z.Sum(Math.Exp));
            return z.Select(v => v - log).ToArray();
        }
        for (int i = 0; i < 5; i++)
        {
            var (ls, lt, hard) = (LogSoftmax(s, i, t), LogSoftmax(q, i, t), LogSoftmax(s, i, 1));
            double kl = Enumerable.Range(0, 4).Sum(j => Math.Exp(lt[j]) * (lt[j] - ls[j]));
            expected += ((1 - w) * -hard[labels[i].item<long>()] + w * t * t * kl) / 5;
        }
        double actual = Gwtn.DistillationLoss(studentLogits, teacherLogits, labels, t, w).item<float>();
        Assert.Equal(expected, actual, 1e-5);
    }

    [Theory]
    [InlineData(5)]    // inside stage 2 (the third block's window)
    [InlineData(13)]   // inside stage 3, after the fold
    public void A_run_interrupted_in_either_stage_resumes_to_the_uninterrupted_runs_losses_and_weights(long stopAt)
    {
        using var data = TestData.Random(64);
        var normalization = Normalization.Of(data);
        var config = new TrainConfig(Epochs: 2, BatchSize: 8, SupervisedConfig.Tiny().Optimizer, Seed: 2, CheckpointEvery: 3, LogEvery: 1);
        DataLoader Loader() => new(data, 8, normalization, seed: 2, device: CPU);
        var (whole, _) = Pair();
        var full = new Trainer(config).Fit(Loader(), whole);
        Assert.Equal(16, full.Steps);

        var dir = TestData.TempDir();
        var (first, _) = Pair();
        using var cancel = new CancellationTokenSource();
        Assert.Throws<OperationCanceledException>(() => new Trainer(config, dir).Fit(Loader(), first,
            new CallbackProgress<TrainProgress>(p => { if (p.Step == stopAt) cancel.Cancel(); }), cancel.Token));
        var (second, _) = Pair(seed: 9);   // another initialisation: the checkpoint must replace it
        var resumed = new Trainer(config, dir).Fit(Loader(), second);
        Assert.True(resumed.Resumed);
        foreach (var (phase, losses) in full.PhaseLosses!)
            Assert.Equal(losses, resumed.PhaseLosses![phase]);
        Assert.All(whole.state_dict().Zip(second.state_dict()), p => Assert.True(p.First.Value.Same(p.Second.Value), p.First.Key));
        // Four imitation windows of two steps each, then eight steps of fine-tuning; the run's loss is the last stage's.
        Assert.Equal([2, 2, 2, 2, 8], full.PhaseLosses!.Values.Select(l => l.Count));
        Assert.Equal(full.PhaseLosses["fine_tune"], full.Losses);
    }

    [Fact]
    public void On_Fashion_MNIST_each_blocks_imitation_error_falls_and_both_students_learn_from_a_trained_teacher()
    {
        using var data = TestData.FashionMnist(2048, 500);
        var normalization = Normalization.Of(data.Train);
        var teacherConfig = (SupervisedConfig)(SupervisedConfig.Wide() with { Cnn = SupervisedConfig.Wide().Cnn with { Width = 48 } })
            .ForData(data.Train, normalization);
        var teacher = (Supervised)Pretraining.Build(teacherConfig, 0, BuildContext.Of(teacherConfig, normalization));
        var recipe = teacherConfig.Optimizer with { BaseLearningRate = 0.4 };   // peak 0.1 at batch 64: 128 steps reach about 75%
        new Trainer(new TrainConfig(4, 64, recipe, Seed: 0)).Fit(new DataLoader(data.Train, 64, normalization, seed: 0), teacher);
        foreach (var p in teacher.parameters()) p.requires_grad = false;
        double Accuracy(nn.Module<Tensor, Tensor> model)
        {
            model.eval();
            using var _ = no_grad();
            var loader = new DataLoader(data.Test, 250, normalization, shuffle: false);
            double right = 0;
            foreach (var indices in loader.Epoch(0))
            {
                var batch = loader.Load(indices);
                right += model.call(batch.Images).argmax(1).eq(batch.Labels).sum().item<long>();
            }
            return right / data.Test.Count;
        }
        double teacherAccuracy = Accuracy(teacher);
        Assert.True(teacherAccuracy > 0.6, $"the teacher reached {teacherAccuracy:P1}");
        foreach (var imitation in new[] { StudentImitation.Layerwise, StudentImitation.Logits })
        {
            var config = (GwtnConfig)(GwtnConfig.Tiny() with { Backbone = ConvNetConfig.Tiny() with { Width = 16 }, Teacher = TeacherFolder, TeacherWidth = 48, Imitation = imitation })
                .ForInput(28, 1);
            // 12 steps per block here: Adam at 1e-2 rather than the default 1e-3, so that each block's window moves it.
            config = config with { Classes = 10, Optimizer = recipe, ImitationOptimizer = config.ImitationOptimizer with { BaseLearningRate = 1e-2 } };
            var context = BuildContext.Of(config, normalization) with { Dependencies = new Dependencies().Use(TeacherFolder, teacher) };
            var student = (Gwtn)Pretraining.Build(config, 0, context);
            var result = new Trainer(new TrainConfig(3, 64, config.Optimizer, Seed: 0, LogEvery: 1)).Fit(new DataLoader(data.Train, 64, normalization, seed: 0), student);
            if (imitation == StudentImitation.Layerwise)
                foreach (var block in Enumerable.Range(1, 4).Select(b => $"imitate_{b}"))
                {
                    var curve = result.PhaseLosses![block];
                    double start = curve.Take(3).Average(), end = curve.TakeLast(3).Average();
                    Assert.True(end < 0.8 * start, $"{block}: imitation error {start:F4} → {end:F4}");
                }
            // Far above chance (10%), not near the teacher: 96 steps in all, of which GWTN imitates for only 12 per block (its
            // folded start is far from the teacher's accuracy), while distillation learns from the labels throughout.
            double accuracy = Accuracy(student), floor = imitation == StudentImitation.Layerwise ? 0.25 : 0.5;
            Assert.True(accuracy > floor, $"{imitation}: the student reached {accuracy:P1} (teacher {teacherAccuracy:P1})");
            var learning = result.PhaseLosses![imitation == StudentImitation.Layerwise ? "fine_tune" : "loss"];
            Assert.True(learning.TakeLast(5).Average() < 0.8 * learning.Take(5).Average(), $"{imitation}: loss {learning[0]:F3} → {learning[^1]:F3}");
        }
    }

    [Fact]
    public void The_command_line_trains_a_wide_teacher_then_a_student_and_refuses_a_wrong_teacher_in_one_line()
    {
        var dir = TestData.TempDir();
        string teacher = Path.Combine(dir, "teacher"), student = Path.Combine(dir, "student");
        var (code, _, err) = TestData.Cli("pretrain", "--method", "supervised", "--preset", "wide", "--width", "32", "--epochs", "1", "--train-limit", "256", "--batch", "64", "--out", teacher);
        Assert.True(code == 0, err);
        (code, var output, err) = TestData.Cli("pretrain", "--method", "gwtn", "--teacher", teacher, "--width", "8", "--epochs", "1", "--train-limit", "256", "--batch", "64", "--out", student);
        Assert.True(code == 0, err);
        Assert.Contains("pretrained gwtn", output);
        var recorded = (GwtnConfig)Pretraining.ReadConfig(student).Method;
        Assert.Equal((32, teacher), (recorded.TeacherWidth, recorded.Teacher));
        (code, output, err) = TestData.Cli("evaluate", student, "--what", "classifier", "--n", "100");
        Assert.True(code == 0, err);
        Assert.Contains("test_accuracy", output);

        (code, _, err) = TestData.Cli("pretrain", "--method", "gwtn", "--teacher", teacher, "--blocks", "3", "--epochs", "1", "--train-limit", "64", "--out", Path.Combine(dir, "deep"));
        Assert.Equal(1, code);
        Assert.Equal($"error: gwtn: --teacher {teacher} has 4 blocks; the student has 3 (--blocks): the depths must match", err.Trim());
        (code, _, err) = TestData.Cli("pretrain", "--method", "gwtn", "--teacher", student, "--epochs", "1", "--train-limit", "64", "--out", Path.Combine(dir, "again"));
        Assert.Equal(1, code);
        Assert.Equal($"error: gwtn: --teacher {student}: expected a supervised CNN run (pretrain --method supervised --preset wide); got gwtn", err.Trim());
        (code, _, err) = TestData.Cli("pretrain", "--method", "gwtn", "--epochs", "1", "--train-limit", "64", "--out", Path.Combine(dir, "none"));
        Assert.Equal(1, code);
        Assert.Equal("error: gwtn: --teacher FOLDER is required (a run of pretrain --method supervised --preset wide)", err.Trim());
        // Like any backbone: every block probed, and the thin network fine-tuned, without the teacher's folder.
        Directory.Delete(teacher, recursive: true);
        (code, output, err) = TestData.Cli("probe", student, "--layer", "all", "--train-limit", "256", "--test-limit", "128", "--json");
        Assert.True(code == 0, err);
        Assert.Equal(4, output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Count(l => l.Contains("\"accuracy\"")));
        (code, output, err) = TestData.Cli("finetune", student, "--blocks", "all", "--epochs", "1", "--train-limit", "256", "--json");
        Assert.True(code == 0, err);
        Assert.Contains("\"accuracy\"", output);
    }
}
