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
