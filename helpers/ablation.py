"""Ablation studies as controlled experiments: variants as data, fresh seeded runs, a resumable cache, tables and plots.

A study is a dict of variants (name -> JSON-able configuration). `run_ablation` calls
`run(config, seed)` once per (variant, seed) after `seed_everything(seed)`, so every variant
starts from the same random state; `run` must build a fresh model from `config` (it never
receives one) and return its metrics. Finished runs are cached as JSON files keyed by a hash of
(study, fixed settings, config, seed, code), so an interrupted study resumes where it stopped;
"code" is helpers' version and the source of `run` (and of the functions it depends on), so
editing the experiment never silently reuses results of the old code.
`ablate` switches a module of a *trained* model off (all of its output or some channels) for
the duration of a `with` block, for evaluation-time ablation.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import numbers
import operator
import textwrap
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from .files import load_json, save_json
from .plots import banner
from .profile import seed_everything

Config = Mapping[str, Any]
Runner = Callable[[dict, int], Mapping[str, float]]
NONE, ALL = "none", "all"  # reference variants of `add_one_in` and `leave_one_out`


# ---------------------------------------------------------------- variants as data

def add_one_in(components: Mapping[str, tuple[Any, Any]], base: Config | None = None) -> dict[str, dict]:
    """Variants 'none' (every component off) and '+name' (only that component on); components: key -> (off, on)."""
    _check_components(components)
    off = {**(base or {}), **{key: values[0] for key, values in components.items()}}
    variants = {NONE: off}
    for key, (_, on) in components.items():
        variants[f"+{key}"] = {**off, key: on}
    return variants


def leave_one_out(components: Mapping[str, tuple[Any, Any]], base: Config | None = None) -> dict[str, dict]:
    """Variants 'all' (every component on) and '-name' (all on except that one); components: key -> (off, on)."""
    _check_components(components)
    on = {**(base or {}), **{key: values[1] for key, values in components.items()}}
    variants = {ALL: on}
    for key, (off, _) in components.items():
        variants[f"-{key}"] = {**on, key: off}
    return variants


def _check_components(components: Mapping[str, tuple[Any, Any]]) -> None:
    if not components:
        raise ValueError("components is empty: give at least one key -> (off value, on value)")
    for key, values in components.items():
        if not isinstance(values, (tuple, list)) or len(values) != 2:
            raise ValueError(f"component {key!r} must map to a pair (off value, on value), got {values!r}")
        if values[0] == values[1]:
            raise ValueError(f"component {key!r} has the same off and on value {values[0]!r}: nothing to ablate")


# ---------------------------------------------------------------- the resumable cache

def code_fingerprint(*functions: Callable) -> str:
    """SHA-256 of helpers' version and the source code of `functions` (a callable object: its class's source)."""
    from . import __version__  # read at call time: a new release of helpers starts a fresh cache

    parts = [f"helpers {__version__}"]
    for function in functions:
        target = function if inspect.isroutine(function) or inspect.isclass(function) else type(function)
        try:
            parts.append(textwrap.dedent(inspect.getsource(target)))
        except (OSError, TypeError):  # e.g. a builtin or a function typed into a bare interpreter
            name = getattr(target, "__qualname__", repr(target))
            warnings.warn(f"the source of {name} is not available: the ablation cache cannot notice when it "
                          f"changes (only its name is part of the key)", stacklevel=2)
            parts.append(name)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cache_key(study: str, config: Config, seed: int, fixed: Config | None = None, code: str = "") -> str:
    """SHA-256 of everything that determines a run's result: study, fixed settings, config, seed and code.

    `code` is the `code_fingerprint` of the run function: a changed experiment never reuses old results.
    """
    payload = {"study": study, "fixed": dict(fixed or {}), "config": dict(config), "seed": seed, "code": code}
    try:
        text = json.dumps(payload, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"variant configs and fixed settings must be plain JSON data (numbers, strings, bools, "
                         f"lists, dicts) so that they can be hashed and cached; {error}. Describe model edits "
                         f"by name (e.g. 'conv': 'frozen') and look the edit up inside your run function.") from None
    return hashlib.sha256(text.encode()).hexdigest()


def load_cached(path: Path) -> dict | None:
    """A finished run's record, or None if absent or unreadable (then the run is simply repeated)."""
    record = load_json(path)
    return record if record is not None and isinstance(record.get("metrics"), dict) else None


# ---------------------------------------------------------------- running a study

@dataclass
class Ablation:
    """A finished study: one row per (variant, seed) in `runs`, how many runs were computed and skipped."""

    study: str
    variants: dict[str, dict]
    runs: pd.DataFrame
    ran: int
    skipped: int

    @property
    def metrics(self) -> list[str]:
        """Names of the recorded metrics."""
        return [c for c in self.runs.columns if c not in ("variant", "seed", "cached")]

    def summary(self, metric: str, reference: str | None = None) -> pd.DataFrame:
        """Mean, std (over seeds) and n per variant; with `reference`, the mean paired difference to it."""
        return summarize(self.runs, metric, reference)

    def plot(self, metric: str, reference: str | None = None, caption: str | None = None,
             title: str | None = None) -> plt.Figure:
        """Bar plot of the metric's mean per variant with std error bars and one dot per seed."""
        return bar_plot(self.runs, metric, reference, caption, title or self.study)


def run_ablation(variants: Mapping[str, Config], run: Runner, seeds: Sequence[int], *, study: str,
                 cache_dir: str | Path | None = None, fixed: Config | None = None,
                 depends_on: Sequence[Callable] = ()) -> Ablation:
    """Run every variant for every seed, each from `seed_everything(seed)`; reuse cached runs.

    `run(config, seed)` builds a fresh model from `config`, trains and evaluates it, and returns
    {metric: number}. `fixed` holds settings shared by all variants (epochs, data size...) that
    belong in the cache key. With `cache_dir`, each finished run is stored as JSON and never re-run
    while helpers' version and the source of `run` and of the functions in `depends_on` are unchanged.
    """
    if not variants:
        raise ValueError("variants is empty: give at least one name -> config")
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, numbers.Integral) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of non-negative ints, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds!r}: a repeated seed repeats the same run")
    seeds = [int(s) for s in seeds]  # numpy integers too, as plain ints for the JSON cache
    for name, config in variants.items():
        if not isinstance(config, Mapping):
            raise ValueError(f"variant {name!r} must map to a config dict, got {type(config).__name__}")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else None
    code = code_fingerprint(run, *depends_on) if folder is not None else ""
    rows, ran, skipped = [], 0, 0
    for seed in seeds:  # seed-major: a study interrupted half-way already has complete seeds
        for name, config in variants.items():
            key = cache_key(study, config, seed, fixed, code)
            path = folder / f"{key}.json" if folder is not None else None
            record = load_cached(path) if path is not None else None
            if record is None:
                seed_everything(seed)
                metrics = _check_metrics(run(dict(config), seed), name, seed)
                ran += 1
                if path is not None:
                    save_json({"study": study, "variant": name, "config": dict(config), "seed": seed,
                               "fixed": dict(fixed or {}), "code": code, "metrics": metrics}, path)
            else:
                metrics = record["metrics"]
                skipped += 1
            rows.append({"variant": name, "seed": seed, **metrics, "cached": record is not None})
    runs = pd.DataFrame(rows)
    runs["variant"] = pd.Categorical(runs["variant"], categories=list(variants), ordered=True)
    runs = runs.sort_values(["variant", "seed"], kind="stable").reset_index(drop=True)
    return Ablation(study, {k: dict(v) for k, v in variants.items()}, runs, ran, skipped)


def _check_metrics(metrics: Any, name: str, seed: int) -> dict[str, float]:
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError(f"run(config, seed) must return a non-empty dict of metrics, e.g. {{'acc': 0.9}}; "
                         f"variant {name!r} seed {seed} returned {metrics!r}")
    clean = {}
    for key, value in metrics.items():
        if key in ("variant", "seed", "cached"):
            raise ValueError(f"metric name {key!r} is reserved (variant, seed, cached): rename it")
        try:
            clean[str(key)] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"metric {key!r} of variant {name!r} seed {seed} must be a number, got {value!r}") from None
        if not math.isfinite(clean[str(key)]):
            raise ValueError(f"metric {key!r} of variant {name!r} seed {seed} is {value}: not a finite number")
    return clean


# ---------------------------------------------------------------- tables and plots

def _per_seed(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    if metric not in runs.columns or metric in ("variant", "seed", "cached"):
        known = [c for c in runs.columns if c not in ("variant", "seed", "cached")]
        raise ValueError(f"Unknown metric {metric!r}; this study recorded {known}")
    if isinstance(runs["variant"].dtype, pd.CategoricalDtype):  # a subset of a study: keep its variants only
        runs = runs.assign(variant=runs["variant"].cat.remove_unused_categories())
    return runs.pivot(index="seed", columns="variant", values=metric)


def summarize(runs: pd.DataFrame, metric: str, reference: str | None = None) -> pd.DataFrame:
    """Per variant: mean and std (ddof=1) over seeds, n; with `reference`: mean and std of the paired difference."""
    table = _per_seed(runs, metric)
    summary = pd.DataFrame({"mean": table.mean(), "std": table.std(ddof=1), "n": table.count()})
    if reference is not None:
        if reference not in table.columns:
            raise ValueError(f"reference {reference!r} is not a variant; choose one of {list(table.columns)}")
        # Same seed = same initial weights and batch order: the paired difference removes that noise.
        diff = table.sub(table[reference], axis=0)
        summary[f"diff vs {reference}"] = diff.mean()
        summary["diff std"] = diff.std(ddof=1)
    summary.index.name = "variant"
    return summary


def component_effects(runs: pd.DataFrame, metric: str, components: Sequence[str]) -> pd.DataFrame:
    """Per component: gain when added alone (+c vs none), gain inside the full recipe (all vs -c), their difference.

    With no interactions both gains are equal; a non-zero 'interaction' says the component's
    value depends on which other components are present. Paired by seed, mean and std over seeds.
    """
    table = _per_seed(runs, metric)
    missing = [v for c in components for v in (f"+{c}", f"-{c}") if v not in table.columns]
    missing += [v for v in (NONE, ALL) if v not in table.columns]
    if missing:
        raise ValueError(f"component_effects needs the variants of add_one_in and leave_one_out; missing {missing}")
    rows = {}
    for c in components:
        alone = table[f"+{c}"] - table[NONE]
        in_full = table[ALL] - table[f"-{c}"]
        rows[c] = {"gain alone": alone.mean(), "gain alone std": alone.std(ddof=1),
                   "gain in full": in_full.mean(), "gain in full std": in_full.std(ddof=1),
                   "interaction": (in_full - alone).mean()}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "component"
    return frame


def bar_plot(runs: pd.DataFrame, metric: str, reference: str | None = None, caption: str | None = None,
             title: str | None = None, ax: plt.Axes | None = None) -> plt.Figure:
    """Mean per variant with std error bars, the individual seeds as dots, the reference's mean as a line."""
    table = _per_seed(runs, metric)
    summary = summarize(runs, metric)
    fig = ax.figure if ax is not None else plt.figure(figsize=(max(4.5, 0.9 * len(summary) + 1.5), 3.6))
    ax = ax if ax is not None else fig.add_subplot(111)
    x = np.arange(len(summary))
    colours = ["#8c8c8c" if name == reference else f"C{i % 10}" for i, name in enumerate(summary.index)]
    ax.bar(x, summary["mean"], yerr=summary["std"].fillna(0), capsize=4, color=colours, alpha=0.75)
    for i, name in enumerate(summary.index):
        values = table[name].dropna().to_numpy()
        ax.scatter(np.full(len(values), x[i]) + np.linspace(-0.12, 0.12, len(values)), values,
                   s=12, color="black", zorder=3)
    if reference is not None:
        ax.axhline(summary.loc[reference, "mean"], color="#555555", ls="--", lw=1, label=f"{reference} (mean)")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xticks(x)
    ax.set_xticklabels([str(v) for v in summary.index], rotation=20, ha="right", fontsize=9)
    ax.set_ylabel(f"{metric} (mean ± std over {int(summary['n'].max())} seeds)")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return banner(fig, caption)


# ---------------------------------------------------------------- evaluation-time ablation of a trained model

def _channel_mask(output: torch.Tensor, channels: Sequence[int] | float, seed: int, name: str) -> torch.Tensor:
    count = output.shape[1]
    if isinstance(channels, float):
        chosen = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:round(channels * count)]
    else:
        chosen = torch.as_tensor(list(channels), dtype=torch.long)
        if len(chosen) and (int(chosen.min()) < -count or int(chosen.max()) >= count):
            raise ValueError(f"channel indices for {name!r} must lie in 0..{count - 1}; got {list(channels)}")
    mask = torch.ones(count, dtype=output.dtype, device=output.device)
    mask[chosen.to(output.device)] = 0
    return mask.view(1, count, *([1] * (output.ndim - 2)))


@contextmanager
def ablate(model: nn.Module, targets: str | Sequence[str], channels: Sequence[int] | float | None = None,
           seed: int = 0) -> Iterator[nn.Module]:
    """Inside the `with`, the named submodules output zeros (or zeros in some channels); always undone after.

    `channels`: None zeroes the whole output; a list of indices zeroes those channels (dim 1);
    a float in [0, 1] zeroes that fraction of channels, chosen at random with `seed`.
    """
    names = [targets] if isinstance(targets, str) else list(targets)
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules or n == ""]
    if not names or unknown:
        listed = ", ".join(n for n in list(modules)[1:13])
        raise ValueError(f"ablate: no submodule named {unknown or names!r} in {type(model).__name__}; "
                         f"names look like: {listed}, ... (see model.named_modules())")
    if isinstance(channels, float):
        if not 0.0 <= channels <= 1.0:
            raise ValueError(f"channels as a fraction must lie in [0, 1], got {channels}")
    elif channels is not None:
        try:
            if isinstance(channels, (int, str, bool)):
                raise TypeError
            channels = [operator.index(c) for c in channels]
        except TypeError:
            raise ValueError(f"channels must be None (whole output), a list of channel indices such as [0, 3], "
                             f"or a fraction such as 0.5; got {channels!r}") from None

    def hook_for(name: str) -> Callable:
        def hook(module: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise ValueError(f"ablate: {name!r} returns {type(output).__name__}, not a tensor; pick a module "
                                 f"whose output is a single tensor")
            if channels is None:
                return torch.zeros_like(output)
            if output.ndim < 2:
                raise ValueError(f"ablate: {name!r} output has shape {tuple(output.shape)}: no channel dimension")
            return output * _channel_mask(output, channels, seed, name)
        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in names]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
