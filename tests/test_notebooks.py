"""Every chapter notebook runs top to bottom in the smoke profile (times are reported, not asserted)."""
import pytest

from conftest import NOTEBOOKS


@pytest.mark.notebook
@pytest.mark.parametrize("stem", [p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_profile(stem, notebook_records):
    records = notebook_records(stem)
    assert records, f"{stem} recorded no results (helpers.glue)"
