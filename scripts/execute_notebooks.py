"""Execute chapter notebooks with papermill in the smoke profile; with --in-place, store clean outputs.

    python scripts/execute_notebooks.py --in-place notebooks/*.ipynb   # refresh committed outputs
    python scripts/execute_notebooks.py --output-dir /tmp/out notebooks/01_*.ipynb
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
import papermill

VOLATILE_METADATA = ("papermill", "execution", "widgets")


def clean(path: Path) -> None:
    """Drop run-dependent metadata (timings, widget state) so that a re-run gives a small, stable diff."""
    nb = nbformat.read(path, as_version=4)
    for key in VOLATILE_METADATA:
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        for key in VOLATILE_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
            for output in cell.outputs:
                data = output.get("data", {})
                if "application/vnd.jupyter.widget-view+json" in data:
                    data.pop("application/vnd.jupyter.widget-view+json")
                if output.get("output_type") == "stream" and "\r" in output.get("text", ""):
                    output["text"] = "".join(line.split("\r")[-1] for line in output["text"].splitlines(True))
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nbformat.write(nb, path)


def execute(notebook: Path, output: Path, profile: str = "smoke") -> float:
    """Run one notebook with papermill (profile via the environment, no injected cell); return seconds."""
    os.environ["HELPERS_PROFILE"] = profile
    os.environ["HELPERS_PROGRESS"] = "0"
    start = time.perf_counter()
    papermill.execute_notebook(str(notebook), str(output), kernel_name="python3",
                               cwd=str(notebook.parent), progress_bar=False)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--in-place", action="store_true", help="overwrite the notebooks with clean outputs")
    parser.add_argument("--output-dir", type=Path, help="write executed copies here instead")
    parser.add_argument("--profile", default="smoke")
    args = parser.parse_args()
    if not args.in_place and args.output_dir is None:
        parser.error("give --in-place or --output-dir")
    total = 0.0
    for notebook in args.notebooks:
        output = notebook if args.in_place else args.output_dir / notebook.name
        output.parent.mkdir(parents=True, exist_ok=True)
        seconds = execute(notebook, output, args.profile)
        clean(output)
        total += seconds
        print(f"{notebook.name}: {seconds:.0f} s", flush=True)
    print(f"all {len(args.notebooks)} notebooks: {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
