"""The student edition: built from the chapters; every check fails on its stub and on typical mistakes, passes on the solution."""
from __future__ import annotations

import ast
import importlib.util
import re

import nbformat
import pytest

from conftest import NOTEBOOKS, ROOT

spec = importlib.util.spec_from_file_location("make_student", ROOT / "scripts" / "make_student.py")
make_student = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_student)

CHECK_CALL = re.compile(r"helpers\.check\.(\w+)\((\w+)\)")


def exercises():
    """(notebook, solution cell index, check name, function name) for every solution cell."""
    found = []
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        for i, cell in enumerate(cells):
            if cell.cell_type == "code" and "solution" in cell.metadata.get("tags", []):
                call = next((CHECK_CALL.search(c.source) for c in cells[i + 1:]
                             if c.cell_type == "code" and CHECK_CALL.search(c.source)), None)
                found.append(pytest.param(path, i, call and call.group(1), call and call.group(2),
                                          id=f"{path.stem}-cell{i}"))
    return found


def imports_before(cells, index) -> str:
    """The import statements of the code cells before `index` (what a solution cell may rely on)."""
    lines = []
    for cell in cells[:index]:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:  # IPython magics (the Colab install cell)
            continue
        lines += [ast.get_source_segment(cell.source, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return "\n".join(lines)


def test_every_chapter_has_solution_cells():
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        assert any("solution" in c.metadata.get("tags", []) for c in cells), path.name


@pytest.mark.parametrize("path,index,check_name,fn_name", exercises())
def test_check_fails_on_the_stub_and_passes_on_the_solution(path, index, check_name, fn_name, capsys):
    import helpers

    assert check_name, f"{path.name}: solution cell {index} is not followed by a helpers.check call"
    check = getattr(helpers.check, check_name)
    cells = nbformat.read(path, as_version=4).cells
    preamble = imports_before(cells, index)

    reference = {}
    exec(preamble + "\n" + cells[index].source, reference)
    assert check(reference[fn_name]) is True, capsys.readouterr().out

    student = {}
    exec(preamble + "\n" + make_student.student_cell_source(cells[index].source), student)
    assert check(student[fn_name]) is False
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" in out


@pytest.mark.parametrize("path,index,check_name,fn_name", exercises())
def test_check_fails_typical_mistakes_with_a_hint(path, index, check_name, fn_name, capsys):
    """The typical mistakes listed with the check (helpers/check/chNN.py): a failing verdict, a hint, no exception."""
    import helpers

    mistakes = [m for m in helpers.check.MISTAKES if m.check == check_name]
    assert len(mistakes) >= 2, f"no typical mistakes for check.{check_name}"
    for mistake in mistakes:
        assert getattr(helpers.check, check_name)(mistake.wrong) is False
        out = capsys.readouterr().out
        assert "\u274c" in out and "Hint:" in out and "Traceback" not in out, out
        for words in mistake.words:
            assert words.lower() in out.lower(), f"{words!r} not in:\n{out}"


def test_hint_continuation_lines_are_kept():
    source = ("# Hint: build the target (scatter_\n# helps), then average.\n"
              "def f(x):\n    \"\"\"Doc.\"\"\"\n    # Hint: inside,\n    #   continued.\n    y = 1  # not a hint\n    return x\n")
    stub = make_student.student_cell_source(source)
    for line in ("# Hint: build the target (scatter_", "# helps), then average.", "# Hint: inside,", "#   continued."):
        assert line in stub
    assert "not a hint" not in stub and "y = 1" not in stub


def test_hints_stay_with_their_function():
    source = ("# Hint: about g in general.\n"
              "# Hint: f: f's hint, which\n# Hint: goes on here.\n# Hint: g: g's own hint.\n\n"
              "def f(x):\n    \"\"\"F.\"\"\"\n    # Hint: inside f.\n    return x\n\n\n"
              "def g(x):\n    \"\"\"G.\"\"\"\n    return f(x)\n")
    stub = make_student.student_cell_source(source)
    f_stub, g_stub = stub.split("def g(")
    assert "f's hint, which" in f_stub and "goes on here." in f_stub and "inside f." in f_stub
    assert "# Hint: f:" not in stub  # the owner's name is dropped
    assert "g's own hint." in g_stub and "about g in general." in g_stub  # unnamed top-level hints: main function
    assert "g's own hint" not in f_stub and "inside f" not in g_stub


def test_chapter_7_cam_from_hints_are_in_the_cam_from_stub():
    path = next(p for p in NOTEBOOKS if p.name.startswith("07_"))
    for cell in nbformat.read(path, as_version=4).cells:
        if "solution" in cell.metadata.get("tags", []) and "cam_from" in cell.source:
            stub = make_student.student_cell_source(cell.source)
            cam_from, grad_cam = stub.split("def grad_cam(")
            assert "spatial mean of the gradients" in cam_from and "spatial mean of the gradients" not in grad_cam


def test_committed_student_edition_is_up_to_date(tmp_path):
    for path in NOTEBOOKS:
        nb = make_student.student_notebook(path)
        committed = ROOT / "student" / path.name
        assert committed.exists(), f"student/{path.name} is missing: run `make student`"
        assert committed.read_text() == nbformat.writes(nb) + "\n", f"student/{path.name} is stale: run `make student`"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
        assert "Student edition" in nb.cells[0].source


def test_every_chapter_links_its_exercise_version():
    for path in NOTEBOOKS:
        text = "".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        assert make_student.colab_url(f"student/{path.name}") in text, path.name


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_student_notebook_runs_up_to_its_first_todo(path, tmp_path):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    nb = make_student.student_notebook(path)
    source = tmp_path / path.name
    nbformat.write(nb, source)
    first_todo = next(i for i, c in enumerate(nb.cells) if "todo" in c.metadata.get("tags", []))
    try:
        papermill.execute_notebook(str(source), str(tmp_path / "out.ipynb"), parameters={"PROFILE": "smoke"},
                                   kernel_name="python3", cwd=str(ROOT / "notebooks"), progress_bar=False)
    except PapermillExecutionError as error:
        executed = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
        failed = next(i for i, c in enumerate(executed)
                      if any(o.get("output_type") == "error" for o in c.get("outputs", [])))
        # papermill may insert an injected-parameters cell before the first TODO
        assert failed > first_todo, f"{path.name} failed before its first TODO: {error.ename}: {error.evalue}"
        assert error.ename == "NotImplementedError", f"{error.ename}: {error.evalue}"
