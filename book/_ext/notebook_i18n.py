"""Sphinx extension: the book's translation (gettext) sees prose only, and translated pages link to translated notebooks.

- Code cells, their outputs and display math are data, not prose: they are neither extracted to the
  message catalogues nor translated, so every edition shows the same code and the same recorded outputs.
- In an edition other than English, the part captions of the table of contents are translated too, and
  Colab links to this repository's `notebooks/` and `student/` (written in the prose) open the notebooks
  generated for that language, `locales/<lang>/...`, whose prose is translated too (`scripts/i18n.py`).
- In a right-to-left edition, table cells without a right-to-left letter are marked `ltr` (book/_static/persian.css).

Markdown cells need nothing here: myst-nb parses a translated message of a notebook as MyST Markdown.
"""
from __future__ import annotations

import os
import re

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.locale import init as init_locale
from sphinx.transforms import SphinxTransform
from sphinx.util.i18n import docname_to_domain

COLAB_NOTEBOOK = re.compile(r"(?P<head>https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/)"
                            r"(?P<path>(?:notebooks|student)/[0-9][0-9]_\w+\.ipynb)")
RIGHT_TO_LEFT = ("fa", "ar", "he", "ur")
RTL_LETTER = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff]")


def localized_url(url: str, language: str) -> str:
    """A Colab link to a chapter notebook, redirected to the notebook generated for `language`."""
    if language in ("", "en"):
        return url
    return COLAB_NOTEBOOK.sub(lambda m: f"{m['head']}locales/{language}/{m['path']}", url)


_RENDERERS: dict = {}  # docname -> the myst-nb renderer of that notebook page (it holds the page's glue data)


def _retrieve_glue_data_of_the_page(retrieve):
    """myst-nb's retrieve_glue_data, also for a translated message: Sphinx parses each msgstr as a document of
    its own, without the notebook's glue data, so a {glue} role in it would find no key. The English page is
    parsed first, and its own glue roles leave its renderer here for the translated messages to use."""
    from myst_nb.ext.glue.utils import RetrievalError

    def retrieve_glue_data(document, key):
        env = getattr(document.settings, "env", None)
        docname = getattr(env, "docname", None)
        try:
            found = retrieve(document, key)
        except RetrievalError:
            if "nb_renderer" in document or docname not in _RENDERERS:
                raise
            document["nb_renderer"] = _RENDERERS[docname]
            try:
                return retrieve(document, key)
            finally:
                del document["nb_renderer"]  # as myst-nb does after a parse: a doctree is pickled
        _RENDERERS[docname] = document["nb_renderer"]
        return found
    return retrieve_glue_data


class DataIsNotProse(SphinxTransform):
    """Mark code cells, outputs and display math untranslatable, and directives' prose translatable.

    Sphinx translates only text that knows its source file; MyST directives such as {table} parse their
    Markdown body without telling the paragraphs where they come from, so those inherit their parent's.
    """

    default_priority = 10  # before sphinx.transforms.i18n.Locale (20)

    def apply(self, **kwargs) -> None:
        for node in self.document.findall(nodes.TextElement):
            if not node.source and isinstance(node.parent, nodes.Element):
                parent = node.parent
                while parent is not None and not parent.source:
                    parent = parent.parent
                if parent is not None:
                    node.source, node.line = parent.source, node.line or parent.line
        for cell in self.document.findall(nodes.container):
            if str(cell.get("nb_element", "")).startswith("cell_code"):
                for node in cell.findall(nodes.TextElement):
                    node["translatable"] = False
        for node in self.document.findall(nodes.math_block):
            node["translatable"] = False


class TranslateTocCaptions(SphinxTransform):
    """Translate the part captions of the table of contents (_toc.yml), which sphinx-external-toc inserts
    after Sphinx has translated the page (priority 100 > 20). Their messages are in the root page's catalogue."""

    default_priority = 101

    def apply(self, **kwargs) -> None:
        if (self.config.language or "en") == "en":
            return
        domain = docname_to_domain(self.env.docname, self.config.gettext_compact)
        catalog, found = init_locale([os.path.join(self.env.srcdir, d) for d in self.config.locale_dirs],
                                     self.config.language, domain)
        if not found:
            return
        for toctree in self.document.findall(addnodes.toctree):
            for original in toctree.extract_original_messages():
                translated = catalog.gettext(original)
                if translated != original:
                    toctree.apply_translated_message(original, translated)


def redirect_colab_links(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """In a translated edition, links to the chapter notebooks open the translated notebooks."""
    language = app.config.language or "en"
    for reference in doctree.findall(nodes.reference):
        if "refuri" in reference:
            reference["refuri"] = localized_url(reference["refuri"], language)


def mark_left_to_right_cells(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """In a right-to-left edition, a table cell without a right-to-left letter (a formula, a number, an English
    term) is laid out left to right (class `ltr`), so that "$x$, $y$" does not read "y, x"."""
    if (app.config.language or "en") not in RIGHT_TO_LEFT:
        return
    for entry in doctree.findall(nodes.entry):
        if not RTL_LETTER.search(entry.astext()):
            entry["classes"].append("ltr")


def setup(app: Sphinx) -> dict:
    from myst_nb.ext.glue import directives, roles

    for module in (roles, directives):
        if not getattr(module.retrieve_glue_data, "of_the_page", False):
            module.retrieve_glue_data = _retrieve_glue_data_of_the_page(module.retrieve_glue_data)
            module.retrieve_glue_data.of_the_page = True
    app.add_transform(DataIsNotProse)
    app.add_transform(TranslateTocCaptions)
    app.connect("doctree-resolved", redirect_colab_links)
    app.connect("doctree-resolved", mark_left_to_right_cells)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
