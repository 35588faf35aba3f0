"""Executes notebooks through a kernel with Jupyter's own nbconvert, in their smoke configuration, and validates them.

Usage: JUPYTER_PATH=... python3 execute_notebooks.py KERNEL_NAME OUT_DIR NOTEBOOK...
The parameters cell's `bool Smoke = false;` becomes `true` (what `notebook run -p Smoke=true` injects); each notebook runs
in OUT_DIR/notebooks so its `../results` cache lands in OUT_DIR. Prints one line per notebook: name, seconds, code cells.
"""
import os, subprocess, sys, time

import nbformat

name, out_dir, notebooks = sys.argv[1], sys.argv[2], sys.argv[3:]
work = os.path.join(out_dir, "notebooks")
os.makedirs(work, exist_ok=True)
for path in notebooks:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            if "bool Smoke = false;" not in cell.source:
                sys.exit(f"{path}: the parameters cell has no `bool Smoke = false;`")
            cell.source = cell.source.replace("bool Smoke = false;", "bool Smoke = true;")
    smoke = os.path.join(work, os.path.basename(path))
    nbformat.write(nb, smoke)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute", "--inplace",
                    f"--ExecutePreprocessor.kernel_name={name}", "--ExecutePreprocessor.timeout=900", smoke], check=True)
    executed = nbformat.read(smoke, as_version=4)
    nbformat.validate(executed)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    if errors:
        sys.exit(f"{path}: {errors[0].ename}: {errors[0].evalue}")
    code_cells = sum(1 for c in executed.cells if c.cell_type == "code" and c.execution_count)
    print(f"{os.path.basename(path)}\t{time.monotonic() - started:.1f}\t{code_cells}")
