"""Profiles (smoke / cpu / full), seeding, device choice and the one set-up call of every chapter.

Each chapter's settings live in helpers/settings/chNN.py; `setup` reads them in a cell *after* the
papermill parameters cell, so injected parameters take effect.
"""
from __future__ import annotations

import hashlib
import os
import platform
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from .settings import chapter_settings, checkpoint_keys, flat, setting

PROFILES = ("smoke", "cpu", "full")
DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice, before setup() changes it
PROFILE_HELP = {
    "smoke": "offline stand-in data, tiny models and epochs: minutes on a 2-core CPU",
    "cpu": "real data, small subsets and widths: a few minutes per chapter on a laptop CPU",
    "full": "the real experiment at the scale of the original coursework: needs a GPU",
}


@dataclass
class Setup:
    """What `setup` resolved: profile, why, device, seed, data source and the chapter's settings."""

    profile: str
    reason: str
    device: torch.device
    seed: int
    data: str
    chapter: str | None
    settings: SimpleNamespace = field(default_factory=SimpleNamespace)

    @property
    def standin(self) -> bool:
        """True when the chapter runs on the offline stand-in datasets."""
        return self.data == "standin"

    def checkpoint(self, name: str, chapter: str | None = None) -> str | None:
        """Path of a resumable checkpoint for `name` (None in smoke: those runs take seconds).

        The name ends with a hash of the data source and of the settings that the chapter declares
        for this checkpoint (CHECKPOINTS in helpers/settings/chNN.py): a run that trains other weights
        never resumes from this one's, and a changed plot or display setting keeps it. `chapter` names
        another chapter's checkpoint for the same profile, seed and data (chapter 7 loads chapter 6's).
        """
        chapter = self.chapter if chapter is None else chapter
        keys = checkpoint_keys(chapter, name)  # an undeclared name fails in smoke too, not only on a GPU
        if self.profile == "smoke":
            return None
        settings = self.settings if chapter == self.chapter else chapter_settings(chapter, self.profile)
        path = self._checkpoint_path(chapter, name, {key: setting(settings, key) for key in keys})
        _adopt_legacy(self._checkpoint_path(chapter, name, flat(settings)), path)
        return path

    def _checkpoint_path(self, chapter: str, name: str, identity: dict) -> str:
        """ch<chapter>-<profile>-seed<seed>-<name>-<hash of identity and data source>.pt in checkpoint_dir()."""
        tag = hashlib.sha1(repr((sorted(identity.items()), self.data)).encode()).hexdigest()[:8]
        return os.path.join(checkpoint_dir(), f"ch{chapter}-{self.profile}-seed{self.seed}-{name}-{tag}.pt")


def _adopt_legacy(legacy: str, path: str) -> None:
    """Rename a checkpoint (and its best weights) still named by the hash of its chapter's whole settings row.

    Checkpoints used to hash every setting, display options included; the same weights now go by the
    hash of their declared settings only, so an earlier run is renamed instead of trained again.
    """
    from .training import best_path  # training imports this module

    moved = []
    for old, new in ((Path(legacy), Path(path)), (best_path(legacy), best_path(path))):
        if old.exists() and not new.exists():
            old.rename(new)
            moved.append(old.name)
    if moved:
        print(f"Renamed {' and '.join(moved)} to {Path(path).name} "
              f"(checkpoint names now hash only the settings that define the weights).")


def checkpoint_dir() -> str:
    """Where checkpoints go: $HELPERS_CHECKPOINT_DIR, else ~/.cache/dl-dissected/checkpoints."""
    return os.path.expanduser(os.environ.get("HELPERS_CHECKPOINT_DIR", "~/.cache/dl-dissected/checkpoints"))


def has_gpu() -> bool:
    """True when CUDA is available."""
    return torch.cuda.is_available()


def resolve_profile(profile: str = "auto") -> tuple[str, str]:
    """Turn "auto" (or a name) into a known profile name and the reason it was chosen."""
    if profile is None or str(profile).lower() == "auto":
        env = os.environ.get("HELPERS_PROFILE", "").strip().lower()
        if env:
            name, reason = env, "HELPERS_PROFILE is set"
        elif has_gpu():
            name, reason = "full", "a GPU was found and HELPERS_PROFILE is not set"
        else:
            name, reason = "smoke", "no GPU was found and HELPERS_PROFILE is not set"
    else:
        name, reason = str(profile).strip().lower(), "PROFILE was set in the parameters cell"
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r} ({reason}). Choose one of {', '.join(PROFILES)} "
                         f"or 'auto', e.g. PROFILE = 'smoke' in the parameters cell or "
                         f"HELPERS_PROFILE=smoke in the environment.")
    return name, reason


def resolve_data(data: str, profile: str) -> str:
    """Turn DATA ("auto", "standin", "real" or a folder of .npz files) into a data source."""
    if data is None or str(data).lower() == "auto":
        return "standin" if profile == "smoke" else "real"
    if str(data).lower() in ("standin", "real"):
        return str(data).lower()
    if os.path.isdir(os.path.expanduser(str(data))):
        return os.path.expanduser(str(data))
    raise ValueError(f"Unknown data source {data!r}: use 'auto', 'standin' (offline, built in), "
                     f"'real' (torchvision downloads) or a folder holding <dataset>_<split>.npz files.")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) so that a run repeats."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on: CUDA when present, else CPU (or `prefer` if given)."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_threads() -> int:
    """CPU threads for torch: $HELPERS_THREADS if set, else torch's own choice (all cores).

    Set HELPERS_THREADS=1 when several kernels share a CPU (a classroom server): oversubscribed
    threads wait on each other and run many times slower. The choice never depends on the load
    of the moment, so that a re-run on the same machine repeats the same arithmetic.
    """
    value = os.environ.get("HELPERS_THREADS")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"HELPERS_THREADS must be a positive integer, got {value!r}")
        return int(value)
    return DEFAULT_THREADS


def progress_enabled() -> bool:
    """Progress bars are on unless HELPERS_PROGRESS=0 (set when recording committed outputs)."""
    return os.environ.get("HELPERS_PROGRESS", "1") != "0"


def versions() -> str:
    """One line with the versions that matter for reproducing a run."""
    import torchvision

    from . import __version__

    return (f"python {platform.python_version()}, torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}, numpy {np.__version__}, helpers {__version__}")


def setup(profile: str = "auto", chapter: str | None = None, seed: int = 0,
          data: str = "auto", device: str | None = None, quiet: bool = False) -> Setup:
    """The one set-up call of a chapter: resolve the profile, seed everything, pick the device, print it all."""
    name, reason = resolve_profile(profile)
    source = resolve_data(data, name)
    seed_everything(seed)
    dev = get_device(device)
    threads = cpu_threads()
    torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    settings = chapter_settings(chapter, name) if chapter is not None else SimpleNamespace()
    run = Setup(name, reason, dev, seed, source, chapter, settings)
    if not quiet:
        others = ", ".join(p for p in PROFILES if p != name)
        data_text = {"standin": "offline stand-ins (generated, no download; figures say so)",
                     "real": "real datasets via torchvision (downloaded to the data root)"}.get(
                         source, "local .npz files")
        print(f"Profile: {name} ({reason}) - {PROFILE_HELP[name]}.")
        print(f"  To choose another ({others}): set PROFILE in the parameters cell, "
              f"or HELPERS_PROFILE before starting Jupyter.")
        print(f"Data: {data_text}.")
        print(f"Device: {dev.type} ({threads} CPU thread{'s' * (threads > 1)}) | seed {seed} | {versions()}")
        if "google.colab" in sys.modules and dev.type == "cpu":
            print("Tip: Runtime > Change runtime type > GPU gives the full profile.")
    return run

