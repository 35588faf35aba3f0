"""Drives the ResearchKit kernel with Jupyter's own client (jupyter_client) and prints one JSON object of findings.

Usage: JUPYTER_PATH=<dir with kernels/NAME> python3 kernel_protocol.py NAME
The C# test (KernelTests) asserts on the findings; this script only observes, it does not judge.
"""
import json, os, sys, time, uuid

from jupyter_client import KernelManager
from jupyter_client.session import Session

name = sys.argv[1]
found = {}
km = KernelManager(kernel_name=name)
started = time.monotonic()
km.start_kernel()
kc = km.client()
kc.start_channels()
kc.wait_for_ready(timeout=120)
found["ready_seconds"] = time.monotonic() - started


def run(code, timeout=120, **kwargs):
    """Executes code; returns (reply content, [(msg_type, content)] of its iopub messages up to idle)."""
    msg_id = kc.execute(code, **kwargs)
    return collect(msg_id, timeout)


def collect(msg_id, timeout=120):
    outputs = []
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        outputs.append((msg["msg_type"], msg["content"]))
    return shell_reply(msg_id, timeout), outputs


def shell_reply(msg_id, timeout=120):
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


def text(outputs, kind="execute_result"):
    return [c["data"]["text/plain"] for t, c in outputs if t == kind and "data" in c]


import traceback

def scenario():
    info = kc.kernel_info(reply=True, timeout=30)["content"]
    found["kernel_info"] = {"protocol_version": info["protocol_version"], "language": info["language_info"]["name"]}
    control_info = kc.session.msg("kernel_info_request", {})
    kc.control_channel.send(control_info)
    found["kernel_info_on_control"] = kc.get_control_msg(timeout=30)["msg_type"]

    reply, outputs = run("var x = 41;\nConsole.WriteLine(\"hello\");")
    found["first_cell"] = {"status": reply["status"], "count": reply["execution_count"],
                           "stream": [c["text"] for t, c in outputs if t == "stream"],
                           "execute_input": [t for t, _ in outputs].count("execute_input")}
    reply, outputs = run("x + 1")
    found["second_cell"] = {"count": reply["execution_count"], "result": text(outputs)}

    started = time.monotonic()
    for _ in range(20):
        run("1")
    found["trivial_round_trip_ms"] = (time.monotonic() - started) / 20 * 1000

    reply, outputs = run("var h = display(\"first\");\nh.Update(\"second\");")
    displays = [c for t, c in outputs if t == "display_data"]
    updates = [c for t, c in outputs if t == "update_display_data"]
    found["display_update"] = {
        "display_ids": [c.get("transient", {}).get("display_id") for c in displays],
        "update_ids": [c.get("transient", {}).get("display_id") for c in updates],
        "updated_text": [c["data"]["text/plain"] for c in updates]}

    # stop_on_error: a failing cell aborts the request queued behind it.
    first = kc.execute("throw new InvalidOperationException(\"boom\");")
    second = kc.execute("x + 100")
    r1, o1 = collect(first)
    r2 = shell_reply(second)
    found["error"] = {"status": r1["status"], "ename": r1.get("ename"), "evalue": r1.get("evalue"),
                      "iopub_error": [c["ename"] for t, c in o1 if t == "error"], "queued_status": r2["status"]}

    # Shift+Enter right after an error reply: nothing sent after the reply is aborted (only what was queued before it).
    failing = kc.execute("throw new InvalidOperationException(\"again\");")
    shell_reply(failing)
    soon = [kc.execute("x + 2") for _ in range(2)]
    found["after_error_reply"] = [shell_reply(m)["status"] for m in soon]

    reply, _ = run("var list = new List<int>();")
    msg_id = kc.complete("list.Ad", 7)
    completion = shell_reply(msg_id)
    found["complete_members"] = {"matches": completion["matches"], "start": completion["cursor_start"], "end": completion["cursor_end"]}
    msg_id = kc.complete("lis", 3)
    found["complete_names"] = shell_reply(msg_id)["matches"]
    msg_id = kc.inspect("Charts.Ablation", 10)
    inspected = shell_reply(msg_id)
    found["inspect"] = {"found": inspected["found"], "text": inspected["data"].get("text/plain", "")}
    found["is_complete"] = {
        "open_loop": shell_reply(kc.is_complete("for (int i = 0; i < 3; i++) {"))["status"],
        "expression": shell_reply(kc.is_complete("1 + 1"))["status"]}
    found["history"] = shell_reply(kc.history())["status"]
    comm_info = kc.session.msg("comm_info_request", {})
    kc.shell_channel.send(comm_info)
    found["comm_info"] = shell_reply(comm_info["header"]["msg_id"])["status"]

    # A malformed request is answered with an error and the kernel serves on; control ignores shell requests.
    bad = kc.session.msg("execute_request", {"code": "1", "silent": "no", "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    kc.shell_channel.send(bad)
    found["malformed_request"] = shell_reply(bad["header"]["msg_id"])["status"]

    # Interrupts: a user's infinite loop, then a training loop; earlier variables survive both.
    def interrupted(code, wait):
        msg_id = kc.execute(code)
        time.sleep(wait)
        sent = time.monotonic()
        km.interrupt_kernel()
        reply, outputs = collect(msg_id)
        return {"status": reply["status"], "ename": reply.get("ename"), "seconds": time.monotonic() - sent}

    found["interrupt_loop"] = interrupted("long spins = 0;\nwhile (true) { spins++; }", 2)
    # The reproduction: interrupt, read the error reply, execute at once (not waiting for idle).
    looping = kc.execute("while (true) { }")
    time.sleep(2)
    km.interrupt_kernel()
    shell_reply(looping)
    found["after_interrupt_reply"] = shell_reply(kc.execute("x + 3"))["status"]
    training = """var folder = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "rk-kernel-" + Guid.NewGuid().ToString("N"));
    Pretraining.Run(MaeConfig.Tiny(), new PretrainOptions("shapes", Epochs: 50, TrainLimit: 2048, BatchSize: 64), folder, Progress("train"), Cancel);"""
    found["interrupt_training"] = interrupted(training, 8)
    reply, outputs = run("x + 1")
    found["after_interrupts"] = text(outputs)

    # Console.ReadLine asks the front end (input_request on stdin).
    msg_id = kc.execute("var answer = Console.ReadLine();", allow_stdin=True)
    request = kc.get_stdin_msg(timeout=60)
    found["input_request"] = request["msg_type"]
    kc.input("Ada")
    collect(msg_id)
    found["input_value"] = text(run("answer")[1])

    # Forged and replayed messages: neither may run the code (twice).
    run("int counter = 0;")
    forged = Session(key=b"not-the-key", username="attacker")
    msg = forged.msg("execute_request", {"code": "counter += 100;", "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    forged.send(kc.shell_channel.socket, msg)
    time.sleep(2)
    signed = kc.session.msg("execute_request", {"code": "counter += 1;", "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})
    kc.session.send(kc.shell_channel.socket, signed)
    shell_reply(signed["header"]["msg_id"])
    kc.session.send(kc.shell_channel.socket, signed)   # the same message id again
    time.sleep(2)
    found["counter_after_forged_and_replayed"] = text(run("counter")[1])

    # A native abort restarts the session; the kernel lives on.
    reply, outputs = run("torch.zeros(2, 3).matmul(torch.zeros(4, 5))")
    found["native_crash"] = {"ename": reply.get("ename"), "evalue": reply.get("evalue", "")[:200],
                             "notice": [c["text"] for t, c in outputs if t == "stream"]}
    found["after_crash"] = {"fresh": text(run("1 + 1")[1]), "lost": run("x")[0].get("ename")}

    # 200 executions (one of them failing): the worker's resident memory stays flat.
    run("throw new Exception(\"once\");")
    def worker_rss_kb():
        kernel = km.provisioner.process.pid
        children = []
        for task in os.listdir(f"/proc/{kernel}/task"):
            with open(f"/proc/{kernel}/task/{task}/children") as f:
                children += [int(p) for p in f.read().split()]
        total = 0
        for pid in children:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        return total

    for i in range(200):
        if i == 50:
            rss_at_50 = worker_rss_kb()
        # No new variable per cell: a redeclared `var t` would keep every earlier cell's tensor alive, as C# scripting's
        # submissions do by design; this measures what the engine itself keeps per execution.
        run("torch.ones(1024, 1024).mul(2).sum().item<float>()")   # 4 MB a cell: a leak would show as 600 MB
    found["rss_kb"] = {"at_50": rss_at_50, "at_200": worker_rss_kb()}

    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=120)
    found["after_restart"] = run("x")[0].get("ename")



try:
    scenario()
except Exception:
    found["exception"] = traceback.format_exc()[-3000:]
kc.stop_channels()
km.shutdown_kernel(now=True)
print(json.dumps(found))
