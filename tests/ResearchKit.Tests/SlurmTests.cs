using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using ResearchKit.Reporting;
using ResearchKit.Models;
using ResearchKit.Runs;
using ResearchKit.Training;

namespace ResearchKit.Tests;

/// <summary>
/// A real one-node Slurm cluster for the tests (issue 29): munged, slurmctld and slurmd on this machine, as root, with a
/// generated slurm.conf (proctrack/linuxproc, no cgroups, free ports, state in a temporary folder). Debian's slurm-wlm and
/// munge provide them (.ci/setup --tests installs both). <see cref="Unavailable"/> says why a cluster cannot run here.
/// </summary>
public sealed class SlurmCluster : IDisposable
{
    public string Folder { get; } = TestData.TempDir();
    public string? Unavailable { get; }
    readonly List<Process> daemons = [];

    public SlurmCluster()
    {
        Unavailable = Why();
        if (Unavailable is not null) return;
        StartMunge();
        int controller = FreePort(), node = FreePort();
        var host = Environment.MachineName;
        foreach (var sub in new[] { "state", "spool", "log" }) Directory.CreateDirectory(Path.Combine(Folder, sub));
        var config = Path.Combine(Folder, "slurm.conf");
        File.WriteAllLines(config,
        [
            "ClusterName=researchkit-test", $"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge",
            "AuthInfo=cred_expire=10",              // a requeued task waits this long (+ a little) before it starts again; default 120 s
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none", "ReturnToService=2",
            $"SlurmctldPort={controller}", $"SlurmdPort={node}",
            $"StateSaveLocation={Folder}/state", $"SlurmdSpoolDir={Folder}/spool",
            $"SlurmctldPidFile={Folder}/slurmctld.pid", $"SlurmdPidFile={Folder}/slurmd.pid",
            $"SlurmctldLogFile={Folder}/log/slurmctld.log", $"SlurmdLogFile={Folder}/log/slurmd.log",
            $"NodeName={host} CPUs={Environment.ProcessorCount} RealMemory=2000 State=UNKNOWN",
            $"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        ]);
        Environment.SetEnvironmentVariable("SLURM_CONF", config);   // sbatch, squeue, scancel here and in the jobs
        daemons.Add(Start("/usr/sbin/slurmctld", "-D", "-f", config));
        daemons.Add(Start("/usr/sbin/slurmd", "-D", "-f", config, "-N", host));
        var clock = Stopwatch.StartNew();
        while (Command("sinfo", "--noheader", "--format=%T").Output.Trim() != "idle")
        {
            if (clock.Elapsed > TimeSpan.FromSeconds(60) || daemons.Any(d => d.HasExited))
            {
                Unavailable = $"the one-node cluster did not come up in 60 s: {LogTail()}";
                return;
            }
            Thread.Sleep(500);
        }
    }

    static string? Why()
    {
        if (!OperatingSystem.IsLinux()) return "a one-node Slurm needs Linux";
        if (Environment.UserName != "root") return "the test cluster runs its daemons as root";
        foreach (var file in new[] { "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/sbatch", "/etc/munge/munge.key" })
            if (!File.Exists(file)) return $"{file} is missing: apt-get install slurm-wlm munge (.ci/setup --tests)";
        return null;
    }

    static void StartMunge()
    {
        if (Command("munge", "-n").Code == 0) return;   // a munged is already running
        Directory.CreateDirectory("/run/munge");
        Command("chown", "munge:munge", "/run/munge");
        Command("runuser", "-u", "munge", "--", "/usr/sbin/munged");
    }

    static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    static Process Start(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) start.ArgumentList.Add(a);
        var process = Process.Start(start)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    public static (int Code, string Output) Command(string file, params string[] args)
    {
        try
        {
            var (code, output, error) = TestData.RunProcess(file, args);
            return (code, output + error);
        }
        catch (System.ComponentModel.Win32Exception e) { return (-1, e.Message); }
    }

    public string LogTail() => string.Join(" | ", new[] { "slurmctld", "slurmd" }.SelectMany(d =>
    {
        var path = Path.Combine(Folder, "log", d + ".log");
        return File.Exists(path) ? File.ReadLines(path).TakeLast(3).Select(l => $"{d}: {l}") : [$"{d}: no log"];
    }));

    public void Dispose()
    {
        foreach (var d in daemons)
        {
            try { if (!d.HasExited) { d.Kill(entireProcessTree: true); d.WaitForExit(10_000); } } catch (InvalidOperationException) { }
            d.Dispose();
        }
        Environment.SetEnvironmentVariable("SLURM_CONF", null);
    }
}

/// <summary>Sweeps on the real one-node cluster: a job array fills the cache a notebook reads, and a task stopped with SIGTERM
/// checkpoints, is requeued and finishes.</summary>
public class SlurmTests(SlurmCluster cluster) : IClassFixture<SlurmCluster>
{
    /// <summary>A notebook's own record around its experiment, as the notebooks key their sweeps.</summary>
    public sealed record Arm(string Name, Experiment Experiment);

    void RequireCluster()
    {
        if (cluster.Unavailable is null) return;
        // CI installs Slurm and sets this: there, a cluster that cannot start is a failure, not a skip.
        Assert.False(Environment.GetEnvironmentVariable("RESEARCHKIT_REQUIRE_SLURM") == "1", $"Slurm: {cluster.Unavailable}");
        Skip.If(true, $"Slurm: {cluster.Unavailable}");
    }

    internal static Arm Supervised(int seed, long images, int epochs = 1) => new($"seed {seed}",
        new Experiment(SupervisedConfig.Tiny(), new PretrainOptions("fashion-mnist", epochs, images, seed, BatchSize: 64),
            new EvaluationOptions(ProbeTrain: 256, ProbeTest: 256, FineTuneEpochs: 0, PretextImages: 64)));

    [SkippableFact]
    public void A_sweep_runs_as_a_job_array_into_the_cache_the_notebook_reads()
    {
        RequireCluster();
        var results = Path.Combine(TestData.TempDir(), "results");
        var arms = Enumerable.Range(0, 4).Select(seed => Supervised(seed, 256)).ToList();
        var manifest = SweepManifest.Create(results, arms, a => a.Name);
        Assert.Equal(manifest.Path, SweepManifest.Create(results, arms, a => a.Name).Path);   // the same sweep, the same manifest
        Assert.Equal(arms.Select(Sweep.Key), SweepManifest.Read(manifest.Path).Tasks.Select(t => t.Key));

        var executor = new SlurmExecutor(new SlurmOptions(MaxParallel: 2, PollSeconds: 1));
        var reports = new List<SweepProgress>();
        executor.Execute(manifest, new CallbackProgress<SweepProgress>(reports.Add), default);
        Assert.Contains("4/4 tasks done", reports[^1].Description);

        // The notebook's own call now finds every result: nothing is computed in its process.
        var entries = Sweep.Run<Arm, ExperimentResult>(results, arms, (_, _) => throw new InvalidOperationException("computed in the notebook's process"));
        Assert.Equal(4, entries.Count);
        Assert.All(entries, e => Assert.True(double.IsFinite(e.Result.FinalLoss) && e.Result.BestProbe > 0.3, $"{e.Config.Name}: probe {e.Result.BestProbe}"));
        Assert.Equal(4, entries.Select(e => e.Result.FinalLoss).Distinct().Count());   // four seeds, four runs
        Assert.All(SweepTaskStatus.Of(manifest), s => Assert.Equal("done", s.State));
        for (int i = 0; i < 4; i++)
        {
            var log = File.ReadAllText(manifest.LogPath(i));
            Assert.Contains($"task {i} on", log);
            Assert.Contains("1 threads", log);   // --cpus-per-task 1 → RESEARCHKIT_THREADS
            Assert.Contains($"task {i} done", log);
        }
        Assert.Null(executor.Submit(manifest));   // nothing left to submit
        var (code, output, error) = TestData.Cli("sweep", "status", manifest.Path);
        Assert.True(code == 0, error);
        Assert.Contains("4 done of 4", output);
    }

    [SkippableFact]
    public void A_task_stopped_with_SIGTERM_checkpoints_is_requeued_and_finishes()
    {
        RequireCluster();
        var results = Path.Combine(TestData.TempDir(), "results");
        // 96 steps. Metrics are logged at steps 1, 10 and 20, so the stop comes at about step 21 (measured on an idle
        // machine), leaving 75 steps of margin on a loaded one. At 256 steps this test took 85 s of CI.
        var arms = new List<Arm> { Supervised(7, 3072, epochs: 2) };
        var manifest = SweepManifest.Create(results, arms, a => a.Name);
        var executor = new SlurmExecutor(new SlurmOptions(PollSeconds: 1));
        var (job, tasks) = executor.Submit(manifest)!.Value;
        Assert.Equal(1, tasks);

        // Wait until training has logged a few steps, then send what `scancel --signal=TERM` sends.
        var metrics = Path.Combine(manifest.WorkFolder(manifest.Tasks[0]), "pretrain", "metrics.jsonl");
        var clock = Stopwatch.StartNew();
        while (!File.Exists(metrics) || File.ReadLines(metrics).Count() < 3)
        {
            Assert.True(clock.Elapsed < TimeSpan.FromMinutes(2), $"the task logged no steps in 2 minutes: {SweepTaskStatus.LogTail(manifest.LogPath(0), 5).LastOrDefault()} {cluster.LogTail()}");
            Thread.Sleep(200);
        }
        Assert.Equal("running", SweepTaskStatus.Of(manifest)[0].State);
        var (code, output) = SlurmCluster.Command("scancel", "--signal=TERM", $"{job}_0");
        Assert.True(code == 0, output);

        executor.Wait(manifest, job, null, default);
        var log = File.ReadAllText(manifest.LogPath(0));
        Assert.Contains("stopped at a checkpoint; requeueing", log);
        Assert.Contains("restart 1", log);
        Assert.Contains("task 0 done", log);
        // The second start resumed: the log says where the first stopped, and the metrics run once through every step.
        Assert.Matches(@"stopped at step \d+ of 96", log);
        var steps = File.ReadLines(metrics).Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt64()).ToList();
        Assert.Equal(steps.Order(), steps);
        Assert.Equal(steps.Distinct().Count(), steps.Count);
        Assert.Equal(96, steps[^1]);
        Assert.Equal("done", SweepTaskStatus.Of(manifest)[0].State);
    }

    [SkippableFact]
    public void A_failed_task_is_reported_with_its_log_and_only_failed_tasks_are_resubmitted()
    {
        RequireCluster();
        var results = Path.Combine(TestData.TempDir(), "results");
        var good = Supervised(3, 128);
        var broken = new Arm("broken", good.Experiment with { Pretrain = good.Experiment.Pretrain with { Dataset = "image-folder:/no/such/folder" } });
        var manifest = SweepManifest.Create(results, [good, broken], a => a.Name);
        var executor = new SlurmExecutor(new SlurmOptions(PollSeconds: 1));
        var failure = Assert.Throws<ResearchKitException>(() => executor.Execute(manifest, null, default)).Message;
        Assert.Contains("1 of 2 tasks ended without a result", failure);
        Assert.Contains("task 1 (broken)", failure);
        Assert.Contains("/no/such/folder", failure);   // the task's own one-line error, from its state and log
        Assert.Equal(["done", "failed"], SweepTaskStatus.Of(manifest).Select(s => s.State));

        var (job, tasks) = executor.Submit(manifest)!.Value;   // the finished task is not run again
        Assert.Equal(1, tasks);
        Assert.Contains("#SBATCH --array=1\n", File.ReadAllText(Path.Combine(manifest.Folder, "job.sh")));
        Assert.Throws<ResearchKitException>(() => executor.Wait(manifest, job, null, default));
        Assert.Equal(2, File.ReadAllLines(Path.Combine(manifest.Folder, "jobs.txt")).Length);
    }
}
