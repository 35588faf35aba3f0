"""Kernel start-up and round-trip figures, measured with Jupyter's own client. Prints one JSON object.

Usage: ./researchkit kernel install --prefix /tmp/rk && JUPYTER_PATH=/tmp/rk/share/jupyter /usr/bin/python3 bench/kernel_startup.py researchkit-csharp
  ready_s           kernel process start → first kernel_info reply
  first_tensor_s    first cell that builds a tensor (the worker's TorchSharp load, Roslyn's first compile)
  round_trip_ms     median of 50 trivial cells (`1`), execute_request → execute_reply
Targets (issue 10): ready < 3 s, round trip < 50 ms on a 2-core CPU machine.
"""
import json, statistics, sys, time

from jupyter_client import KernelManager

name = sys.argv[1] if len(sys.argv) > 1 else "researchkit-csharp"
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

first_tensor = timed("torch.ones(2, 3).sum().item<float>()")
timed("1")
trips = [timed("1") * 1000 for _ in range(50)]
kc.stop_channels()
km.shutdown_kernel(now=True)
print(json.dumps({"ready_s": round(ready, 3), "first_tensor_s": round(first_tensor, 3),
                  "round_trip_ms": round(statistics.median(trips), 1), "round_trip_p90_ms": round(sorted(trips)[44], 1)}))
