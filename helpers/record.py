"""Recording results: myst-nb `glue` for numbers the book's prose shows and the tests read back."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from IPython.display import display

from .files import load_json, save_json


def record(name: str, value: Any, show: bool = False) -> None:
    """Glue `value` under `name` (myst-nb format); the book pastes it with {glue:text}`name`.

    Returns None, so that a cell ending with a glue call shows no stray value.
    """
    if not name.isidentifier():
        raise ValueError(f"record names must be identifiers (letters, digits, _), got {name!r}")
    value = _plain(value)
    try:
        from myst_nb import glue
    except ImportError:  # Colab has no myst-nb: emit the same output format ourselves
        prefix = "application/papermill.record/"
        display({prefix + "text/plain": repr(value)}, raw=True,
                metadata={"scrapbook": {"name": name, "mime_prefix": prefix}})
    else:
        glue(name, value, display=False)
    if show:
        print(f"{name} = {value!r}")


def _plain(value: Any) -> Any:
    """Numbers, strings and containers of them, so that a reader can parse them back."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_records(notebook: str | Path) -> dict[str, Any]:
    """Every value recorded in an executed notebook, by name (for tests and the results page)."""
    nb = json.loads(Path(notebook).read_text())
    found: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("scrapbook")
            key = meta and meta.get("mime_prefix", "") + "text/plain"
            if key and key in output.get("data", {}):
                text = output["data"][key]
                text = "".join(text) if isinstance(text, list) else text
                try:
                    found[meta["name"]] = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    found[meta["name"]] = text
    return found


# ---------------------------------------------------------------- results shared between chapters

def results_path(chapter: str, run: Any) -> Path:
    """The JSON file holding `chapter`'s results for the profile, data source and seed of `run` (a Setup)."""
    import hashlib
    import re

    from .profile import checkpoint_dir

    if not re.fullmatch(r"\d{2}", str(chapter)):
        raise ValueError(f"chapter must be a two-digit string such as '04', got {chapter!r}")
    data = run.data if run.data in ("standin", "real") else "npz-" + hashlib.sha1(run.data.encode()).hexdigest()[:8]
    return Path(checkpoint_dir()) / f"ch{chapter}-{run.profile}-{data}-seed{run.seed}-results.json"


def save_results(chapter: str, run: Any, values: dict[str, Any]) -> Path:
    """Save a chapter's result values (plain numbers and strings) for later chapters; atomic JSON write.

    The file is keyed by chapter, profile, data source and seed, and lives in the checkpoint folder
    (helpers.profile.checkpoint_dir(), in every profile), so chapter 5 can compare with chapter 4.
    """
    if not isinstance(values, dict):
        raise ValueError(f"values must be a dict of plain numbers and strings, got {type(values).__name__}")
    path = results_path(chapter, run)
    save_json({"chapter": str(chapter), "profile": run.profile, "data": run.data, "seed": run.seed,
               "values": _plain(values)}, path)
    return path


def load_results(chapter: str, run: Any) -> dict[str, Any] | None:
    """The values `save_results` stored for `chapter` with `run`'s profile, data source and seed; None if absent."""
    saved = load_json(results_path(chapter, run))  # None if never run: the caller says "run chapter NN first"
    key = {"chapter": str(chapter), "profile": run.profile, "data": run.data, "seed": run.seed}
    if saved is None or any(saved.get(k) != v for k, v in key.items()):
        return None
    values = saved.get("values")
    return values if isinstance(values, dict) else None
