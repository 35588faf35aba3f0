"""Drives the F# kernelspec (`kernel install --language fsharp`) with Jupyter's client; prints one JSON object of findings.

Usage: JUPYTER_PATH=<dir with kernels/NAME> python3 polyglot_kernel.py NAME FOLDER
FOLDER holds numbered.ipynb, whose cells have the ids "first" and "third" (positions 1 and 3); the kernel starts there.
The C# test (PolyglotTests) asserts on the findings; this script only observes.
"""
import json, sys

from jupyter_client import KernelManager

name, folder = sys.argv[1], sys.argv[2]
found = {}
km = KernelManager(kernel_name=name)
km.start_kernel(cwd=folder)
kc = km.client()
kc.start_channels()
kc.wait_for_ready(timeout=120)


def run(code, cell_id=None, timeout=180):
    """Executes code (with the cell id front ends put in the request's metadata); returns (reply, iopub messages)."""
    msg = kc.session.msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                              "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    if cell_id:
        msg["metadata"]["cellId"] = cell_id
    kc.shell_channel.send(msg)
    outputs = []
    while True:
        m = kc.get_iopub_msg(timeout=timeout)
        if m["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            continue
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            break
        outputs.append((m["msg_type"], m["content"]))
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply["content"], outputs


def results(outputs):
    return [c["data"]["text/plain"] for t, c in outputs if t in ("execute_result", "display_data") and "text/plain" in c.get("data", {})]


try:
    info = kc.kernel_info(reply=True, timeout=30)["content"]
    found["language"] = info["language_info"]["name"]
    _, out = run("let squares = [ for i in 1 .. 4 -> i * i ]\nList.sum squares")
    found["fsharp"] = results(out)
    _, out = run("#!csharp\n#!share --from fsharp squares\nvar fromCSharp = squares.Length * 10;\nfromCSharp")
    found["csharp_from_fsharp"] = results(out)
    _, out = run("#!share --from csharp fromCSharp\nfromCSharp + 2")
    found["fsharp_from_csharp"] = results(out)
    reply, _ = run("let broken = 1 +", cell_id="third")
    found["error_in_saved_cell"] = reply.get("evalue")
    reply, _ = run("let alsoBroken = 1 +", cell_id="not-saved-yet")
    found["error_in_unsaved_cell"] = reply.get("evalue")
except Exception as e:  # reported, not raised: the test shows what happened
    found["exception"] = f"{type(e).__name__}: {e}"
finally:
    kc.stop_channels()
    km.shutdown_kernel(now=True)
print(json.dumps(found))
