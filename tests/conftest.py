"""Shared fixtures: every chapter notebook is executed once per session (smoke profile, papermill)."""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

# Tests always run the smoke profile, without progress bars, whatever the machine has.
os.environ["HELPERS_PROFILE"] = "smoke"
os.environ["HELPERS_PROGRESS"] = "0"
os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]
# torchattacks (test-only) lives outside site-packages, installed without its pins (see the Makefile).
VENDOR = ROOT / ".venv" / "vendor"
if VENDOR.is_dir() and str(VENDOR) not in sys.path:
    sys.path.append(str(VENDOR))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in kernel tracebacks
_executed: dict[str, dict] = {}
_seconds: dict[str, float] = {}


class NotebookFailed(AssertionError):
    """A chapter notebook raised: names the notebook and the failing cell."""


def execute_notebook(stem: str, out_dir: Path) -> dict:
    """Run notebooks/<stem>.ipynb with papermill (PROFILE='smoke'); return its recorded results."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from helpers.record import read_records

    source = ROOT / "notebooks" / f"{stem}.ipynb"
    output = out_dir / f"{stem}.ipynb"
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(source), str(output), parameters={"PROFILE": "smoke"},
                                   kernel_name="python3", cwd=str(source.parent), progress_bar=False)
    except PapermillExecutionError as error:
        raise NotebookFailed(f"{stem}.ipynb failed in {_locate(source, error.source)} (executed copy: "
                             f"{output}):\n{error.source}\n{error.ename}: {error.evalue}\n"
                             f"{ANSI.sub('', ''.join(error.traceback[-3:]))}") from None
    finally:
        _seconds[stem] = time.perf_counter() - start
    return read_records(output)


def _locate(notebook: Path, failed_source: str) -> str:
    """'cell [i]' (its index in the source notebook, as nbformat counts) of the cell that failed."""
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    where = [i for i, cell in enumerate(cells) if cell.source == failed_source]
    return f"cell [{where[0]}]" if where else "a cell"


@pytest.fixture(autouse=True)
def torch_threads_as_in_the_notebooks():
    """torch's CPU threads as helpers.setup chooses them: one on a busy machine, where oversubscribed
    threads wait on each other and run many times slower."""
    import torch

    from helpers.profile import cpu_threads

    before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads())
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def notebook_records(tmp_path_factory):
    """notebook_records(stem) -> the values the notebook recorded with helpers.glue (run once per session)."""
    out_dir = tmp_path_factory.mktemp("executed")
    os.environ["HELPERS_CHECKPOINT_DIR"] = str(tmp_path_factory.mktemp("checkpoints"))

    def get(stem: str) -> dict:
        if stem not in _executed:
            _executed[stem] = execute_notebook(stem, out_dir)
        return _executed[stem]

    return get


def pytest_terminal_summary(terminalreporter):
    """Print how long each notebook took in the smoke profile."""
    if _seconds:
        terminalreporter.section("notebook execution times (smoke profile)")
        for stem, seconds in sorted(_seconds.items()):
            terminalreporter.write_line(f"{stem}: {seconds:6.1f} s")
        terminalreporter.write_line(f"total: {sum(_seconds.values()):6.1f} s")
