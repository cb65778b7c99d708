"""Files: every write is atomic (checkpoints, JSON records), and a JSON record that cannot be read is simply absent."""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary file beside `path` to write; it replaces `path` only if the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name that the writer itself creates, so the file gets the umask's usual permissions
    # (mkstemp would make it owner-only).
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_torch(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a killed kernel never leaves half a file."""
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def save_json(record: Mapping[str, Any], path: str | Path) -> None:
    """Write JSON to a temporary file in the same folder, then os.replace: a killed run never leaves half a file."""
    with atomic_file(path) as tmp, open(tmp, "w") as file:
        json.dump(record, file, indent=1, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())


def load_json(path: str | Path) -> dict | None:
    """The JSON object stored at `path`; None if it is absent, unreadable or not an object."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):  # never written, or half-written by an older version: treat as absent
        return None
    return record if isinstance(record, dict) else None
