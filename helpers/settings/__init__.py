"""Each chapter's settings in its own module, chNN.py; this package finds and resolves them.

A chapter module holds three plain literals:
- COMMON: the values every profile shares;
- OVERRIDES: {"smoke": ..., "cpu": ..., "full": ...}, what each profile sets on top of COMMON;
- CHECKPOINTS: {name pattern: the settings that define those weights}, read by `Setup.checkpoint`.
A dict value is a named group, read as `S.recipe.epochs`; a profile's group overrides only the keys it
names. Adding a chapter means adding its module here, nothing else.

Rehearsal (HELPERS_REHEARSAL=1) runs a profile's real code path with its counts capped; the caps live
here, in `rehearsal_row`, and `fit` honours REHEARSAL_BATCHES.
"""
from __future__ import annotations

import fnmatch
import functools
import importlib
import os
import pkgutil
from types import ModuleType, SimpleNamespace
from typing import Any


def chapters() -> list[str]:
    """The chapters that have a settings module, e.g. ["01", "02", ...]."""
    return sorted(info.name[2:] for info in pkgutil.iter_modules(__path__)
                  if info.name.startswith("ch") and info.name[2:].isdigit())


def chapter_module(chapter: str) -> ModuleType:
    """The settings module of `chapter` ("06" -> helpers.settings.ch06)."""
    known = chapters()
    if str(chapter) not in known:
        raise ValueError(f"No settings for chapter {chapter!r}: there is no helpers/settings/ch{chapter}.py. "
                         f"Chapters with a settings module: {', '.join(known)}.")
    return importlib.import_module(f"{__name__}.ch{chapter}")


def chapter_settings(chapter: str, profile: str) -> SimpleNamespace:
    """One chapter's settings in one profile: COMMON updated by the profile's OVERRIDES, groups as namespaces.

    In a rehearsal (HELPERS_REHEARSAL=1) the counts are capped by `rehearsal_row`.
    """
    module = chapter_module(chapter)
    if profile not in module.OVERRIDES:
        raise ValueError(f"Chapter {chapter} has no settings for profile {profile!r}; "
                         f"it has {', '.join(module.OVERRIDES)}.")
    row = dict(module.COMMON)
    for key, value in module.OVERRIDES[profile].items():
        row[key] = {**row.get(key, {}), **value} if isinstance(value, dict) else value
    if rehearsing():
        row = rehearsal_row(row)
    return SimpleNamespace(**{key: SimpleNamespace(**value) if isinstance(value, dict) else value
                              for key, value in row.items()})


def checkpoint_keys(chapter: str, name: str) -> tuple[str, ...]:
    """The settings that define checkpoint `name` of `chapter`: those of its first matching CHECKPOINTS pattern."""
    declared = chapter_module(chapter).CHECKPOINTS
    for pattern, keys in declared.items():
        if fnmatch.fnmatchcase(name, pattern):
            return tuple(keys)
    raise ValueError(f"Chapter {chapter} declares no checkpoint {name!r} (declared: "
                     f"{', '.join(declared) or 'none'}). Add the settings that define its weights to "
                     f"CHECKPOINTS in helpers/settings/ch{chapter}.py.")


def setting(settings: SimpleNamespace, key: str) -> Any:
    """One value of a settings row; "recipe.epochs" reads inside the group `recipe`."""
    return functools.reduce(getattr, key.split("."), settings)


def flat(settings: SimpleNamespace) -> dict[str, Any]:
    """The row with its groups spelled out as prefix_key (recipe.epochs -> recipe_epochs)."""
    row = {}
    for key, value in vars(settings).items():
        if isinstance(value, SimpleNamespace):
            row.update({f"{key}_{inner}": v for inner, v in vars(value).items()})
        else:
            row[key] = value
    return row


# ---------------------------------------------------------------- rehearsal: the real code path, capped counts

REHEARSAL_TRAIN = 256  # a training set (None, "the whole split", included): two batches of 128 + validation
REHEARSAL_SAMPLES = 32  # every other sample count: test sets, attack curves, embeddings, checks
REHEARSAL_EPOCHS = 1  # per training phase
REHEARSAL_BATCHES = 2  # training batches per epoch (`fit` stops the epoch there)
REHEARSAL_STEPS = 2  # optimisation steps of a method that is not training (filter visualisation)
REHEARSAL_SEEDS = 1  # repeated runs per variant (the smoke profile already runs several)
# Integer settings that are not counts of work: a rehearsal keeps them exactly, so that it runs the
# profile's real batch sizes, widths, architectures and method parameters.
NOT_COUNTS = frozenset({
    "batch_size", "batch", "eval_batch",  # batch sizes
    "deep_layers", "hidden", "head_hidden", "embedding_dim", "channels", "capacity_hidden",
    "noise_features",  # architectures and input sizes
    "cut", "k", "split_seed", "patience", "step_size", "pgd_steps", "check_patch", "occlusion_patches",
    "occlusion_strides",  # method parameters (early stopping and schedules only matter after 1 epoch)
    "n_filters", "shown_per_kind", "exact_check_features", "single_feature_sample",  # a few items shown or checked
})
SAMPLE_NAMES = ("train", "test", "points", "few_label")
SAMPLE_SUFFIXES = ("_size", "_train", "_test", "_val", "_images", "_samples", "_points")


class Capped(int):
    """A count cut down by a rehearsal; `uncapped` is the profile's own value (None: the whole split)."""

    uncapped: int | None

    def __new__(cls, value: int, uncapped: int | None) -> "Capped":
        count = super().__new__(cls, value)
        count.uncapped = uncapped
        return count

    def __add__(self, other: Any) -> Any:
        if not isinstance(other, int) or isinstance(other, bool):
            return int(self) + other
        parts = (self.uncapped, uncapped(other))
        return Capped(int(self) + int(other), None if None in parts else sum(parts))

    __radd__ = __add__


def rehearsing() -> bool:
    """True when HELPERS_REHEARSAL is set (to anything but 0): capped counts, real everything else."""
    return os.environ.get("HELPERS_REHEARSAL", "0").strip() not in ("", "0")


def rehearsal_cap(key: str) -> int | None:
    """The rehearsal's cap for setting `key` ("recipe.epochs" -> 1), None for a setting that is not a count.

    The rule goes by name: *epochs -> REHEARSAL_EPOCHS, *_steps -> REHEARSAL_STEPS, n_seeds ->
    REHEARSAL_SEEDS, sample counts (train, test, *_size, *_train, ...) -> REHEARSAL_TRAIN if they size a
    training set (the name holds "train", or few_label, points; si_train samples the separation index), else
    REHEARSAL_SAMPLES; NOT_COUNTS are kept.
    A test checks that every integer setting of every chapter falls under one of these.
    """
    name = key.rsplit(".", 1)[-1]
    if name in NOT_COUNTS:
        return None
    if name == "epochs" or name.endswith("_epochs"):
        return REHEARSAL_EPOCHS
    if name.endswith("_steps"):
        return REHEARSAL_STEPS
    if name == "n_seeds":
        return REHEARSAL_SEEDS
    if name in SAMPLE_NAMES or name.endswith(SAMPLE_SUFFIXES):
        training = ("train" in name or name in ("few_label", "points")) and not name.startswith("si_")
        return REHEARSAL_TRAIN if training else REHEARSAL_SAMPLES
    return None


def _capped(key: str, value: Any) -> Any:
    cap = rehearsal_cap(key)
    if cap is None or isinstance(value, bool) or not (value is None or isinstance(value, int)):
        return value
    if value is None and cap not in (REHEARSAL_TRAIN, REHEARSAL_SAMPLES):
        return value  # "no limit" on anything but a sample count is not a count
    return Capped(cap, value) if value is None or value > cap else value


def rehearsal_row(row: dict[str, Any]) -> dict[str, Any]:
    """A settings row with every count capped (groups too); capped values are `Capped` ints that remember theirs."""
    return {key: ({inner: _capped(f"{key}.{inner}", v) for inner, v in value.items()}
                  if isinstance(value, dict) else _capped(key, value))
            for key, value in row.items()}


def uncapped(value: Any) -> Any:
    """The profile's own value behind a rehearsal's capped count (the value itself otherwise)."""
    return value.uncapped if isinstance(value, Capped) else value
