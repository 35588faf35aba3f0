using ResearchKit.Data;
using ResearchKit.Reporting;
using ResearchKit.Models;
using ResearchKit.Runs;

namespace ResearchKit.Tests;

/// <summary><see cref="Sweep.Use"/> changes where every later sweep of the process trains: its tests run alone.</summary>
[CollectionDefinition("sweep executor", DisableParallelization = true)]
public class SweepExecutorCollection;

/// <summary>A notebook's sweep as a manifest (issue 29), run by `researchkit sweep run` into the cache the notebook reads.</summary>
[Collection("sweep executor")]
public class SweepExecutorTests
{
    [Fact]
    public void A_sweep_sent_to_the_manifest_executor_stops_with_its_manifest_and_sweep_run_fills_the_cache_it_reads()
    {
        var results = Path.Combine(TestData.TempDir(), "results");
        var arms = Enumerable.Range(0, 2).Select(seed => SlurmTests.Supervised(seed, 128)).ToList();
        SweepSubmittedException stopped;
        Sweep.Use(SweepExecutor.ManifestOnly);
        try
        {
            stopped = Assert.Throws<SweepSubmittedException>(() => Sweep.Run<SlurmTests.Arm, ExperimentResult>(results, arms,
                (_, _) => throw new InvalidOperationException("computed in the notebook's process")));
        }
        finally { Sweep.Use(SweepExecutor.Local); }
        var path = Directory.GetFiles(Path.Combine(results, "sweeps"), "*.jsonl").Single();
        Assert.Contains(path, stopped.Message);
        Assert.Contains("sweep run", stopped.Message);

        var (code, output, error) = TestData.Cli("sweep", "status", path);
        Assert.True(code == 0, error);
        Assert.Contains("2 pending of 2", output);
        (code, output, error) = TestData.Cli("sweep", "run", path, "--executor", "local");
        Assert.True(code == 0, error);
        Assert.Contains("2 done of 2", output);

        var entries = Sweep.Run<SlurmTests.Arm, ExperimentResult>(results, arms, (_, _) => throw new InvalidOperationException("computed again"));
        Assert.All(entries, e => Assert.True(e.Result.BestProbe > 0.2 && double.IsFinite(e.Result.FinalLoss)));
        // What `sweep run` computed is what the notebook computes in its own process.
        var here = Experiments.Run(arms[1].Experiment, Path.Combine(TestData.TempDir(), "here"));
        Assert.Equal(here.FinalLoss, entries[1].Result.FinalLoss, 4);
        Assert.Equal(here.BestProbe, entries[1].Result.BestProbe, 2);
    }
}

public class SweepManifestTests
{
    [Fact]
    public void A_task_waiting_for_another_process_lock_is_reported_running_by_that_process_and_claims_nothing_itself()
    {
        var results = Path.Combine(TestData.TempDir(), "results");
        var manifest = SweepManifest.Create(results, [SlurmTests.Supervised(0, 128)], a => a.Name);
        var task = manifest.Tasks[0];
        Directory.CreateDirectory(manifest.WorkFolder(task));
        var other = RunLock.TryAcquire(manifest.WorkFolder(task))!;   // another process running the same configuration
        var runner = Task.Run(() => SweepTasks.Run(manifest, 0));
        try
        {
            // Deserialising the task and reaching the lock takes milliseconds; the old code wrote "running" before it.
            Thread.Sleep(1500);
            Assert.False(runner.IsCompleted, runner.Exception?.Message);
            Assert.Null(SweepTaskState.Read(manifest, 0));
            Assert.Equal("running", SweepTaskStatus.Of(manifest)[0].State);   // from the lock the other process holds
        }
        finally { other.Dispose(); }
        Assert.True(runner.Wait(TimeSpan.FromMinutes(5)), "the task did not finish after the lock was released");
        Assert.Equal("done", SweepTaskState.Read(manifest, 0)!.State);
        Assert.Equal("done", SweepTaskStatus.Of(manifest)[0].State);
    }

    [Fact]
    public void Bad_manifests_options_and_configurations_are_one_line_errors()
    {
        var results = Path.Combine(TestData.TempDir(), "results");
        var manifest = SweepManifest.Create(results, [SlurmTests.Supervised(0, 128), SlurmTests.Supervised(1, 128)], a => a.Name);
        var lines = File.ReadAllLines(manifest.Path);
        Assert.Equal(3, lines.Length);   // a header and one line per task

        string Broken(string name, IEnumerable<string> content)
        {
            var path = Path.Combine(Path.GetDirectoryName(manifest.Path)!, name);
            File.WriteAllLines(path, content);
            return Assert.Throws<DataFormatException>(() => SweepManifest.Read(path)).Message;
        }
        Assert.Contains("announces 2 tasks but 1 follow", Broken("short.jsonl", lines[..2]));
        Assert.Contains("line 2 is not a JSON object", Broken("garbled.jsonl", [lines[0], "{\"index\": 0,", lines[2]]));
        Assert.Contains("line 3: the configuration hashes to", Broken("edited.jsonl", [lines[0], lines[1], lines[2].Replace("\"seed\":1", "\"seed\":5")]));
        Assert.Contains("no such sweep manifest", Assert.Throws<ResearchKitException>(() => SweepManifest.Read(manifest.Path + ".missing")).Message);
        Assert.Contains("--index: ", Assert.Throws<ResearchKitException>(() => manifest.Task(2)).Message);

        // Only library tasks, or records that wrap exactly one, can leave the notebook's process.
        var refused = Assert.Throws<ResearchKitException>(() => SweepManifest.Create(results, [("a", 1)], _ => "tuple")).Message;
        Assert.Contains("is not a task a cluster can run", refused);
        Assert.Contains("Experiment, RawPixelFloor", refused);
        // A record around an experiment whose sweep computes something else (ssgan-forgetting's snapshots along training):
        // running the plain experiment on a node would fill the cache with the wrong kind of result.
        var along = Assert.Throws<ResearchKitException>(() => SweepManifest.Create(results, [SlurmTests.Supervised(0, 128)], a => a.Name, typeof(List<StepResult>))).Message;
        Assert.Contains("its sweep computes List<StepResult>, while the experiment task gives ExperimentResult", along);
        Assert.Equal(2, SweepManifest.Create(results, [SlurmTests.Supervised(0, 128), SlurmTests.Supervised(1, 128)], a => a.Name, typeof(ExperimentResult)).Tasks.Count);
        Assert.Contains("\"kubernetes\"", Assert.Throws<ResearchKitException>(() => SweepExecutor.Parse("kubernetes")).Message);

        var options = Path.Combine(TestData.TempDir(), "slurm.json");
        File.WriteAllText(options, """{ "partition": "gpu", "gpus": 1, "cpusPerTask": 4, "time": "2-00:00:00" }""");
        var loaded = SlurmOptions.Load(options);
        Assert.Equal(("gpu", 1, 4, "2-00:00:00"), (loaded.Partition, loaded.Gpus, loaded.CpusPerTask, loaded.Time));
        var script = new SlurmExecutor(loaded with { MaxParallel = 3 }).Script(manifest, [0, 1]);
        foreach (var line in new[] { "#SBATCH --array=0,1%3", "#SBATCH --partition=gpu", "#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=4",
                     "#SBATCH --time=2-00:00:00", "#SBATCH --signal=B:TERM@60", "#SBATCH --requeue" })
            Assert.Contains(line + "\n", script);
        Assert.Contains($"sweep task '{manifest.Path}' --index \"$SLURM_ARRAY_TASK_ID\"", script);
        File.WriteAllText(options, """{ "partitoin": "gpu" }""");
        Assert.Contains("partitoin", Assert.Throws<DataFormatException>(() => SlurmOptions.Load(options)).Message);
        File.WriteAllText(options, """{ "time": "forever" }""");
        Assert.Contains("time must be Slurm's", Assert.Throws<ResearchKitException>(() => SlurmOptions.Load(options)).Message);

        var (code, _, error) = TestData.Cli("sweep", "task", manifest.Path, "--index", "9");
        Assert.NotEqual(0, code);
        Assert.Contains("--index: ", error);
        Assert.DoesNotContain("   at ", error);
    }
}
