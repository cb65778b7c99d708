"""Chapter 8's self-checks: a seeded, cached ablation runner, and the accuracy drops of ablated residual blocks."""
from __future__ import annotations

import itertools
import tempfile
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from .. import ablation, models, reference
from ..training import evaluate
from .grading import Mistake, attempt, describe, to_number, verdict

__all__ = ["run_ablation", "block_drops"]


def run_ablation(fn: Callable) -> bool:
    """Check run_ablation(variants, run, seeds, *, study, cache_dir, fixed): fresh seeded runs, a resumable cache."""
    name = "run_ablation"
    calls: list[tuple[Any, Any, float]] = []

    def fake_run(config: dict, seed: int) -> dict:
        calls.append((config["size"], seed, torch.rand(1).item()))  # the draw shows whether the run was seeded
        return {"acc": 0.5 + 0.1 * config["size"] + 0.01 * seed}

    variants = {"small": {"size": 1}, "large": {"size": 2}}
    with tempfile.TemporaryDirectory() as cache:
        ran, first = attempt(fn, name, variants, fake_run, [0, 1], study="check", cache_dir=cache, fixed={"n": 1})
        if not ran:
            return False
        if len(calls) != 4:
            return verdict(False, name, f"ran {len(calls)} trainings for 2 variants x 2 seeds; expected 4",
                           "every variant runs once for every seed")
        by_seed: dict[Any, set] = {}
        for size, seed, draw in calls:
            by_seed.setdefault(seed, set()).add(round(draw, 12))
        if any(len(draws) != 1 for draws in by_seed.values()):
            return verdict(False, name, "runs with the same seed started from different random states",
                           "seed every random number generator right before each run, with that run's seed")
        runs = getattr(first, "runs", None)
        try:
            table_ok = runs is not None and len(runs) == 4 and "acc" in list(getattr(runs, "columns", []))
        except TypeError:
            table_ok = False
        if not table_ok:
            return verdict(False, name, "the result's `runs` table should have one row per (variant, seed) "
                                        "with the metrics as columns", "one row per run: variant, seed and its metrics")
        calls.clear()
        ran, second = attempt(fn, name, variants, fake_run, [0, 1], study="check", cache_dir=cache, fixed={"n": 1})
        if not ran:
            return False
        if calls or getattr(second, "skipped", None) != 4:
            return verdict(False, name, f"a re-run trained {len(calls)} runs again; all 4 are in the cache",
                           "before training, look for the saved record of this (study, config, seed, fixed) and "
                           "reuse it")
    return verdict(True, name, "every (variant, seed) ran once from its seed, and a re-run used the cache")


def block_drops(fn: Callable) -> bool:
    """Check block_drops(model, loader, blocks): the accuracy lost per ablated block, model restored afterwards."""
    name = "block_drops"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = models.ResNet18(width=0.0625)
        x = torch.rand(64, 3, 8, 8)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(20):  # an untrained ResNet predicts one class for every image: then no ablation shows
            loss = F.cross_entropy(model(x), torch.arange(64) % 10)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)  # the model is right on every image: any ablation can only lower accuracy
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    blocks = ["layer1.1", "layer3.0", "layer4.1"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ran, drops = attempt(fn, name, model, loader, blocks)
    if not ran:
        return False
    if not isinstance(drops, dict) or set(drops) != set(blocks):
        returned = (f"returned {describe(drops)} with keys {list(drops)}" if isinstance(drops, dict)
                    else f"returned {describe(drops)}")
        return verdict(False, name, f"{returned}; expected a dict block -> accuracy drop for {blocks}",
                       "one entry per block name: its clean accuracy minus its accuracy with the block ablated")
    not_numbers = [b for b in blocks if to_number(drops[b]) is None]
    if not_numbers:
        return verdict(False, name, f"the drop for {not_numbers[0]} is {describe(drops[not_numbers[0]])}; expected "
                                    f"a number", "each drop is one number: an accuracy difference")
    if any(not torch.equal(before[k], v) for k, v in model.state_dict().items()):
        return verdict(False, name, "changed the model's weights",
                       "ablate with a forward hook, never by editing weights")
    try:
        restored = not any(m._forward_hooks for m in model.modules()) and evaluate(model, loader)["acc"] == 1.0
    except Exception:
        restored = False
    if not restored:
        return verdict(False, name, "the model stays ablated afterwards",
                       "the ablation must undo itself when the block has been measured (a context manager does)")
    expected_drops = reference.block_drops(model, loader, blocks)  # the clean accuracy is 1: see above
    for block in blocks:
        expected = expected_drops[block]
        got = to_number(drops[block])
        if abs(got - expected) > 1e-9:
            if abs(got + expected) <= 1e-9 and expected:
                hint = "the sign is flipped: the drop is the clean accuracy minus the ablated one"
            elif abs(got - 100 * expected) <= 1e-6 and expected:
                hint = "accuracies here are fractions in [0, 1], not percentages"
            else:
                hint = ("the drop is clean minus ablated accuracy; ablate the block's residual branch (zero the "
                        "output of its last module, `bn2`) and keep the shortcut")
            return verdict(False, name, f"the drop for {block} is off by {got - expected:+.3g}", hint)
    return verdict(True, name, "drops match, weights untouched, model restored")


_calls = itertools.count()


def _new_cache_every_call(variants: dict, run: Callable, seeds: list, *, study: str, cache_dir: str,
                          fixed: dict) -> Any:
    """A new cache directory on every call: a re-run finds nothing."""
    return ablation.run_ablation(variants, run, seeds, study=study, cache_dir=f"{cache_dir}/{next(_calls)}",
                                 fixed=fixed)


def _unseeded(variants: dict, run: Callable, seeds: list, **kwargs: Any) -> list:
    return [run(dict(config), seed) for seed in seeds for config in variants.values()]


SOLUTIONS = {"run_ablation": [ablation.run_ablation], "block_drops": [reference.block_drops]}
MISTAKES = [Mistake("run_ablation", _new_cache_every_call, "cache"),
            Mistake("run_ablation", _unseeded, "random states"),
            Mistake("run_ablation", lambda *a, **k: None, "runs"),
            Mistake("block_drops", lambda m, loader, blocks: {b: None for b in blocks}, "expected a number"),
            Mistake("block_drops", lambda m, loader, blocks: {b: [0.1] for b in blocks}, "expected a number"),
            Mistake("block_drops", lambda m, loader, blocks: {b: 0.0 for b in blocks}, "off"),
            Mistake("block_drops", lambda *a: {b: -v for b, v in reference.block_drops(*a).items()}, "sign"),
            Mistake("block_drops", lambda *a: list(reference.block_drops(*a).values()), "dict")]
