"""Every chapter notebook runs top to bottom in the smoke profile (times are reported, not asserted)."""
import pytest

from conftest import NOTEBOOKS


@pytest.mark.notebook
@pytest.mark.parametrize("stem", [p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_profile(stem, notebook_records):
    records = notebook_records(stem)
    assert records, f"{stem} recorded no results (helpers.glue)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_colab_cell_installs_only_this_release_and_only_on_colab(path):
    import nbformat

    import helpers

    first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert 'if "google.colab" in sys.modules:' in first.source
    assert f"@v{helpers.__version__}" in first.source, "pin the release tag that matches helpers.__version__"
    install = [line for line in first.source.splitlines() if "pip install" in line]
    assert len(install) == 1 and "torch" not in install[0].replace("dl-dissected", ""), install


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_outputs_hold_no_local_paths_or_object_addresses(path):
    import re

    text = path.read_text()
    for pattern in (r"/(?:root|home|tmp|work|Users)/", r" at 0x[0-9a-f]{6,}", r"<Figure size \d+"):
        assert not re.search(pattern, text), f"{path.name} holds {pattern!r} in its outputs"


@pytest.mark.notebook
@pytest.mark.fresh_run("compares a fresh smoke run with the committed outputs")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_nbval_checked_cells_match_the_committed_outputs(path, executed_notebook, request):
    """`pytest --nbval-lax` on the session's one execution: nbval's own cell options, sanitisers and comparison."""
    import copy

    import nbformat
    from nbval.plugin import IPyNbFile, coalesce_streams

    executed = [cell for cell in nbformat.read(executed_notebook(path.stem), as_version=4).cells
                if cell.cell_type == "code" and "injected-parameters" not in cell.metadata.get("tags", [])]
    collector = IPyNbFile.from_parent(request.session, path=path)
    collector.compare_outputs = False  # --nbval-lax: compare only the cells marked for it
    collector.setup_sanitize_files()  # --nbval-sanitize-with, as nbval reads it (no kernel is started)
    cells = list(collector.collect())
    assert len(cells) == len(executed), "the executed copy must have the committed notebook's code cells"
    failures = []
    for item in cells:
        if not item.options["check"] or item.options["skip"]:
            continue
        if item.cell.execution_count is None:  # nbval: an unrun reference cell is not compared
            if item.cell.outputs:
                failures.append(f"Cell {item.cell_num}: unrun reference cell has outputs")
            continue
        test = coalesce_streams(copy.deepcopy(executed[item.cell_num].outputs))
        if not item.compare_outputs(test, coalesce_streams(copy.deepcopy(item.cell.outputs))):
            failures.append(f"Cell {item.cell_num} (code cells counted as nbval does): outputs differ\n"
                            + "\n".join(item.comparison_traceback))
    assert not failures, f"{path.name}:\n" + "\n\n".join(failures)


def recording(path):
    """The recording's stamp in a committed notebook's metadata (scripts/record_book.py)."""
    import json

    from helpers.provenance import METADATA_KEY

    return json.loads(path.read_text())["metadata"].get(METADATA_KEY)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_recording_states_its_provenance_first(path):
    import json

    from helpers.provenance import line
    from helpers.record import read_records

    stamp = recording(path)
    assert stamp and isinstance(stamp.get("provenance"), dict), (
        f"{path.name} has no recording provenance: record it with `make notebooks` (scripts/record_book.py)")
    assert set(stamp["provenance"]) >= {"profile", "data", "date", "helpers", "machine"}, stamp["provenance"]
    outputs = [o for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    first = "".join(outputs[0].get("text") or outputs[0].get("data", {}).get("text/plain", "")) if outputs else ""
    assert first.splitlines()[:1] == [line(stamp["provenance"])], (
        f"{path.name}: the first output must be setup's provenance line, {line(stamp['provenance'])!r}; "
        f"it is {first[:120]!r}")
    assert read_records(path).get(f"ch{path.name[:2]}_provenance") == stamp["provenance"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_code_cell_was_edited_after_the_recording(path):
    import nbformat

    from helpers.provenance import code_hashes

    stamp = recording(path)
    assert stamp and "code" in stamp, f"{path.name} has no recording stamp: record it with `make notebooks`"
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    now = code_hashes(cells)
    fix = f"re-record it: python scripts/record_book.py notebooks/{path.name} (or `make notebooks`)"
    assert len(now) == len(stamp["code"]), (
        f"{path.name} has {len(now)} code cells, its recording had {len(stamp['code'])}: {fix}")
    edited = [i for i, (a, b) in enumerate(zip(now, stamp["code"])) if a != b]
    assert not edited, (f"{path.name}: code cell(s) {edited} changed after the outputs were recorded "
                        f"(first: {cells[edited[0]].source.splitlines()[0] if cells[edited[0]].source else ''!r}); {fix}")


def test_reference_results_block_is_current():
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("record_book", ROOT / "scripts" / "record_book.py")
    record_book = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(record_book)
    assert record_book.current_block() == record_book.results_block(), (
        "book/reference_results.md's recorded-runs block is stale: run `python scripts/record_book.py --results`")
