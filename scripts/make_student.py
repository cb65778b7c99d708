"""Build the student edition: every `solution` cell becomes a `# TODO` stub, outputs are cleared.

    python scripts/make_student.py            # writes student/NN_topic.ipynb for every chapter
    python scripts/make_student.py --check    # fails if the committed student edition is stale

Stubs are derived from the code, so they cannot drift from it:
- a function defined in a solution cell keeps its signature and docstring; its body becomes a TODO;
- `from helpers.X import f` + `helpers.show_source(f)` (an algorithm kept in helpers because later
  chapters reuse it) becomes a stub of `f` built from the helper's own signature and docstring;
- lines starting with `# Hint:` in the solution cell are kept inside a stub, with the comment lines that
  directly continue them. A hint written inside a function's body stays with that function; a hint at
  the cell's top level goes to the function it names (`# Hint: cam_from: ...`, the name is then dropped;
  the following hint lines of the same block go there too), otherwise to the cell's main (last) function.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import sys
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from helpers.provenance import METADATA_KEY  # noqa: E402
REPOSITORY = "dl-dissected/deep-learning-dissected"
BRANCH = "main"


def colab_url(path: str) -> str:
    """The Colab address of a notebook of this repository."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/{path}"


def _signature_and_docstring(source: str) -> tuple[str, str | None]:
    """The `def ...:` header (decorators included) and the docstring of the single function in `source`."""
    tree = ast.parse(textwrap.dedent(source))
    node = next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    lines = textwrap.dedent(source).splitlines()
    first = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
    header = "\n".join(lines[first: node.body[0].lineno - 1])
    return header.rstrip(), ast.get_docstring(node)


def stub(header: str, docstring: str | None, name: str, hints: list[str]) -> str:
    """A function stub: header, docstring, TODO with hints, and a NotImplementedError."""
    body = []
    if docstring:
        body.append('"""' + docstring.strip() + '"""')
    body.append(f"# TODO: implement {name}.")
    body += hints
    body.append(f'raise NotImplementedError("TODO: implement {name} (see the text above)")')
    return header + "\n" + textwrap.indent("\n".join(body), "    ")


HINT = "# Hint:"


def _hint_blocks(lines: list[str]) -> list[tuple[int, list[str]]]:
    """(line number, lines) of every hint: a `# Hint:` line plus the comment lines directly continuing it."""
    blocks: list[tuple[int, list[str]]] = []
    previous_was_hint = False
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text.startswith(HINT):
            blocks.append((number, [text]))
            previous_was_hint = True
        elif previous_was_hint and text.startswith("#"):
            blocks[-1][1].append(text)  # a hint continued on the next comment line
        else:
            previous_was_hint = False
    return blocks


def _assign_hints(lines: list[str], functions: list[tuple[str, int, int]], names: list[str]
                  ) -> dict[str, list[str]]:
    """Each stub's hints: by the function body they sit in, else by a `name:` prefix, else the main function."""
    hints: dict[str, list[str]] = {name: [] for name in names}
    owner_of_block: str | None = None
    last_line = -1
    for number, block in _hint_blocks(lines):
        inside = next((name for name, first, last in functions if first <= number <= last), None)
        if number != last_line + 1:
            owner_of_block = None  # a new block of hints at the cell's top level
        last_line = number + len(block) - 1
        if inside:
            hints[inside] += block
            continue
        body = block[0][len(HINT):].lstrip()
        prefix, _, rest = body.partition(":")
        if prefix.strip() in hints and rest:
            owner_of_block = prefix.strip()
            block = [f"{HINT} {rest.strip()}"] + block[1:]
        hints[owner_of_block or names[-1]] += block
    return hints


def student_cell_source(source: str) -> str:
    """The student version of one solution cell."""
    tree = ast.parse(source)
    lines = source.splitlines()
    stubs: list[tuple[str, str | None, str]] = []  # header, docstring, name
    functions: list[tuple[str, int, int]] = []  # name, first line, last line of the functions defined here
    shown = {node.args[0].id for node in ast.walk(tree)
             if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "show_source"
             and node.args and isinstance(node.args[0], ast.Name)}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([d.lineno for d in node.decorator_list] + [node.lineno])
            header, doc = _signature_and_docstring("\n".join(lines[first - 1: node.end_lineno]))
            stubs.append((header, doc, node.name))
            functions.append((node.name, first, node.end_lineno))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("helpers"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if alias.name in shown:
                    obj = getattr(module, alias.name)
                    header, doc = _signature_and_docstring(inspect.getsource(obj))
                    if alias.asname:
                        header = header.replace(f"def {alias.name}(", f"def {alias.asname}(", 1)
                    stubs.append((header, doc, alias.asname or alias.name))
    if not stubs:
        raise ValueError("a solution cell must define a function (or show one from helpers):\n" + source)
    imports = [ast.get_source_segment(source, n) for n in tree.body
               if isinstance(n, ast.Import) or (isinstance(n, ast.ImportFrom)
                                                and not (n.module or "").startswith("helpers"))]
    head = "\n".join(imports) + "\n\n\n" if imports else ""
    hints = _assign_hints(lines, functions, [name for _, _, name in stubs])
    texts = [stub(header, doc, name, hints[name]) for header, doc, name in stubs]
    return head + "\n\n\n".join(texts) + "\n"


def student_notebook(path: Path) -> nbformat.NotebookNode:
    """The student edition of one chapter notebook."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop(METADATA_KEY, None)  # the student edition has no recorded outputs to describe
    solutions = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if "solution" in cell.metadata.get("tags", []):
                cell.source = student_cell_source(cell.source)
                cell.metadata["tags"] = [t for t in cell.metadata["tags"] if t != "solution"] + ["todo"]
                solutions += 1
            if "tags" in cell.metadata:  # the student edition's outputs are the student's own
                cell.metadata["tags"] = [t for t in cell.metadata["tags"] if t != "nbval-check-output"]
    if solutions == 0:
        raise ValueError(f"{path.name} has no cell tagged 'solution'")
    banner = nbformat.v4.new_markdown_cell(
        f"**Student edition.** The {solutions} code cell(s) marked `# TODO` are yours to complete; "
        "after each, a `helpers.check` cell tells you what is right and what is off (it never shows "
        "the answer). Run the notebook top to bottom; it stops at the first unfinished TODO. "
        f"[The full chapter with solutions]({colab_url('notebooks/' + path.name)}).")
    banner.metadata["tags"] = ["student-banner"]
    banner["id"] = "student-banner"  # a fixed id: rebuilding gives identical files
    nb.cells.insert(0, banner)
    return nb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapters to convert (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "student")
    parser.add_argument("--check", action="store_true", help="fail if the files in --out are not up to date")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    stale = []
    for path in args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = student_notebook(path)
        target = args.out / path.name
        text = nbformat.writes(nb) + "\n"
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(target.name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    if stale:
        print(f"stale student notebooks (run `make student`): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
