"""Runs one of our notebooks through the real .NET Interactive Jupyter kernel with nbclient, in smoke mode.

Usage: python3 dotnet_interactive.py DOTNET_INTERACTIVE NOTEBOOK OUTPUT
DOTNET_INTERACTIVE is the tool's executable (`dotnet tool install Microsoft.dotnet-interactive --tool-path DIR`). The
notebook's first code cell references the ResearchKit package from ../feed, which tests/interactive.sh packs first.
Parameters are injected as papermill does: a cell tagged injected-parameters after the one tagged parameters.
Exits 1, naming the cell, when a cell fails, the notebook shows no output or no verdict (markdown); writes the executed notebook either way.
"""
import json, os, sys, tempfile

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

tool, notebook, output = sys.argv[1:4]
nb = nbformat.read(notebook, as_version=4)
at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", []))
results = tempfile.TemporaryDirectory()   # a fresh cache, so this kernel trains rather than reading the engine's runs
parameters = "Smoke = true;"
if "ResultsFolder" in nb.cells[at].source:
    parameters += f"\nResultsFolder = {json.dumps(results.name)};"
nb.cells.insert(at + 1, nbformat.v4.new_code_cell(parameters, metadata={"tags": ["injected-parameters"]}))

with results, tempfile.TemporaryDirectory() as home:
    # A kernelspec of our own (the tool's `jupyter install` writes into the user's Jupyter folder); the argv is the one
    # that command writes.
    os.makedirs(os.path.join(home, "kernels", "dotnet-interactive-csharp"))
    with open(os.path.join(home, "kernels", "dotnet-interactive-csharp", "kernel.json"), "w") as f:
        json.dump({"argv": [tool, "jupyter", "--default-kernel", "csharp", "{connection_file}",
                            "--http-port-range", "2048-3000"],
                   "display_name": ".NET (C#)", "language": "C#"}, f)
    os.environ["JUPYTER_PATH"] = home
    os.environ["Logging__LogLevel__Default"] = "Warning"   # the tool's web host logs each address it listens on
    client = NotebookClient(nb, kernel_name="dotnet-interactive-csharp", timeout=600, startup_timeout=120,
                            resources={"metadata": {"path": os.path.dirname(os.path.abspath(notebook))}})
    failure = None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as e:
        failure = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    finally:
        nbformat.write(nb, output)

code = [c for c in nb.cells if c.cell_type == "code"]
if failure is None:
    shown = sum(len(c.get("outputs", [])) for c in code)
    if shown == 0:
        failure = "no cell showed any output"
    elif not any("text/markdown" in o.get("data", {}) for c in code for o in c.get("outputs", [])):
        failure = "no verdict was shown (no text/markdown output: Markdown's formatter from the package's extension)"
if failure:
    failed = next((i for i, c in enumerate(nb.cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
    where = f"cell {failed} of {output}: " if failed is not None else ""
    sys.exit(f"{os.path.basename(notebook)} under .NET Interactive: {where}{failure}")
print(f"{os.path.basename(notebook)}: {len(code)} code cells ran under .NET Interactive "
      f"({sum(len(c.get('outputs', [])) for c in code)} outputs)")
