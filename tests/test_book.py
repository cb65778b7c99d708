"""The book builds from the committed notebooks, executing nothing, and reads offline: every script is its own."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import ROOT

SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.I)


def external_scripts(html: str) -> list[str]:
    """The src of every <script> that another host serves (http:, https: or protocol-relative //)."""
    return [src for src in SCRIPT.findall(html) if urlparse(src).scheme in ("http", "https") or src.startswith("//")]


def test_external_scripts_are_found():
    page = ('<script src="_static/x.js"></script><script defer="defer" src="https://cdn.example.org/m.js">'
            "</script><script src='//cdn.example.org/y.js'></script>")
    assert external_scripts(page) == ["https://cdn.example.org/m.js", "//cdn.example.org/y.js"]


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> tuple[Path, str]:
    """The book built into a temporary folder (as committed, nothing executed) and the build's log."""
    out = tmp_path_factory.mktemp("book")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run([str(jupyter_book), "build", str(ROOT), "--path-output", str(out)],
                            capture_output=True, text=True, cwd=ROOT)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    return out / "_build" / "html", log


@pytest.mark.book
def test_book_builds_without_executing_or_warnings(built_book):
    _, log = built_book
    assert "execution_mode='off'" in log and "Executing" not in log, "the book renders the recorded notebooks"
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert not warnings, "\n".join(warnings[:20])


@pytest.mark.book
def test_no_page_loads_a_script_from_another_host(built_book):
    html, _ = built_book
    pages = sorted(html.rglob("*.html"))
    assert len(pages) > 10, pages
    found = {str(page.relative_to(html)): external_scripts(page.read_text()) for page in pages}
    assert not {page: srcs for page, srcs in found.items() if srcs}, "pages load scripts from other hosts"
    chapter = (html / "notebooks" / "01_mlp_backprop.html").read_text()
    assert "_static/mathjax/tex-chtml.js" in chapter and (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
