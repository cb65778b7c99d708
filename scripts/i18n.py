"""Translated editions (Persian): message catalogues, translated notebooks and the translated book.

    python scripts/i18n.py update     # `make locales`: extract the English messages, merge them into
                                      #   locales/fa/LC_MESSAGES/*.po, then `generate`
    python scripts/i18n.py generate   # from the catalogues: locales/fa/notebooks/ and locales/fa/student/
                                      #   (for Colab) and helpers/check/messages_fa.py (the self-checks)
    python scripts/i18n.py build      # `make book-fa` (after `generate`): the Persian book in _build/html-fa
    python scripts/i18n.py check      # fails if a generated file is stale

Translators edit only the .po files. The English messages are those of Sphinx's gettext builder (book
pages and notebook markdown cells; code, outputs and math are left out by book/_ext/notebook_i18n.py),
plus the templates of the self-checks' messages (the f-strings of helpers/check) and of the student
banner (scripts/make_student.py). The Persian book is built from the same recorded notebooks as the
English one, without executing them: only the prose differs.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from functools import lru_cache
from pathlib import Path

import nbformat
import yaml
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "book" / "_ext")]

import make_student  # noqa: E402  (scripts/)
from notebook_i18n import localized_url  # noqa: E402  (book/_ext/)

LANGUAGES = ("fa",)
LOCALES = ROOT / "locales"
POT_DIR = ROOT / "_build" / "gettext"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHECKS = sorted(p for p in (ROOT / "helpers" / "check").glob("*.py") if p.stem not in ("language", "__init__")
                and not p.stem.startswith("messages_"))
CHECKS_DOMAIN, STUDENT_DOMAIN = "checks", "student"
# Without this, a number written in prose would be Latin in one paragraph and Persian in the next.
DIGITS = {"fa": str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")}
LANGUAGE_CELL = ('import os\n'
                 'os.environ["HELPERS_LANG"] = "{language}"  # the self-checks speak the language of this edition')
# What a message may hold besides prose: math, code, roles, link targets.
NOT_PROSE = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|``.*?``|`[^`]*`|\{[\w:-]+\}|\]\([^)]*\)|<[^>]*>|https?://\S+", re.S)


def needs_translation(msgid: str) -> bool:
    """Whether a message has words to translate (a table cell of numbers or a lone formula has none)."""
    return bool(re.search(r"[A-Za-z]{2,}", NOT_PROSE.sub(" ", msgid)))


# ---------------------------------------------------------------- extracting the English messages

def sphinx(builder: str, outdir: Path, language: str = "en", fresh: bool = False) -> int:
    """Build the book with Sphinx without executing a notebook (the book shows the recorded outputs)."""
    from jupyter_book.sphinx import build_sphinx

    overrides: dict = {"external_toc_path": str(ROOT / "_toc.yml"), "latex_individualpages": False,
                       "nb_execution_mode": "off", "language": language}
    if builder == "gettext":  # the catalogues' header names the book
        overrides["project"] = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["title"]
    if language != "en":  # launch buttons open the notebooks translated for Colab
        overrides["html_theme_options"] = {"path_to_docs": f"locales/{language}"}
    return build_sphinx(ROOT, outdir, noconfig=True, path_config=ROOT / "_config.yml", confoverrides=overrides,
                        builder=builder, doctreedir=outdir.parent / f".doctrees-{builder}-{language}",
                        freshenv=fresh, quiet=True)


def _placeholder(node: ast.FormattedValue) -> str:
    conversion = {-1: "", 115: "!s", 114: "!r", 97: "!a"}[node.conversion]
    spec = ""
    if node.format_spec is not None:
        spec = ":" + "".join(p.value if isinstance(p, ast.Constant) else _placeholder(p)
                             for p in node.format_spec.values)
    return "{" + ast.unparse(node.value) + conversion + spec + "}"


def _template(node: ast.AST) -> str:
    """A string or f-string as a template: fields are `{expression}`, literal braces doubled."""
    if isinstance(node, ast.Constant):
        return node.value.replace("{", "{{").replace("}", "}}")
    return "".join(p.value.replace("{", "{{").replace("}", "}}") if isinstance(p, ast.Constant) else _placeholder(p)
                   for p in node.values)


def source_templates(path: Path, inside: str | None = None) -> list[tuple[str, int]]:
    """(template, line) of the messages in a Python file: its strings and f-strings with words and a space.

    Left out: docstrings, the parts of f-strings, dictionary keys and subscripts, and the arguments of
    `Mistake(...)` (words a test looks for, not messages). `inside`: only strings within calls to it.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            skip.add(id(body[0].value))
        if isinstance(node, ast.JoinedStr):
            skip.update(id(n) for n in ast.walk(node) if n is not node)
        if isinstance(node, ast.Dict):
            skip.update(id(k) for k in node.keys if k is not None)
        if isinstance(node, ast.Subscript):
            skip.add(id(node.slice))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Mistake":
            skip.update(id(n) for arg in node.args[2:] + [k.value for k in node.keywords] for n in ast.walk(arg))
    wanted = None
    if inside:
        wanted = {id(n) for call in ast.walk(tree) if isinstance(call, ast.Call)
                  and getattr(call.func, "attr", getattr(call.func, "id", None)) == inside for n in ast.walk(call)}
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if id(node) in skip or (wanted is not None and id(node) not in wanted):
            continue
        if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            template = _template(node)
            literal = re.sub(r"\{[^{}]*\}", "", template)
            if " " in template and re.search(r"[A-Za-z]", literal):
                found.setdefault(template, node.lineno)
    return sorted(found.items(), key=lambda item: item[1])


def _write_pot(path: Path, domain: str, messages: list[tuple[str, str, int]]) -> None:
    catalog = Catalog(project="Deep Learning, Dissected", domain=domain, fuzzy=False)
    for msgid, source, line in messages:
        if msgid in catalog:
            catalog[msgid].locations.append((source, line))
        else:
            catalog.add(msgid, locations=[(source, line)])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        write_po(file, catalog, width=0, omit_header=False)


def extract() -> None:
    """The English messages as .pot files in _build/gettext: the book's prose, the checks, the student banner."""
    if POT_DIR.exists():
        for old in POT_DIR.rglob("*.pot"):
            old.unlink()
    if sphinx("gettext", POT_DIR, fresh=True):  # every page read again: no message may come from a stale cache
        raise SystemExit("the gettext build failed")
    for pot in POT_DIR.rglob("*.pot"):  # no entries for messages without words (numbers, formulas)
        with pot.open("rb") as file:
            catalog = read_po(file)
        for message in list(catalog):
            if message.id and not needs_translation(message.id):
                del catalog[message.id]
        with pot.open("wb") as file:
            write_po(file, catalog, width=0)
    checks = [(t, str(path.relative_to(ROOT)), line) for path in CHECKS for t, line in source_templates(path)]
    _write_pot(POT_DIR / f"{CHECKS_DOMAIN}.pot", CHECKS_DOMAIN, checks)
    banner = ROOT / "scripts" / "make_student.py"
    _write_pot(POT_DIR / f"{STUDENT_DOMAIN}.pot", STUDENT_DOMAIN,
               [(t, str(banner.relative_to(ROOT)), line) for t, line in source_templates(banner, "new_markdown_cell")])


def update() -> None:
    """Extract, then merge the English messages into every language's .po files (sphinx-intl)."""
    from sphinx_intl.basic import update as intl_update

    extract()
    intl_update(str(LOCALES), str(POT_DIR), LANGUAGES, line_width=0, jobs=1)


# ---------------------------------------------------------------- reading the catalogues

def catalogue(language: str, domain: str) -> dict[str, str]:
    """msgid -> msgstr of the finished translations of one .po file (no fuzzy, no empty ones)."""
    path = LOCALES / language / "LC_MESSAGES" / f"{domain}.po"
    if not path.exists():
        return {}
    with path.open("rb") as file:
        catalog = read_po(file)
    return {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}


# ---------------------------------------------------------------- translated notebooks

@lru_cache(maxsize=None)
def _markdown_parser():
    """markdown-it as MyST configures it for this book, so that messages are cut as Sphinx cuts them."""
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    extensions = {"amsmath", "dollarmath", "colon_fence", "deflist", "substitution"}
    return create_md_parser(MdParserConfig(enable_extensions=extensions), RendererHTML)


def _cells(line: str) -> list[str]:
    return re.split(r"(?<!\\)\|", line)


def markdown_messages(source: str) -> list[str]:
    """The messages Sphinx extracts from a markdown cell, in order (what `translate_markdown` replaces)."""
    return [key for key, _ in _blocks(source)]


LITERAL_DIRECTIVES = {"code", "code-block", "code-cell", "math", "bibliography", "raw", "eval-rst", "glue"}


def _blocks(source: str, offset: int = 0) -> list[tuple[str, tuple]]:
    """(message, where) of every paragraph, heading and table cell of a markdown text, directives' bodies included."""
    tokens = _markdown_parser().parse(source)
    blocks, in_table = [], False
    for i, token in enumerate(tokens):
        in_table = (in_table or token.type == "table_open") and token.type != "table_close"
        if token.type in ("fence", "colon_fence") and token.info.startswith("{") and token.map:
            name = token.info[1:].partition("}")[0]
            if name not in LITERAL_DIRECTIVES:  # e.g. {table} or {note}: Markdown inside
                body = token.content.split("\n")
                options = next((n for n, line in enumerate(body) if not re.match(r"\s*:[\w-]+:", line)), len(body))
                blocks += _blocks("\n".join(body[options:]), offset + token.map[0] + 1 + options)
            continue
        if token.type != "inline" or not token.map:
            continue
        message = token.content.replace("\n", " ").strip()
        if in_table:
            blocks.append((message, ("cell", offset + token.map[0])))
        elif tokens[i - 1].type in ("paragraph_open", "heading_open", "dt_open"):
            blocks.append((message, ("lines", offset + token.map[0], offset + token.map[1],
                                     token.content.split("\n")[0])))
    return blocks


def translate_markdown(source: str, translations: dict[str, str]) -> str:
    """A markdown cell with every translated paragraph, heading and table cell replaced; the rest as it was."""
    lines = source.split("\n")
    for message, where in reversed(_blocks(source)):
        if message not in translations:
            continue
        if where[0] == "cell":
            row = _cells(lines[where[1]])
            row = [f" {translations[message]} " if c.strip() == message else c for c in row]
            lines[where[1]] = "|".join(row)
        else:
            _, first, last, head = where
            prefix = lines[first][: lines[first].find(head)] if head in lines[first] else ""
            lines[first:last] = [prefix + translations[message]]
    return "\n".join(lines)


def _is_check(cell) -> bool:
    return cell.cell_type == "code" and "helpers.check." in cell.source


def translated_notebook(path: Path, language: str) -> nbformat.NotebookNode:
    """A chapter with its prose translated from the catalogues; code cells unchanged, self-check outputs translated."""
    from helpers.check import language as check_language

    translations = catalogue(language, f"notebooks/{path.stem}")
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            text = translate_markdown(cell.source, translations)
            text = localized_url(text, language) if text != cell.source else text
            if text != cell.source:  # right-to-left in Jupyter and Colab too; blank lines keep it Markdown
                cell.source = f'<div dir="rtl" lang="{language}">\n\n{text}\n\n</div>'
        elif _is_check(cell):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    output["text"] = check_language.translate_output(output["text"], language)
    setting = nbformat.v4.new_code_cell(LANGUAGE_CELL.format(language=language))
    setting["id"] = "language"  # a fixed id: regenerating gives identical files
    setting.metadata["tags"] = ["language"]
    nb.cells.insert(1, setting)
    return nb


def _fill(template: str, values: dict[str, str]) -> str:
    """A template with each `{field}` replaced by its value, and doubled braces undone."""
    text = re.sub(r"\{[^{}]+\}", lambda m: values.get(m.group(0), m.group(0)), template.replace("{{", "\0"))
    return text.replace("\0", "{").replace("}}", "}")


def student_banner(nb: nbformat.NotebookNode, path: Path, language: str) -> None:
    """Translate the student edition's banner (cell 0) with the `student` catalogue, if it holds its template."""
    solutions = sum("todo" in c.metadata.get("tags", []) for c in nb.cells)
    namespace = {"solutions": solutions, "path": path, "colab_url": make_student.colab_url}
    for msgid, msgstr in catalogue(language, STUDENT_DOMAIN).items():
        try:  # the fields are expressions of make_student's own f-string: evaluate them as it does
            values = {f: str(eval(f[1:-1], {}, namespace)) for f in re.findall(r"\{[^{}]+\}", msgid)}
        except Exception:
            continue
        if _fill(msgid, values) == nb.cells[0].source:
            values = {f: localized_url(v, language) for f, v in values.items()}
            values["{solutions}"] = str(solutions).translate(DIGITS.get(language, {}))
            nb.cells[0].source = f'<div dir="rtl" lang="{language}">\n\n{_fill(msgstr, values)}\n\n</div>'
            return


def messages_module(language: str) -> str:
    """helpers/check/messages_<language>.py: the finished translations of the checks' catalogue."""
    entries = sorted(catalogue(language, CHECKS_DOMAIN).items())
    body = "".join(f"    {msgid!r}:\n        {msgstr!r},\n" for msgid, msgstr in entries)
    return (f'"""The self-checks\' messages in {language!r}. Generated by `make locales` (scripts/i18n.py) from\n'
            f'locales/{language}/LC_MESSAGES/{CHECKS_DOMAIN}.po: edit the catalogue, not this file."""\n\n'
            f"MESSAGES = {{\n{body}}}\n")


def generated_files(language: str) -> dict[Path, str]:
    """Every file generated from the catalogues of one language, with its content."""
    import tempfile

    files: dict[Path, str] = {ROOT / "helpers" / "check" / f"messages_{language}.py": messages_module(language)}
    with tempfile.TemporaryDirectory() as tmp:
        for path in NOTEBOOKS:
            nb = translated_notebook(path, language)
            text = nbformat.writes(nb) + "\n"
            files[LOCALES / language / "notebooks" / path.name] = text
            translated = Path(tmp) / path.name
            translated.write_text(text, encoding="utf-8")
            student = make_student.student_notebook(translated)
            student_banner(student, path, language)
            files[LOCALES / language / "student" / path.name] = nbformat.writes(student) + "\n"
    return files


def generate(check: bool = False) -> int:
    """Write (or with check=True compare) the files generated from the catalogues."""
    stale = []
    for language in LANGUAGES:
        for path, text in generated_files(language).items():
            if check:
                if not path.exists() or path.read_text(encoding="utf-8") != text:
                    stale.append(str(path.relative_to(ROOT)))
                continue
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("stale translated files (run `make locales`):\n  " + "\n  ".join(stale))
        return 1
    return 0


# ---------------------------------------------------------------- the translated book

def build(language: str, outdir: Path | None = None) -> int:
    """The book in `language`, from the recorded notebooks: _build/html-<language>."""
    import shutil

    outdir = outdir or ROOT / "_build" / f"html-{language}"
    status = sphinx("html", outdir, language, fresh=True)  # a stale page would hide a missing translation
    sources = outdir / "_sources" / "notebooks"
    for path in (LOCALES / language / "notebooks").glob("*.ipynb"):  # "download .ipynb" gives the translated one
        if (sources / path.name).exists():
            shutil.copyfile(path, sources / path.name)
    if status == 0:
        print(f"Open {outdir.relative_to(ROOT) if outdir.is_relative_to(ROOT) else outdir}/index.html")
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["update", "generate", "build", "check"])
    parser.add_argument("--language", default=LANGUAGES[0], choices=LANGUAGES)
    parser.add_argument("--out", type=Path, help="build: the output folder (default _build/html-<language>)")
    args = parser.parse_args()
    if args.command == "update":
        update()
        return generate()
    if args.command == "generate":
        return generate()
    if args.command == "check":
        return generate(check=True)
    return build(args.language, args.out)


if __name__ == "__main__":
    sys.exit(main())
