"""Kernel start-up and round-trip figures, measured with Jupyter's own client. Prints one JSON object.

Usage: ./researchkit kernel install --prefix /tmp/rk && JUPYTER_PATH=/tmp/rk/share/jupyter /usr/bin/python3 bench/kernel_startup.py researchkit-csharp
       /usr/bin/python3 bench/kernel_startup.py KERNEL --peer   (a kernel without TorchSharp, e.g. .NET Interactive's:
       first_tensor_s is then null)
       --starts N   kernel starts to time (default 10)
  client_setup_s    jupyter_client's one-time work in this process before it can start any kernel: finding the
                    kernelspec imports ~450 modules (0.25-0.3 s on 2 cores). A front end pays it once, when its server
                    starts; it is timed apart so that it does not count as the first kernel's start-up.
  ready_s           start_kernel → first kernel_info reply, median over the starts (also _min, _max). It includes
                    libzmq's reconnect wait: the client connects before the kernel has bound its ports, is refused,
                    and retries every 100-200 ms (reconnect interval plus random jitter), so the earlier a kernel
                    binds, the fewer waits it pays.
  first_tensor_s    first cell that builds a tensor (the worker's TorchSharp load, Roslyn's first compile)
  round_trip_ms     median of 50 trivial cells (`1`), execute_request → execute_reply
Targets: ready < 0.6 s and a round trip at or below .NET Interactive's (issue 23; measure both on one idle machine).
"""
import json, statistics, sys, time

from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

args = sys.argv[1:]
name = args[0] if args and not args[0].startswith("--") else "researchkit-csharp"
peer = "--peer" in args
starts = int(args[args.index("--starts") + 1]) if "--starts" in args else 10
if starts < 1:
    sys.exit("--starts: expected a count of at least 1")

setup = time.monotonic()
KernelSpecManager().get_kernel_spec(name)
client_setup = time.monotonic() - setup


def start():
    """A started kernel, its client and the seconds from start_kernel to the first kernel_info reply."""
    km = KernelManager(kernel_name=name)
    km.kernel_spec   # resolved before the clock starts, as a running server has it
    started = time.monotonic()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.kernel_info(reply=True, timeout=60)
    return km, kc, time.monotonic() - started


def stop(km, kc):
    kc.stop_channels()
    km.shutdown_kernel(now=True)


readies = []
for i in range(starts):
    km, kc, ready = start()
    readies.append(ready)
    if i < starts - 1:
        stop(km, kc)
        time.sleep(0.5)   # the stopped kernel's processes exit before the next start


def timed(code):
    t = time.monotonic()
    reply = kc.execute(code, reply=True, timeout=120)
    if reply["content"]["status"] != "ok":
        sys.exit(f"{code!r} failed: {reply['content']}")
    return time.monotonic() - t

first_tensor = None if peer else round(timed("torch.ones(2, 3).sum().item<float>()"), 3)
timed("1")
trips = [timed("1") * 1000 for _ in range(50)]
stop(km, kc)
print(json.dumps({"client_setup_s": round(client_setup, 3), "starts": starts,
                  "ready_s": round(statistics.median(readies), 3), "ready_min_s": round(min(readies), 3),
                  "ready_max_s": round(max(readies), 3), "first_tensor_s": first_tensor,
                  "round_trip_ms": round(statistics.median(trips), 1), "round_trip_p90_ms": round(sorted(trips)[44], 1)}))
