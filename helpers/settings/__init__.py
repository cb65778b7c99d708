"""Each chapter's settings in its own module, chNN.py; this package finds and resolves them.

A chapter module holds three plain literals:
- COMMON: the values every profile shares;
- OVERRIDES: {"smoke": ..., "cpu": ..., "full": ...}, what each profile sets on top of COMMON;
- CHECKPOINTS: {name pattern: the settings that define those weights}, read by `Setup.checkpoint`.
A dict value is a named group, read as `S.recipe.epochs`; a profile's group overrides only the keys it
names. Adding a chapter means adding its module here, nothing else.
"""
from __future__ import annotations

import fnmatch
import functools
import importlib
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
    """One chapter's settings in one profile: COMMON updated by the profile's OVERRIDES, groups as namespaces."""
    module = chapter_module(chapter)
    if profile not in module.OVERRIDES:
        raise ValueError(f"Chapter {chapter} has no settings for profile {profile!r}; "
                         f"it has {', '.join(module.OVERRIDES)}.")
    row = dict(module.COMMON)
    for key, value in module.OVERRIDES[profile].items():
        row[key] = {**row.get(key, {}), **value} if isinstance(value, dict) else value
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
