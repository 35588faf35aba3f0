"""Opens a notebook with a chart cell in the classic Jupyter Notebook in headless Chromium and reports what rendered.

Usage: JUPYTER_PATH=<dir with kernels/NAME> /usr/bin/python3 browser_chart.py NAME
Prints one JSON object of findings; the C# test judges them. Exits 0 whether or not the chart rendered, non-zero only when
the setup failed (no kernelspec, no server, no browser), with the reason on stderr.

How: a temporary notebook directory, config, data and runtime directory (nothing in ~ is touched); the Notebook server on
127.0.0.1 with a random token; a custom.js that runs all cells once the kernel is connected and marks the page as done
(the title starts with "rk-done:") when the output has a plotly SVG or an error, 5 s after the cell finished without
either, or after a timeout; it also records the JSON type of each MIME type in the bundles the output area receives
(the classic Notebook drops text types whose value is not a string). Chromium is driven through its DevTools protocol
over --remote-debugging-pipe (NUL-separated JSON on fds 3 and 4, stdlib only): plain `--dump-dom` dumps at the load
event, before the kernel has started, whatever `--timeout` says, and `--virtual-time-budget` fast-forwards virtual time
while the page waits on the kernel's websocket, so it dumps early too.
"""
import fcntl, json, os, queue, re, secrets, shutil, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

import nbformat
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

CHROMIUM = "/usr/bin/chromium"
CELL = ('Charts.Ablation("t", "ratio", "accuracy", new[] { new ChartSeries("ours", new[] { 0.1, 0.5, 0.9 }, '
        'new[] { 0.7, 0.8, 0.75 }) })')
PAGE_TIMEOUT_MS = 60000   # custom.js gives up this long after the page started
DEADLINE_S = 75           # we give up this long after navigating

# Runs all cells once the kernel is connected; marks the page when the output has a plot, an error or no plot after the
# cell finished, or on timeout. The marker element's attributes carry the timings for the report.
CUSTOM_JS = r"""
(function () {
  var started = Date.now(), connectedAt = null, finishedAt = null, ran = false;
  // Observe (not change) the bundles the output area receives: the JSON type of each MIME type's value. The classic
  // Notebook drops text types whose value is not a string before picking one to show.
  window.__rkReceived = [];
  require(['notebook/js/outputarea'], function (oa) {
    var validate = oa.OutputArea.prototype.validate_mimebundle;
    oa.OutputArea.prototype.validate_mimebundle = function (bundle) {
      var types = {};
      Object.keys((bundle && bundle.data) || {}).forEach(function (k) {
        var v = bundle.data[k];
        types[k] = Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v;
      });
      window.__rkReceived.push({output_type: bundle && bundle.output_type, types: types});
      return validate.apply(this, arguments);
    };
  });
  function mark(state) {
    clearInterval(timer);
    var el = document.createElement('div');
    el.id = 'rk-browser-test';
    el.style.display = 'none';
    el.setAttribute('data-state', state);
    el.setAttribute('data-connected-ms', connectedAt === null ? '' : String(connectedAt - started));
    el.setAttribute('data-done-ms', String(Date.now() - started));
    document.body.appendChild(el);
    document.title = 'rk-done:' + state;
  }
  var timer = setInterval(function () {
    var nb = window.Jupyter && window.Jupyter.notebook;
    var elapsed = Date.now() - started;
    if (!ran) {
      if (nb && nb._fully_loaded && nb.kernel && nb.kernel.is_connected()) {
        ran = true;
        connectedAt = Date.now();
        nb.execute_all_cells();
      } else if (elapsed > __TIMEOUT__) {
        mark(nb && nb._fully_loaded ? 'no-kernel' : 'no-notebook');
      }
      return;
    }
    var cell = nb.get_cell(0), running = cell && cell.element.hasClass('running');
    var output = cell && cell.output_area.element[0];
    if (output && output.querySelector('.output_error')) { mark('error'); return; }
    // Plotly draws the SVG synchronously in newPlot; a short grace lets the markers and legend settle.
    if (output && output.querySelector('svg.main-svg') && !running) {
      if (finishedAt === null) finishedAt = Date.now();
      if (Date.now() - finishedAt > 500) mark('plot');
      return;
    }
    if (!running && finishedAt === null) finishedAt = Date.now();
    if (!running && Date.now() - finishedAt > 5000) { mark('no-plot'); return; }
    if (elapsed > __TIMEOUT__) mark('timeout');
  }, 200);
})();
""".replace("__TIMEOUT__", str(PAGE_TIMEOUT_MS))

# What the page shows, collected in the page once it is marked (or the deadline passed).
SUMMARY_JS = r"""
(function () {
  var r = {};
  var nb = window.Jupyter && window.Jupyter.notebook, k = nb && nb.kernel;
  r.title = document.title;
  r.notebook_loaded = !!(nb && nb._fully_loaded);
  r.notebook_name = nb ? nb.notebook_name : null;
  r.kernel_name = k ? k.name : null;
  r.kernel_connected_now = !!(k && k.is_connected());
  var m = document.getElementById('rk-browser-test');
  r.marker = m ? {state: m.getAttribute('data-state'), connected_ms: m.getAttribute('data-connected-ms'),
                  done_ms: m.getAttribute('data-done-ms')} : null;
  var cell = nb && nb.get_cell && nb.get_cell(0);
  r.execution_count = cell ? cell.input_prompt_number : null;
  var out = cell ? cell.output_area.element[0] : null;
  r.output_subareas = [];
  r.error_texts = [];
  r.output_html = '';
  r.output_scripts = 0;
  if (out) {
    out.querySelectorAll('.output_subarea').forEach(function (s) { r.output_subareas.push(s.className); });
    out.querySelectorAll('.output_error, .output_stderr').forEach(function (e) { r.error_texts.push(e.innerText); });
    var copy = out.cloneNode(true);
    copy.querySelectorAll('script').forEach(function (s) { r.output_scripts++; s.remove(); });
    r.output_html = copy.outerHTML;
  }
  r.received = window.__rkReceived || null;
  r.js_plotly_plots = out ? out.querySelectorAll('.js-plotly-plot').length : 0;
  r.window_plotly = typeof window.Plotly === 'object' && window.Plotly !== null ? (window.Plotly.version || 'yes') : null;
  return JSON.stringify(r);
})()
"""


class SetupError(Exception):
    pass


class DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe: the browser reads fd 3 and writes fd 4."""

    def __init__(self, args, log):
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def fds():   # via fds >= 10 so that dup2 onto 3 and 4 never clobbers its own source
            a, b = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=fds,
                                     close_fds=False, start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.messages, self.events, self.next_id = queue.Queue(), [], 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buffer = b""
        while True:
            try:
                chunk = os.read(self.from_browser, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                self.messages.put(None)
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for raw in complete:
                self.messages.put(json.loads(raw))

    def call(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            try:
                reply = self.messages.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise SetupError(f"Chromium did not answer {method} within {timeout} s")
            if reply is None:
                raise SetupError(f"Chromium closed the DevTools pipe (exit code {self.proc.poll()})")
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise SetupError(f"DevTools {method}: {reply['error']}")
                return reply["result"]
            if "method" in reply:
                self.events.append(reply)

    def evaluate(self, expression, session):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        if "exceptionDetails" in result:
            return None
        return result["result"].get("value")

    def close(self):
        try:
            if self.proc.poll() is None:
                self.call("Browser.close", timeout=5)
        except (SetupError, OSError):
            pass
        stop(self.proc)
        try:   # helpers (renderers, zygotes) left behind by a browser that had to be killed: its own process group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        for fd in (self.to_browser, self.from_browser):
            try:
                os.close(fd)
            except OSError:
                pass


def stop(proc, grace=10):
    """Ends one process we started: SIGTERM, then SIGKILL after the grace period."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def api(base, token, path, method="GET"):
    request = urllib.request.Request(base + path, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
        return json.loads(body) if body else None


def browser_messages(events):
    """Exceptions, console errors and warnings and browser log errors the page produced."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            found.append(f"exception: {text} ({details.get('url', '')}:{details.get('lineNumber')})")
        elif method == "Runtime.consoleAPICalled" and (params.get("type") in ("error", "warning", "assert") or re.search(
                r"invalid|ignoring|error|fail", json.dumps(params.get("args", [])[:1]), re.I)):
            parts = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            found.append(f"console.{params['type']}: {' '.join(parts)}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            entry = params["entry"]
            found.append(f"log.{entry['level']}: {entry.get('text', '')} {entry.get('url', '')}".strip())
    return [m[:600] for m in dict.fromkeys(found)][:30]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def observe(name, tmp, found, processes):
    """Sets up and looks; fills found; raises SetupError. processes collects what main's cleanup must stop."""
    started = time.monotonic()
    if not os.access(CHROMIUM, os.X_OK):
        raise SetupError(f"{CHROMIUM} is missing (apt-get install chromium)")
    dirs = {k: os.path.join(tmp, k) for k in ("notebooks", "config", "data", "runtime", "chromium")}
    for d in dirs.values():
        os.makedirs(d)
    os.makedirs(os.path.join(dirs["config"], "custom"))
    with open(os.path.join(dirs["config"], "custom", "custom.js"), "w") as f:
        f.write(CUSTOM_JS)
    token = secrets.token_hex(24)
    jupyter_dirs = {"JUPYTER_CONFIG_DIR": dirs["config"], "JUPYTER_DATA_DIR": dirs["data"],
                    "JUPYTER_RUNTIME_DIR": dirs["runtime"], "IPYTHONDIR": os.path.join(tmp, "ipython")}
    os.environ.update(jupyter_dirs)   # so the kernelspec lookup below sees what the server will see
    env = dict(os.environ, JUPYTER_TOKEN=token, PYDEVD_DISABLE_FILE_VALIDATION="1")
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise SetupError(f"no kernelspec named {name!r} (JUPYTER_PATH={os.environ.get('JUPYTER_PATH')!r})")

    nb = nbformat.v4.new_notebook()
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.metadata["kernelspec"] = {"name": name, "display_name": spec.display_name, "language": spec.language}
    nb.cells.append(nbformat.v4.new_code_cell(CELL))
    nbformat.validate(nb)
    nbformat.write(nb, os.path.join(dirs["notebooks"], "test.ipynb"))

    server_log = os.path.join(tmp, "server.log")
    args = [sys.executable, "-m", "notebook", "--no-browser", "--ip=127.0.0.1", f"--port={free_port()}",
            "--port-retries=20", f"--notebook-dir={dirs['notebooks']}"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    with open(server_log, "wb") as log:
        processes["server"] = server = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                                         stderr=log, start_new_session=True)
    # The server writes nbserver-PID.json, with the port it bound, once it listens.
    info_path = os.path.join(dirs["runtime"], f"nbserver-{server.pid}.json")
    end, base = time.monotonic() + 60, None
    while time.monotonic() < end and server.poll() is None:
        try:
            with open(info_path) as f:
                candidate = f"http://127.0.0.1:{json.load(f)['port']}"
            api(candidate, token, "/api/status")
            base = candidate
            break
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    if base is None:
        raise SetupError(f"the Notebook server did not answer (exit code {server.poll()}):\n" + tail(server_log))
    processes["api"] = (base, token)
    found["server_ready_s"] = round(time.monotonic() - started, 2)

    with open(os.path.join(tmp, "chromium.log"), "wb") as log:
        processes["chromium"] = devtools = DevTools(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
             "--disable-background-timer-throttling", "--disable-renderer-backgrounding", "--window-size=1280,1024",
             f"--user-data-dir={dirs['chromium']}", "--remote-debugging-pipe", "about:blank"], log)
    target, end = None, time.monotonic() + 30
    while target is None and time.monotonic() < end:
        pages = [t for t in devtools.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        target = pages[0]["targetId"] if pages else None
        if target is None:
            time.sleep(0.2)
    if target is None:
        target = devtools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = devtools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Page"):
        devtools.call(f"{domain}.enable", session=session)
    navigated = time.monotonic()
    navigation = devtools.call("Page.navigate", {"url": f"{base}/notebooks/test.ipynb?token={token}"}, session)
    if navigation.get("errorText"):
        raise SetupError(f"Chromium could not open the notebook page: {navigation['errorText']}")

    while time.monotonic() - navigated < DEADLINE_S:
        title = devtools.evaluate("document.title", session)
        if isinstance(title, str) and title.startswith("rk-done:"):
            break
        time.sleep(0.5)
    found["page_s"] = round(time.monotonic() - navigated, 2)
    page = json.loads(devtools.evaluate(SUMMARY_JS, session) or "{}")
    html = page.pop("output_html", "")
    marker = page.get("marker") or {}
    found.update({
        "notebook_loaded": bool(page.get("notebook_loaded")) and page.get("notebook_name") == "test.ipynb",
        "kernel_name": page.get("kernel_name"),
        "kernel_connected": bool(marker.get("connected_ms")) or bool(page.get("kernel_connected_now")),
        "state": marker.get("state"),
        "connected_ms": int(marker["connected_ms"]) if marker.get("connected_ms") else None,
        "done_ms": int(marker["done_ms"]) if marker.get("done_ms") else None,
        "execution_count": page.get("execution_count"),
        "received_bundles": page.get("received"),
        "output_subareas": page.get("output_subareas", []),
        "output_scripts": page.get("output_scripts", 0),
        "js_plotly_plots": page.get("js_plotly_plots", 0),
        "main_svg": html.count('class="main-svg"'),
        "points": html.count('class="point"'),
        # The PNG, either the HTML's placeholder (which the drawing script replaces) or an image/png output.
        "images": html.count("<img"),
        "static_image_gone": "<img" not in html,
        "window_plotly": page.get("window_plotly"),
        "error_texts": [t[:2000] for t in page.get("error_texts", [])],
        "browser_messages": browser_messages(devtools.events),
    })
    if not found["main_svg"]:
        found["output_text"] = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()[:500]
    if found["state"] != "plot":
        found["server_log_tail"] = tail(server_log, 15)


def cleanup(processes):
    """Shuts the kernels down through the server, then stops the browser and the server (which stops any kernel left)."""
    if "chromium" in processes:
        processes["chromium"].close()
    if "api" in processes:
        base, token = processes["api"]
        try:
            for kernel in api(base, token, "/api/kernels"):
                api(base, token, f"/api/kernels/{kernel['id']}", method="DELETE")
        except (OSError, ValueError):
            pass
    if "server" in processes:
        stop(processes["server"], grace=20)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: browser_chart.py KERNEL_NAME")
    # Cleanup must also run when we are terminated (e.g. by a test's timeout).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("browser_chart.py: terminated"))
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="rk-browser-chart-")
    found, processes = {"kernel": sys.argv[1]}, {}
    failure = None
    try:
        observe(sys.argv[1], tmp, found, processes)
    except SetupError as e:
        failure = e
    finally:
        cleanup(processes)
        shutil.rmtree(tmp, ignore_errors=True)
    if failure:
        sys.exit(f"browser_chart.py: setup failed: {failure}")
    found["total_s"] = round(time.monotonic() - started, 2)
    print(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
