"""The Persian edition: complete and current catalogues, consistent terms, files generated from them, a clean build.

Translators check their work in seconds with `pytest tests/test_persian.py -m "not book"`; the book build
(`-m book`) takes about a minute. A failure names the catalogue (the page) and the paragraph.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nbformat
import pytest
import yaml
from babel.messages.pofile import read_po

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import i18n  # noqa: E402

from helpers import check  # noqa: E402
from helpers.check import language  # noqa: E402

LANGUAGE = "fa"
PO_DIR = ROOT / "locales" / LANGUAGE / "LC_MESSAGES"
PO_FILES = sorted(PO_DIR.rglob("*.po"))
PERSIAN = "\u0600-\u06FF"
LETTER = "\u0621-\u064A\u066E-\u06D3\u06FA-\u06FF"  # Persian letters, without punctuation and digits
ZWNJ = "\u200c"


def read(path: Path):
    with path.open("rb") as file:
        return read_po(file)


def page(path: Path) -> str:
    return str(path.relative_to(PO_DIR).with_suffix(""))


def paragraph(number: int, message) -> str:
    """How a failure names a message: its number in the page, where it comes from, its first words."""
    where = ", ".join(f"{source}:{line}" for source, line in message.locations[:1])
    words = message.id if len(message.id) <= 80 else message.id[:77] + "..."
    return f"paragraph {number} ({where}): {words!r}"


def translated(path: Path):
    """(number, message) of every finished translation of a catalogue."""
    return [(n, m) for n, m in enumerate((m for m in read(path) if m.id), 1) if m.string and not m.fuzzy]


def toc_pages() -> list[str]:
    """The book's pages, from _toc.yml: book/intro, notebooks/01_mlp_backprop, ..."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return files


def source_messages(name: str) -> list[str]:
    """The English messages of a page, as Sphinx extracts them (paragraphs, headings, table cells)."""
    notebook = ROOT / f"{name}.ipynb"
    if notebook.exists():
        texts = [c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "markdown"]
    else:
        texts = [(ROOT / f"{name}.md").read_text(encoding="utf-8")]
    return [m for text in texts for m in i18n.markdown_messages(text) if i18n.needs_translation(m)]


# ---------------------------------------------------------------- complete and current

def test_there_are_catalogues_for_every_page_the_checks_and_the_student_banner():
    names = {page(p) for p in PO_FILES}
    missing = {name for name in toc_pages() if source_messages(name)} - names
    missing |= {i18n.CHECKS_DOMAIN, i18n.STUDENT_DOMAIN} - names
    assert not missing, f"no catalogue for {sorted(missing)}: run `make locales`"


@pytest.mark.parametrize("name", toc_pages())
def test_catalogue_holds_the_current_english_text(name):
    """A changed English paragraph must reach the catalogue (`make locales`), where it shows as untranslated."""
    path = PO_DIR / f"{name}.po"
    messages = source_messages(name)
    if not messages:
        return
    assert path.exists(), f"no catalogue {path.relative_to(ROOT)}: run `make locales`"
    ids = {m.id for m in read(path)}
    stale = [f"paragraph {n}: {m[:80]!r}" for n, m in enumerate(messages, 1) if m not in ids]
    assert not stale, f"{name}: English text not in the catalogue (run `make locales`):\n" + "\n".join(stale)


@pytest.mark.parametrize("path", PO_FILES, ids=page)
def test_every_message_has_a_finished_translation(path):
    """No empty and no fuzzy entry: a fuzzy one is an old translation of an English text that has changed."""
    problems = [("fuzzy " if m.fuzzy else "untranslated ") + paragraph(n, m)
                for n, m in enumerate((m for m in read(path) if m.id), 1) if not m.string or m.fuzzy]
    assert not problems, f"{page(path)}: {len(problems)} message(s) to translate:\n" + "\n".join(problems[:40])


@pytest.mark.skipif(shutil.which("msgfmt") is None, reason="GNU gettext's msgfmt is not installed")
@pytest.mark.parametrize("path", PO_FILES, ids=page)
def test_catalogue_is_valid_for_msgfmt(path):
    # Only the self-checks' messages are format strings. Babel flags prose such as "70-90% of" as
    # python-format ("% o"), so the format check would demand a "% o" in the Persian text.
    checks = ["-c"] if page(path) == i18n.CHECKS_DOMAIN else ["--check-header", "--check-domain"]
    result = subprocess.run(["msgfmt", *checks, "-o", "/dev/null", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_generated_persian_files_are_up_to_date():
    """locales/fa/notebooks, locales/fa/student (Colab) and helpers/check/messages_fa.py follow the catalogues."""
    assert i18n.generate(check=True) == 0, "run `make locales` (or `python scripts/i18n.py generate`)"


@pytest.mark.parametrize("notebook", i18n.NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_notebook_can_place_every_translation(notebook):
    """Every message of a chapter's catalogue is a paragraph, heading or cell that the generator replaces."""
    path = PO_DIR / "notebooks" / f"{notebook.stem}.po"
    if not path.exists():
        pytest.skip("no catalogue yet")
    placed = {m for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "markdown"
              for m in i18n.markdown_messages(c.source)}
    lost = [paragraph(n, m) for n, m in enumerate((m for m in read(path) if m.id), 1) if m.id not in placed]
    assert not lost, "messages the Colab notebook would leave in English:\n" + "\n".join(lost)


def test_a_translated_paragraph_replaces_the_english_one_and_keeps_the_markup_around_it():
    source = "## 1.2 Backprop\n\n1. **By hand**: a\n   sketch.\n2. Kept.\n\n| a | 10 |\n|---|---|\n| b c | 2 |\n\n$$x$$"
    out = i18n.translate_markdown(source, {"1.2 Backprop": "۱.۲ پس‌انتشار", "**By hand**: a sketch.": "**دستی**: طرح.",
                                           "b c": "ب پ"})
    assert out == "## ۱.۲ پس‌انتشار\n\n1. **دستی**: طرح.\n2. Kept.\n\n| a | 10 |\n|---|---|\n| ب پ | 2 |\n\n$$x$$"


def test_student_banner_is_translated_from_its_template(monkeypatch):
    """The Persian student edition's banner: the catalogue's template, with Persian digits and the Persian chapter."""
    (msgid, _), = i18n.source_templates(ROOT / "scripts" / "make_student.py", "new_markdown_cell")
    fake = {msgid: "**ویراست دانشجو.** {solutions} سلول. [فصل کامل]({colab_url('notebooks/' + path.name)})."}
    monkeypatch.setattr(i18n, "catalogue", lambda language, domain: fake if domain == i18n.STUDENT_DOMAIN else {})
    notebook = i18n.NOTEBOOKS[0]
    nb = i18n.make_student.student_notebook(notebook)
    i18n.student_banner(nb, notebook, LANGUAGE)
    todos = str(sum("todo" in c.metadata.get("tags", []) for c in nb.cells)).translate(i18n.DIGITS[LANGUAGE])
    assert nb.cells[0].source == (f'<div dir="rtl" lang="fa">\n\n**ویراست دانشجو.** {todos} سلول. [فصل کامل](https://'
                                  'colab.research.google.com/github/dl-dissected/deep-learning-dissected/blob/main/'
                                  f'locales/fa/notebooks/{notebook.name}).\n\n</div>')


# ---------------------------------------------------------------- what a translation must keep

MARKUP = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|``.*?``|`[^`]*`|\{[\w:-]+\}`[^`]*`|\]\([^)]*\)", re.S)


def markup(text: str, link=lambda url: url) -> Counter:
    """Math, code, roles with their targets and link targets: what a translation copies unchanged."""
    return Counter(link(m) if m.startswith("](") else m for m in MARKUP.findall(text))


@pytest.mark.parametrize("path", PO_FILES, ids=page)
def test_translation_keeps_math_code_roles_and_links(path):
    """Translators translate words only: formulas, `code`, {role}`targets` and link targets stay as they are."""
    problems = []
    for n, m in translated(path):
        if page(path) in (i18n.CHECKS_DOMAIN, i18n.STUDENT_DOMAIN):
            if sorted(set(re.findall(r"\{[^{}]+\}", m.id))) != sorted(set(re.findall(r"\{[^{}]+\}", m.string))):
                problems.append(paragraph(n, m) + ": the {fields} differ")
        elif markup(m.id) != markup(m.string, lambda url: url.replace(f"/locales/{LANGUAGE}/", "/")):
            lost = markup(m.id) - markup(m.string)
            problems.append(paragraph(n, m) + f": changed or missing {sorted(lost) or 'markup'}")
    assert not problems, "\n".join(problems)


TYPOGRAPHY = [
    (re.compile("[\u064a\u0643]"), "Arabic ي or ك: Persian writes ی and ک"),
    (re.compile("[\u0660-\u0669]"), "Arabic-Indic digits: Persian digits are ۰۱۲۳۴۵۶۷۸۹"),
    (re.compile(f"(?<![{PERSIAN}{ZWNJ}])(?:ن?می) (?=[{PERSIAN}])"), "«می» needs a half-space (ZWNJ): «می‌شود»"),
    (re.compile(f"(?<=[{PERSIAN}]) (?:ها|های|هایی)(?![{PERSIAN}])"), "plural «ها» needs a half-space: «لایه‌ها»"),
    (re.compile(f"(?<=[{PERSIAN}])[,;?]"), "Latin , ; ? after Persian text: Persian writes ، ؛ ؟"),
    (re.compile(f" {ZWNJ}|{ZWNJ} |{ZWNJ}{ZWNJ}"), "a half-space (ZWNJ) next to a space or another half-space"),
]


def latin_digits_in_prose(text: str) -> list[str]:
    """Latin digits outside math, code, links and Latin-script names (ResNet-18, CIFAR-10 keep theirs)."""
    prose = i18n.NOT_PROSE.sub(" ", text)
    prose = re.sub(r"[A-Za-z_][\w.\-×/]*", " ", prose)  # names and identifiers, digits included
    return re.findall(r"[0-9]+", prose)


@pytest.mark.parametrize("path", [p for p in PO_FILES if page(p) not in (i18n.CHECKS_DOMAIN,)], ids=page)
def test_persian_typography(path):
    """Persian letters and digits, half-spaces, Persian punctuation; numbers in prose in Persian digits.

    The self-checks' messages are printed in a code output, where numbers stay in Latin digits.
    """
    problems = []
    for n, m in translated(path):
        if m.string == m.id:  # kept in English on purpose (an English term of the glossary)
            continue
        for pattern, rule in TYPOGRAPHY:
            if pattern.search(i18n.NOT_PROSE.sub(" ", m.string)):
                problems.append(f"{paragraph(n, m)}: {rule}")
        if latin_digits_in_prose(m.string):
            problems.append(f"{paragraph(n, m)}: Latin digits {latin_digits_in_prose(m.string)} in prose; "
                            "write ۰۱۲۳۴۵۶۷۸۹ (Latin digits stay in math, code, tables of numbers)")
    assert not problems, "\n".join(problems)


def test_typography_rules_catch_the_usual_slips():
    assert latin_digits_in_prose("در ۱۰ ایپاک با ResNet-18 و $x_1$ و `lr=0.1`") == []
    assert latin_digits_in_prose("در 10 ایپاک") == ["10"]
    bad = ["مي‌شود", "می شود", "لایه ها", "چرا?", "گام ۳٫۵ و ٣"]
    assert all(any(p.search(text) for p, _ in TYPOGRAPHY) for text in bad), bad
    assert not any(p.search("می‌شود، لایه‌ها؛ چرا؟ ۳٫۵") for p, _ in TYPOGRAPHY)


# ---------------------------------------------------------------- one term, one translation

SUFFIX = f"(?:{ZWNJ}?(?:هایی|های|ها|ای|ی|ان|ش|شان|تر|ترین|شده)|[\u064b-\u065f])*"  # plural, ezafe, diacritics


def _forms(cell: str) -> list[str]:
    """"hidden unit (neuron)" -> ["hidden unit", "neuron"]."""
    head, _, rest = cell.partition(" (")
    return [head.strip()] + [f.strip() for f in rest.rstrip(")").split(",") if f.strip()]


def glossary() -> list[tuple[list[str], list[str]]]:
    """(English forms, Persian forms) of every term of book/glossary.md."""
    terms = []
    for line in (ROOT / "book" / "glossary.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and line.startswith("|") and cells[0] not in ("English", "---"):
            terms.append((_forms(cells[0]), _forms(cells[1])))
    return terms


def english_pattern(form: str) -> re.Pattern:
    words = [re.escape(w) for w in re.split(r"[\s-]+", form)]
    flags = 0 if re.search(r"[A-Z0-9]", form) else re.I  # "SI" is a name, "Loss" a word
    return re.compile(r"(?<![\w-])" + r"[\s-]+".join(words) + r"(?:s|es)?(?![\w-])", flags)


def persian_pattern(form: str) -> re.Pattern:
    """A Persian term with its suffixes («لایه‌های پنهان» for «لایه‌ی پنهان»); Latin forms as in English."""
    if not re.search(f"[{PERSIAN}]", form):
        return english_pattern(form)
    words = [re.sub(f"({ZWNJ}ی|\u0654)$", "", w) for w in form.split()]
    body = r"\s+".join(re.escape(w) + SUFFIX for w in words)
    return re.compile(f"(?<![{LETTER}]){body}(?![{LETTER}])")


def is_name(form: str) -> bool:
    """An abbreviation or a name (MLP, k-NN, BatchNorm): Persian text may write it as it is."""
    return bool(re.search(r"[A-Z0-9]", form))


GLOSSARY = [([english_pattern(e) for e in english],
             [persian_pattern(p) for p in persian] + [english_pattern(e) for e in english if is_name(e)], english[0],
             persian[0]) for english, persian in glossary()]
# Reviewed exceptions: (catalogue, English term, start of the English message).
# (page, glossary term, start of the English message): reviewed places where the English word is not the term.
TERM_EXCEPTIONS: set[tuple[str, str, str]] = {
    ("notebooks/08_ablation", "residual connection", "A tempting shortcut"),  # a short cut in a procedure
    ("checks", "residual connection", "when several samples are exactly equally close"),  # a quicker formula
    ("notebooks/03_robust_resnet", "loss", "Transfer from the richer domain"),  # lost accuracy, not the loss function
    # statistical bias («سوگیری»), not the learned constant of a layer («بایاس»)
    ("notebooks/06_separation_index", "bias", "**CSI can be high where SI is low**"),
    ("notebooks/06_separation_index", "bias", "The best prefix was *chosen*"),
    ("notebooks/02_dropout_regularisation", "bias", "The regularisation coefficient trades"),
}


def missing_terms(english: str, persian: str) -> list[tuple[str, str]]:
    """(English term, Persian term) of every glossary term in `english` whose Persian term is not in `persian`."""
    english, persian = i18n.NOT_PROSE.sub(" ", english), i18n.NOT_PROSE.sub(" ", persian)
    return [(term, farsi) for en, fa, term, farsi in GLOSSARY
            if any(p.search(english) for p in en) and not any(p.search(persian) for p in fa)]


def test_the_glossary_is_read_and_matched_with_persian_suffixes():
    terms = dict((english[0], persian[0]) for english, persian in glossary())
    assert terms["hidden layer"] == "لایه‌ی پنهان" and terms["callback"] == "تابع بازفراخوان" and len(terms) > 100
    assert missing_terms("Two hidden layers and the gradients", "دو لایه‌های پنهان و گرادیان‌ها") == []
    assert missing_terms("An MLP, a callback", "یک MLP و یک پاسخ") == [("callback", "تابع بازفراخوان")]
    assert missing_terms("the head", "سرعت") == [("head", "سر")]
    assert missing_terms("the label's mean", "میانگینِ برچسبِ آن") == []


@pytest.mark.parametrize("path", PO_FILES, ids=page)
def test_translation_uses_the_glossary_terms(path):
    """Where the English says a glossary term, the Persian says that term's Persian entry."""
    problems = []
    for n, m in translated(path):
        if m.string == m.id:
            continue
        english = re.sub(r"\{[^{}]*\}", " ", m.id) if page(path) == i18n.CHECKS_DOMAIN else m.id  # code in fields
        for term, farsi in missing_terms(english, m.string):
            if not any(e[0] == page(path) and e[1] == term and m.id.startswith(e[2]) for e in TERM_EXCEPTIONS):
                problems.append(f"{paragraph(n, m)}: says {term!r} but not «{farsi}»")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the self-checks in Persian

def run_all_checks(capsys) -> str:
    """Everything the self-checks print for the correct solutions, the typical mistakes and a missing body."""
    def not_implemented(*args, **kwargs):
        raise NotImplementedError

    for name, fns in check.SOLUTIONS.items():
        for fn in fns:
            getattr(check, name)(fn)
    for mistake in check.MISTAKES:
        getattr(check, mistake.check)(mistake.wrong)
    for name in check.SOLUTIONS:
        getattr(check, name)(not_implemented)
    return capsys.readouterr().out


def test_checks_speak_english_unless_asked(capsys, monkeypatch):
    monkeypatch.delenv("HELPERS_LANG", raising=False)
    english = run_all_checks(capsys)
    monkeypatch.setattr(language, "_templates", lambda name: ())  # a language with nothing translated
    language.set_language("fa")
    try:
        assert run_all_checks(capsys) == english  # untranslated text is printed as it is, byte for byte
    finally:
        language.set_language(None)


def test_a_persian_catalogue_translates_composed_messages(capsys, monkeypatch):
    fake = {"test case {number}": "مورد آزمون {number}",
            "{where}: {got:.6g} is off by {got - want:+.3g}": "{where}: {got:.6g} به اندازه‌ی {got - want:+.3g} خطا دارد",
            "one class only: no negative pair": "فقط یک کلاس: بدون زوج منفی",
            "   Hint: {hint}": "   راهنمایی: {hint}", "average the losses": "میانگین زیان‌ها را بگیرید"}
    monkeypatch.setitem(sys.modules, "helpers.check.messages_xx", type(sys)("messages_xx"))
    sys.modules["helpers.check.messages_xx"].MESSAGES = fake
    missed: list[str] = []
    text = "test case 2 (one class only: no negative pair): 0.5 is off by +0.1"
    assert (language.translate(text, missed, "xx")
            == "مورد آزمون 2 (فقط یک کلاس: بدون زوج منفی): 0.5 به اندازه‌ی +0.1 خطا دارد") and not missed
    out = language.translate_output(f"{check.FAIL} f: {text}\n   Hint: average the losses\nother", "xx")
    assert out.splitlines()[1:] == ["   راهنمایی: میانگین زیان‌ها را بگیرید", "other"]
    language.translate("an English sentence the catalogue lacks", missed, "xx")
    assert missed == ["an English sentence the catalogue lacks"]


def test_every_self_check_message_is_translated(capsys, monkeypatch):
    """Everything the checks print to a student in Persian comes from the catalogue (checks.po)."""
    printed: list[tuple[str, list[str]]] = []  # (a printed message, the parts of it left in English)
    translate = language.translate

    def recording(text, missed=None, name=None):
        printed.append((text, []))
        return translate(text, printed[-1][1], name)

    monkeypatch.setattr(check.grading, "translate", recording)
    language.set_language(LANGUAGE)
    try:
        run_all_checks(capsys)
    finally:
        language.set_language(None)
    templates = [m.id for m in read(PO_DIR / f"{i18n.CHECKS_DOMAIN}.po") if m.id]

    def template_of(text: str) -> str | None:
        """The catalogue's message that prints `text` (or a part of it, cut at ": " or "; ")."""
        for template in templates:
            parts = [p for p in [template] + re.split(r"(?<=\S): |; ", template)
                     if re.search("[A-Za-z]", re.sub(r"\{[^{}]*\}", "", p))]  # a bare {field} is no evidence
            if any(language.matches(part, text) for part in parts):
                return repr(template)
        return None

    missing = set()
    for text, english in printed:
        whole = template_of(text) if english else None
        missing |= {whole} - {None}
        for part in english:  # a message and the messages in its fields (a hint, a test case's label)
            owner = template_of(part)
            if owner or not whole:
                missing.add(owner or f"{part!r} (printed, but not in checks.po: extract it with `make locales`)")
    missing = sorted(missing)
    assert not missing, (f"{len(missing)} message(s) of checks.po to translate (then `make book-fa` or "
                         "`python scripts/i18n.py generate`):\n" + "\n".join(missing[:60]))


# ---------------------------------------------------------------- the Persian book

@pytest.fixture(scope="module")
def persian_book(tmp_path_factory) -> tuple[Path, str]:
    """The Persian book built into a temporary folder from the recorded notebooks, and the build's log."""
    out = tmp_path_factory.mktemp("book-fa") / "html"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "i18n.py"), "build", "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    return out, log


@pytest.mark.book
def test_persian_book_builds_without_warnings(persian_book):
    _, log = persian_book
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert not warnings, "\n".join(warnings[:20])


@pytest.mark.book
def test_persian_pages_are_right_to_left_and_open_persian_notebooks(persian_book):
    html, _ = persian_book
    chapter = (html / "notebooks" / "01_mlp_backprop.html").read_text(encoding="utf-8")
    assert '<html lang="fa"' in chapter and "persian.css" in chapter
    assert "colab.research.google.com/github/dl-dissected/deep-learning-dissected/blob/main/locales/fa/notebooks/" \
           "01_mlp_backprop.ipynb" in chapter
    assert not re.search(r"colab\.research\.google\.com/github/[^\"']*/blob/main/(notebooks|student)/", chapter)
    assert (html / "_static" / "fonts" / "Vazirmatn-Variable.woff2").is_file()
    assert (html / "glossary.html").exists() or (html / "book" / "glossary.html").exists()
