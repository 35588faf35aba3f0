using static TorchSharp.torch;

namespace ResearchKit.Training;

/// <summary>
/// libtorch's intra-op thread count, from RESEARCHKIT_THREADS: unset → libtorch's default (one per core); N → N
/// threads; "auto" → the cores other processes leave idle, re-chosen at the start and after every epoch.
/// Why "auto" exists: libtorch's OpenMP workers spin at barriers and a tiny model runs many small parallel regions,
/// so one descheduled worker stalls every op — beside one busy process, 2 threads fell to 144 img/s while 1 thread
/// kept 295 (PLATFORM.md). Why it is not the default: results depend on the thread count in the last bits
/// (measured: the tiny MAE's loss at step 5 differs by 1e-7 between 1 and 2 threads), so a run whose thread count
/// follows the machine's load is not bit-reproducible. The default instead pairs a fixed count with
/// OMP_WAIT_POLICY=PASSIVE (.config/researchkit.env), which lets idle workers sleep and recovers most of the loss
/// under contention at no cost when alone. `researchkit bench --contention` measures all three.
/// </summary>
public sealed class ThreadPolicy
{
    readonly int cores = Environment.ProcessorCount;
    // libtorch's count before any policy changed it: the ceiling, so a later run can climb back after contention.
    static readonly int processDefault = Math.Max(get_num_threads(), 1);
    readonly int ceiling;
    readonly bool adaptive;
    (long Busy, long Total, long Own)? last;

    /// <param name="adaptive">null: as RESEARCHKIT_THREADS says; true: adapt whatever it says (the benchmark's comparison).</param>
    public ThreadPolicy(bool? adaptive = null)
    {
        var setting = Environment.GetEnvironmentVariable("RESEARCHKIT_THREADS")?.Trim();
        if (adaptive is null && int.TryParse(setting, out var n))
        {
            if (n < 1) throw new ResearchKitException($"RESEARCHKIT_THREADS must be a positive number or 'auto'; got '{setting}'");
            Set(Checked(n, "RESEARCHKIT_THREADS"));
        }
        else if (adaptive is null && !string.IsNullOrEmpty(setting) && setting != "auto")
            throw new ResearchKitException($"RESEARCHKIT_THREADS must be a positive number or 'auto'; got '{setting}'");
        this.adaptive = (adaptive ?? setting == "auto") && File.Exists("/proc/stat") && File.Exists("/proc/self/stat");
        ceiling = adaptive is null && int.TryParse(setting, out var fixedCount) ? fixedCount : processDefault;
    }

    public bool Adaptive => adaptive;

    /// <summary>Cores used by other processes since the last call (or over a short sample on the first call).</summary>
    public double OthersLoad()
    {
        if (!File.Exists("/proc/stat")) return 0;
        if (last is null)
        {
            last = Sample();
            Thread.Sleep(200);
        }
        var now = Sample();
        var (busy, total, own) = (now.Busy - last.Value.Busy, now.Total - last.Value.Total, now.Own - last.Value.Own);
        last = now;
        return total <= 0 ? 0 : Math.Max(0, (double)(busy - own) / total * cores);
    }

    /// <summary>Sets and returns the thread count: the cores left idle by others, between 1 and the default count.</summary>
    public int Choose()
    {
        if (!adaptive) return get_num_threads();
        int threads = Math.Clamp((int)Math.Round(cores - OthersLoad()), 1, ceiling);
        Set(threads);
        return threads;
    }

    /// <summary>
    /// <paramref name="threads"/> when it is between 1 and the cores there are, else a one-line error naming
    /// <paramref name="setting"/>: more threads than cores only contend (1,000 threads never finished a benchmark step).
    /// </summary>
    public static int Checked(int threads, string setting)
    {
        int cores = Environment.ProcessorCount;
        if (threads < 1 || threads > cores)
            throw new ResearchKitException($"{setting}: expected 1 … {cores} threads (the cores this machine has); got {threads}");
        return threads;
    }

    /// <summary>
    /// Sets libtorch's intra-op thread count for this thread, and does nothing when the count is already that. Why not
    /// torch.set_num_threads: libtorch's set_num_threads also switches MKL to a fixed thread count with its dynamic
    /// adjustment off (mkl_set_num_threads_local, mkl_set_dynamic(false)), and once it has been called every thread that
    /// enters a parallel region repeats that. MKL then splits even tiny matrix products across threads: the tiny MAE step
    /// ran 1.65× slower after set_num_threads(2) on a machine whose default was already 2, and restoring MKL's two
    /// settings brought it back (measured, environment.md). OpenMP's count and MKL's thread-local count are set instead;
    /// libtorch reads OpenMP's. Where the OpenMP or MKL entry points cannot be found, it falls back to set_num_threads.
    /// </summary>
    public static void Set(int threads)
    {
        if (threads < 1) throw new ResearchKitException($"thread count must be positive; got {threads}");
        if (threads == get_num_threads()) return;
        if (NativeThreads.OmpSetNumThreads is { } omp)
        {
            omp(threads);
            NativeThreads.MklSetNumThreadsLocal?.Invoke(threads == processDefault ? 0 : threads);   // 0: MKL follows OpenMP again
        }
        else set_num_threads(threads);
    }

    // /proc/stat's first line: aggregate jiffies (user nice system idle iowait irq softirq steal …); /proc/self/stat
    // fields 14–15: this process's user and system jiffies. Both count in USER_HZ, so they compare directly.
    static (long Busy, long Total, long Own) Sample()
    {
        var cpu = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Take(8).Select(long.Parse).ToArray();
        long total = cpu.Sum(), idle = cpu[3] + cpu[4];
        var self = File.ReadAllText("/proc/self/stat");
        var fields = self[(self.LastIndexOf(')') + 2)..].Split(' ');   // after "pid (comm) "; field 3 is fields[0]
        long own = long.Parse(fields[11]) + long.Parse(fields[12]);
        return (total - idle, total, own);
    }
}

/// <summary>OpenMP's and MKL's thread setters in the libraries libtorch loaded (found by path in /proc/self/maps), or null.</summary>
static class NativeThreads
{
    [System.Runtime.InteropServices.UnmanagedFunctionPointer(System.Runtime.InteropServices.CallingConvention.Cdecl)]
    public delegate void IntSetter(int value);

    public static readonly IntSetter? OmpSetNumThreads = Find(name => name.StartsWith("libgomp") || name.StartsWith("libiomp"), "omp_set_num_threads");
    public static readonly IntSetter? MklSetNumThreadsLocal = Find(name => name == "libtorch_cpu.so", "MKL_Set_Num_Threads_Local");

    static IntSetter? Find(Func<string, bool> library, string symbol)
    {
        try
        {
            _ = get_num_threads();   // libtorch is loaded
            if (!File.Exists("/proc/self/maps")) return null;
            var path = File.ReadLines("/proc/self/maps").Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries).LastOrDefault())
                .FirstOrDefault(p => p is not null && p.StartsWith('/') && library(Path.GetFileName(p)));
            if (path is null || !System.Runtime.InteropServices.NativeLibrary.TryLoad(path, out var handle)) return null;
            return System.Runtime.InteropServices.NativeLibrary.TryGetExport(handle, symbol, out var address)
                ? System.Runtime.InteropServices.Marshal.GetDelegateForFunctionPointer<IntSetter>(address) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DllNotFoundException) { return null; }
    }
}
