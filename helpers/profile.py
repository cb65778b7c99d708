"""Profiles (smoke / cpu / full), seeding, device choice and the one set-up call of every chapter.

Each chapter's settings live in helpers/settings/chNN.py; `setup` reads them in a cell *after* the
papermill parameters cell, so injected parameters take effect.
"""
from __future__ import annotations

import hashlib
import os
import platform
import random
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from .settings import (REHEARSAL_BATCHES, REHEARSAL_EPOCHS, REHEARSAL_SAMPLES, REHEARSAL_TRAIN, chapter_settings,
                       checkpoint_keys, flat, rehearsing, setting)

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
        from .training import best_path  # training imports this module

        for file in (path, best_path(path)):  # after a recycled runtime, from the persistent folder
            restore(file)
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
    """Where checkpoints go: $HELPERS_CHECKPOINT_DIR, else ~/.cache/dl-dissected/checkpoints.

    A rehearsal keeps its own in a `rehearsal` subfolder: capped runs never mix with real ones.
    """
    folder = os.path.expanduser(os.environ.get("HELPERS_CHECKPOINT_DIR", "~/.cache/dl-dissected/checkpoints"))
    return os.path.join(folder, "rehearsal") if rehearsing() else folder


# ---------------------------------------------------------------- persistence (e.g. Google Drive on Colab)

def persist_dir() -> Path | None:
    """The persistent folder that checkpoints are copied to after every epoch: $HELPERS_PERSIST_DIR, else None."""
    folder = os.environ.get("HELPERS_PERSIST_DIR", "").strip()
    if not folder:
        return None
    return Path(folder).expanduser() / ("rehearsal" if rehearsing() else "")


def persisted(path: str | Path) -> Path | None:
    """Where `path` (a file in the checkpoint folder) has its persistent copy; None without a persistent folder."""
    folder = persist_dir()
    if folder is None:
        return None
    path = Path(path)
    try:
        return folder / path.resolve().relative_to(Path(checkpoint_dir()).resolve())
    except ValueError:  # a checkpoint outside the checkpoint folder keeps its name only
        return folder / path.name


def persist(path: str | Path) -> bool:
    """Copy `path` to the persistent folder (temporary file, then rename); warn and go on if that fails.

    The folder is never created here: if a Drive mount drops, its mount point vanishes or stops
    accepting files, and creating it again would only write to the local disk under a persistent name.
    """
    target = persisted(path)
    if target is None:
        return False
    tmp = target.with_name(target.name + ".copying")
    try:
        if not persist_dir().is_dir():
            raise FileNotFoundError("the folder is missing")
        target.parent.mkdir(exist_ok=True)  # a subfolder of the persistent folder, if any
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    except OSError as error:
        warnings.warn(f"Could not copy {Path(path).name} to the persistent folder {persist_dir()} ({error}). "
                      f"Training goes on and the local copy is complete; is Google Drive still mounted?",
                      RuntimeWarning, stacklevel=2)
        return False
    return True


def restore(path: str | Path) -> bool:
    """If `path` is missing locally but has a persistent copy, copy it back (a recycled runtime resumes)."""
    source = persisted(path)
    path = Path(path)
    if path.exists() or source is None or not source.is_file():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    print(f"Restored {path.name} from the persistent folder {persist_dir()}.")
    return True


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
        elif "google.colab" in sys.modules:
            name, reason = "cpu", "this is Colab without a GPU: real data (Colab has a network) at CPU scale"
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
    """Turn DATA ("auto", "standin", "real" or a folder of .npz files) into a data source.

    "auto" means $HELPERS_DATA when set (how `make notebooks DATA_DIR=...` hands over a folder without
    writing its path into the notebook), else stand-ins in smoke and real data otherwise.
    """
    if data is None or str(data).lower() == "auto":
        data = os.environ.get("HELPERS_DATA", "").strip() or ("standin" if profile == "smoke" else "real")
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
        from IPython import get_ipython

        from . import __version__, provenance
        from .settings import chapter_module

        # The first line of every chapter's outputs says what produced them (the recording keeps it too).
        loads = getattr(chapter_module(chapter), "RECORDING", {}).get("loads", ()) if chapter is not None else ()
        record = provenance.provenance(name, provenance.data_text(loads, source), __version__,
                                       provenance.machine(dev, threads))
        text, in_kernel = provenance.line(record), get_ipython() is not None
        if in_kernel:  # as Markdown, the line wraps on a narrow page instead of hiding its end
            from IPython.display import display

            display({"text/markdown": text.replace("Run:", "**Run:**", 1), "text/plain": text}, raw=True)
        else:
            print(text)
        others = ", ".join(p for p in PROFILES if p != name)
        print(f"Profile: {name} ({reason}) - {PROFILE_HELP[name]}.")
        print(f"  To choose another ({others}): set PROFILE in the parameters cell, "
              f"or HELPERS_PROFILE before starting Jupyter.")
        print(f"Device: {dev.type} ({threads} CPU thread{'s' * (threads > 1)}) | seed {seed} | {versions()}")
        if chapter is not None and in_kernel:  # outside a kernel, glue would print the dict
            from .record import record as glue

            glue(f"ch{chapter}_provenance", record)
        if "google.colab" in sys.modules and dev.type == "cpu":
            print("Tip: Runtime > Change runtime type > GPU gives the full profile.")
    if rehearsing() and not quiet:
        print(f"Rehearsal (HELPERS_REHEARSAL is set): the {name} profile's code path with its counts capped - "
              f"{REHEARSAL_EPOCHS} epoch per training phase, at most {REHEARSAL_BATCHES} batches per epoch and "
              f"{REHEARSAL_TRAIN} training samples ({REHEARSAL_SAMPLES} for tests and checks). It proves the "
              f"run works; its numbers mean nothing.")
    if persist_dir() is not None:
        persist_dir().mkdir(parents=True, exist_ok=True)
        if not quiet:
            print(f"Persistence: checkpoints are copied to {persist_dir()} after every epoch, and restored "
                  f"from there when the local copy is missing (a recycled runtime resumes).")
    return run

