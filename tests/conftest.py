"""Shared fixtures: every chapter notebook is executed once per session (smoke profile, papermill).

The chapter tests and the nbval comparison of the `nbval-check-output` cells read that one execution.
`pytest tests/test_chapter04.py --recorded` feeds the chapter tests the committed notebook's records
instead (does a real-data recording still show the chapter's phenomena?); tests marked `fresh_run` skip.
"""
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
os.environ.pop("HELPERS_DATA", None)  # the recording's data folder: tests run on the stand-ins

ROOT = Path(__file__).resolve().parents[1]
# torchattacks (test-only) lives outside site-packages, installed without its pins (see the Makefile).
VENDOR = ROOT / ".venv" / "vendor"
if VENDOR.is_dir() and str(VENDOR) not in sys.path:
    sys.path.append(str(VENDOR))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes in kernel tracebacks
_executed: dict[str, Path | AssertionError] = {}
_seconds: dict[str, float] = {}


class NotebookFailed(AssertionError):
    """A chapter notebook raised: names the notebook and the failing cell."""


def execute_notebook(stem: str, out_dir: Path) -> Path:
    """Run notebooks/<stem>.ipynb with papermill (PROFILE='smoke'); return the executed copy."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

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
    return output


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


def pytest_addoption(parser):
    parser.addoption("--recorded", action="store_true",
                     help="chapter tests read the committed notebooks' records instead of a fresh smoke run")


def pytest_collection_modifyitems(config, items):
    """Under --recorded, skip the tests that only make sense on a fresh smoke run, saying why."""
    if not config.getoption("--recorded"):
        return
    for item in items:
        marker = item.get_closest_marker("fresh_run")
        if marker:
            reason = marker.args[0] if marker.args else "needs a fresh smoke run"
            item.add_marker(pytest.mark.skip(reason=f"--recorded: {reason}"))


@pytest.fixture(scope="session")
def executed_notebook(request, tmp_path_factory):
    """executed_notebook(stem) -> path of the notebook's one smoke execution this session (under --recorded:
    the committed notebook)."""
    if request.config.getoption("--recorded"):
        return lambda stem: ROOT / "notebooks" / f"{stem}.ipynb"
    out_dir = tmp_path_factory.mktemp("executed")
    os.environ["HELPERS_CHECKPOINT_DIR"] = str(tmp_path_factory.mktemp("checkpoints"))

    def get(stem: str) -> Path:
        if stem not in _executed:
            try:
                _executed[stem] = execute_notebook(stem, out_dir)
            except NotebookFailed as error:  # every test of this notebook reports it; none runs it again
                _executed[stem] = error
        if isinstance(_executed[stem], NotebookFailed):
            raise _executed[stem]
        return _executed[stem]

    return get


@pytest.fixture(scope="session")
def notebook_records(executed_notebook):
    """notebook_records(stem) -> the values the notebook recorded with helpers.glue (run once per session)."""
    from helpers.record import read_records

    cache: dict[str, dict] = {}

    def get(stem: str) -> dict:
        if stem not in cache:
            cache[stem] = read_records(executed_notebook(stem))
        return cache[stem]

    return get


def recorded_with_older_helpers() -> list[str]:
    """Committed notebooks whose recording used other helpers/ files than the current ones."""
    import json

    from helpers.provenance import METADATA_KEY, helpers_hash

    current = helpers_hash()
    stale = []
    for path in NOTEBOOKS:
        stamp = json.loads(path.read_text())["metadata"].get(METADATA_KEY)
        if stamp and stamp.get("helpers") != current:  # no stamp at all fails test_notebooks instead
            stale.append(path.name)
    return stale


def pytest_terminal_summary(terminalreporter):
    """Warn about notebooks recorded with older helpers; print how long each notebook took in the smoke profile."""
    stale = recorded_with_older_helpers()
    if stale:
        terminalreporter.section("recorded notebooks", yellow=True)
        terminalreporter.write_line(f"WARNING: recorded with an older helpers/ (re-record with `make notebooks`): "
                                    f"{', '.join(stale)}", yellow=True)
    if _seconds:
        terminalreporter.section("notebook execution times (smoke profile)")
        for stem, seconds in sorted(_seconds.items()):
            terminalreporter.write_line(f"{stem}: {seconds:6.1f} s")
        terminalreporter.write_line(f"total: {sum(_seconds.values()):6.1f} s")
