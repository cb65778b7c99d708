"""Recording the book: the one table, data handed over by the environment, provenance and the stale-recording checks."""
from __future__ import annotations

import importlib.util
import json

import nbformat
import numpy as np
import pytest
import torch

from conftest import NOTEBOOKS, ROOT
from helpers import data, provenance
from helpers.profile import resolve_data

spec = importlib.util.spec_from_file_location("record_book", ROOT / "scripts" / "record_book.py")
record_book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(record_book)


def test_every_chapter_declares_how_it_is_recorded():
    rows = record_book.table()
    assert sorted(rows) == [p.name[:2] for p in NOTEBOOKS]
    for chapter, row in rows.items():
        assert row["profile"] in ("smoke", "cpu", "full") and row["data"] in ("standin", "real"), (chapter, row)
        assert set(row["loads"]) <= set(data.REAL_NAMES) and row["loads"], (chapter, row)
        if row["profile"] == "smoke":
            assert row["data"] == "standin", f"chapter {chapter}: the smoke profile is the stand-ins' profile"


def test_readme_shows_the_recording_table():
    assert record_book.show_table() in (ROOT / "README.md").read_text(), (
        "README.md's recording table differs from `python scripts/record_book.py --list`")


def test_auto_data_reads_the_environment_first(monkeypatch, tmp_path):
    monkeypatch.setenv("HELPERS_DATA", str(tmp_path))
    assert resolve_data("auto", "full") == str(tmp_path) and resolve_data("auto", "smoke") == str(tmp_path)
    assert resolve_data("standin", "full") == "standin", "an explicit DATA wins over the environment"
    monkeypatch.setenv("HELPERS_DATA", "standin")
    assert resolve_data("auto", "cpu") == "standin"
    monkeypatch.setenv("HELPERS_DATA", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="Unknown data source"):
        resolve_data("auto", "cpu")


def test_provenance_line_names_profile_data_sizes_date_version_and_machine(tmp_path):
    np.savez(tmp_path / "mnist_train.npz", x=np.zeros((7, 28, 28), np.uint8), y=np.zeros(7, int))
    text = provenance.data_text(("mnist", "cifar10"), str(tmp_path))
    assert text == "MNIST real (local .npz copy): train 7, test missing; CIFAR-10 real (local .npz copy): train missing, test missing"
    assert provenance.data_text(("mnist",), "real") == "MNIST real (torchvision): train 60,000, test 10,000"
    assert "stand-ins" in provenance.data_text(("svhn", "mnist"), "standin")
    record = provenance.provenance("cpu", text, "9.9.9", provenance.machine(torch.device("cpu"), 2))
    line = provenance.line(record)
    assert line.startswith("Run: cpu profile | MNIST real") and "helpers 9.9.9 | CPU, 2 threads" in line
    assert record["date"] in line and "\n" not in line and str(tmp_path) not in line


def test_setup_opens_with_the_provenance_line(capsys, monkeypatch):
    import helpers

    monkeypatch.delenv("HELPERS_DATA", raising=False)
    helpers.setup("smoke", chapter="03")
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("Run: smoke profile | SVHN + MNIST stand-ins") and "helpers " in first


def test_code_hashes_see_every_code_cell_edit_and_ignore_markdown():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("print(x)")])
    before = provenance.code_hashes(nb.cells)
    nb.cells[0].source = "# another title"
    assert provenance.code_hashes(nb.cells) == before
    nb.cells[2].source = "print(x + 1)"
    after = provenance.code_hashes(nb.cells)
    assert len(before) == 2 and after[0] == before[0] and after[1] != before[1]
    as_json = json.loads(nbformat.writes(nb))  # the list-of-lines form of a cell's source gives the same hash
    as_json["cells"][2]["source"] = ["print(", "x + 1)"]
    assert provenance.code_hashes(as_json["cells"]) == after


def test_helpers_hash_is_stable_and_covers_the_subpackages():
    assert provenance.helpers_hash() == provenance.helpers_hash()
    assert (provenance.HELPERS / "settings" / "ch01.py") in set(provenance.HELPERS.rglob("*.py"))


def test_clean_drops_timings_widgets_and_progress_bars():
    cell = nbformat.v4.new_code_cell("f()", metadata={"execution": {}, "papermill": {}})
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="10%\r50%\r100%\n"),
                    nbformat.v4.new_output("display_data", data={"text/plain": "w", record_book.WIDGET: {}})]
    nb = nbformat.v4.new_notebook(cells=[cell], metadata={"papermill": {}, "widgets": {}})
    record_book.clean(nb)
    assert "papermill" not in nb.metadata and "widgets" not in nb.metadata and not cell.metadata
    assert [o.get("text") for o in cell.outputs] == ["100%\n"]
