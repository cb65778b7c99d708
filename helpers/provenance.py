"""What produced a chapter's outputs: the provenance line `setup` prints, and the hashes that tell a stale recording.

A recording (scripts/record_book.py) stores the provenance, a hash of every code cell's source and a
hash of helpers/ in the notebook's metadata under "recording"; the tests compare them with the
notebook as it is now.
"""
from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import REAL_NAMES, REAL_SIZES, SPLITS

HELPERS = Path(__file__).resolve().parent
METADATA_KEY = "recording"


def data_text(datasets: tuple[str, ...] | list[str], source: str) -> str:
    """The data part of the line: each dataset with its source and split sizes, or the stand-ins."""
    names = [REAL_NAMES.get(name, name) for name in datasets]
    if source == "standin":
        return f"{' + '.join(names) or 'data'} stand-in{'s' * (len(names) > 1)} (offline, generated; figures say so)"
    where = "torchvision" if source == "real" else "local .npz copy"
    parts = []
    for name in datasets:
        # torchvision's splits (the "real" source); a folder of .npz files is measured instead
        sizes = [REAL_SIZES.get((name, split)) if source == "real" else _npz_size(source, name, split)
                 for split in SPLITS]
        counts = ", ".join(f"{split} {n:,}" if n is not None else f"{split} missing" for split, n in zip(SPLITS, sizes))
        parts.append(f"{REAL_NAMES.get(name, name)} real ({where}): {counts}")
    return "; ".join(parts) or f"real data ({where})"


def _npz_size(folder: str, name: str, split: str) -> int | None:
    """Images in <folder>/<name>_<split>.npz, read from its labels only (None if the file is missing)."""
    path = Path(folder) / f"{name}_{split}.npz"
    if not path.is_file():
        return None
    with np.load(path) as archive:  # an .npz reads one array at a time: the images stay on disk
        return len(archive["y"])


def machine(device: torch.device, threads: int) -> str:
    """The GPU's name, or "CPU, N threads"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {threads} thread{'s' * (threads > 1)}"


def provenance(profile: str, data: str, version: str, where: str) -> dict[str, str]:
    """The provenance of a run as plain strings (glued as chNN_provenance, stored by the recording)."""
    return {"profile": profile, "data": data, "date": datetime.date.today().isoformat(),
            "helpers": version, "machine": where}


def line(record: dict[str, Any]) -> str:
    """The one visible line that opens a chapter's outputs."""
    return (f"Run: {record['profile']} profile | {record['data']} | {record['date']} | "
            f"helpers {record['helpers']} | {record['machine']}")


def code_hashes(cells: list[dict]) -> list[str]:
    """A short hash of the source of every code cell, in order."""
    sources = ("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
               for c in cells if c["cell_type"] == "code")
    return [hashlib.sha1(source.encode()).hexdigest()[:12] for source in sources]


def helpers_hash() -> str:
    """A short hash of every .py file of helpers/ (paths and contents): a changed helper may change outputs.

    Left out: the self-checks' generated translations (check/messages_<lang>.py), which change with every
    translated sentence and never touch the recorded (English) outputs.
    """
    digest = hashlib.sha1()
    for path in sorted(p for p in HELPERS.rglob("*.py") if not p.match("check/messages_*.py")):
        digest.update(path.relative_to(HELPERS).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]
