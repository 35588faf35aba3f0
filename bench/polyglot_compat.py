#!/usr/bin/env python3
"""How many code cells of the Polyglot-style notebooks in bench/polyglot run without an error, per engine.

  python3 bench/polyglot_compat.py ours                 # ./researchkit notebook run --continue-on-error
  python3 bench/polyglot_compat.py kernel NAME          # any Jupyter kernel through nbconvert (e.g. .NET Interactive's)

Prints one JSON object: per notebook the code cells, the cells that ran clean, and the first error of each failing cell.
The notebooks are written in the style of Microsoft's .NET Interactive samples (display, HTML/JS/markdown cells,
variable sharing, NuGet packages); nuget-packages.ipynb needs nuget.org.
"""
import json, os, subprocess, sys, tempfile, glob

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)


def run(notebook, engine, kernel, out):
    if engine == "ours":
        launcher = os.environ.get("RESEARCHKIT", os.path.join(root, "researchkit"))   # another checkout's, to compare
        subprocess.run([launcher, "notebook", "run", notebook, "-o", out, "--continue-on-error"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        subprocess.run(["jupyter", "nbconvert", "--to", "notebook", "--execute", "--allow-errors",
                        f"--ExecutePreprocessor.kernel_name={kernel}", "--ExecutePreprocessor.timeout=300",
                        notebook, "--output", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not os.path.exists(out):
        return None
    cells = [c for c in json.load(open(out))["cells"] if c["cell_type"] == "code"]
    failing = {}
    for i, c in enumerate(cells):
        errors = [o for o in c.get("outputs", []) if o["output_type"] == "error"]
        if errors:
            failing[i] = f"{errors[0].get('ename')}: {str(errors[0].get('evalue'))[:160]}"
    return {"code_cells": len(cells), "clean": len(cells) - len(failing), "failing": failing}


def main():
    engine = sys.argv[1] if len(sys.argv) > 1 else "ours"
    kernel = sys.argv[2] if len(sys.argv) > 2 else None
    if engine not in ("ours", "kernel") or (engine == "kernel" and not kernel):
        sys.exit("usage: polyglot_compat.py ours | kernel NAME")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for notebook in sorted(glob.glob(os.path.join(here, "polyglot", "*.ipynb"))):
            name = os.path.basename(notebook)
            results[name] = run(notebook, engine, kernel, os.path.join(tmp, name))
    done = [r for r in results.values() if r]
    print(json.dumps({"engine": engine if engine == "ours" else kernel,
                      "code_cells": sum(r["code_cells"] for r in done), "clean": sum(r["clean"] for r in done),
                      "notebooks": results}, indent=1))


if __name__ == "__main__":
    main()
