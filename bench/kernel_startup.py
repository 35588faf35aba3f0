"""Kernel start-up and round-trip figures, measured with Jupyter's own client. Prints one JSON object.

Usage: ./researchkit kernel install --prefix /tmp/rk && JUPYTER_PATH=/tmp/rk/share/jupyter /usr/bin/python3 bench/kernel_startup.py researchkit-csharp
       /usr/bin/python3 bench/kernel_startup.py KERNEL --peer   (a kernel without TorchSharp, e.g. .NET Interactive's:
       first_tensor_s is then null)
  ready_s           kernel process start → first kernel_info reply
  first_tensor_s    first cell that builds a tensor (the worker's TorchSharp load, Roslyn's first compile)
  round_trip_ms     median of 50 trivial cells (`1`), execute_request → execute_reply
Targets: ready < 0.6 s and a round trip at or below .NET Interactive's (issue 23; measure both on one idle machine).
"""
import json, statistics, sys, time

from jupyter_client import KernelManager

name = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "researchkit-csharp"
peer = "--peer" in sys.argv
km = KernelManager(kernel_name=name)
started = time.monotonic()
km.start_kernel()
kc = km.client()
kc.start_channels()
kc.kernel_info(reply=True, timeout=60)
ready = time.monotonic() - started


def timed(code):
    t = time.monotonic()
    reply = kc.execute(code, reply=True, timeout=120)
    if reply["content"]["status"] != "ok":
        sys.exit(f"{code!r} failed: {reply['content']}")
    return time.monotonic() - t

first_tensor = None if peer else round(timed("torch.ones(2, 3).sum().item<float>()"), 3)
timed("1")
trips = [timed("1") * 1000 for _ in range(50)]
kc.stop_channels()
km.shutdown_kernel(now=True)
print(json.dumps({"ready_s": round(ready, 3), "first_tensor_s": first_tensor,
                  "round_trip_ms": round(statistics.median(trips), 1), "round_trip_p90_ms": round(sorted(trips)[44], 1)}))
