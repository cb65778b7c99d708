"""Chapter 1's self-check: backpropagation by hand through the 2-2-1 sigmoid network."""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch

from .. import reference
from .grading import Mistake, attempt, describe, relative_error, to_number, verdict

__all__ = ["backprop"]

BACKPROP_INPUTS = dict(x1=0.35, x2=0.9, w13=0.1, w23=0.8, w14=0.4, w24=0.6, w35=0.3, w45=0.9, target=0.5)
HIDDEN = {"w13": ("y3", "x1"), "w23": ("y3", "x2"), "w14": ("y4", "x1"), "w24": ("y4", "x2")}


def _autograd_backprop() -> tuple[dict[str, float], dict[str, float]]:
    """The 2-2-1 example computed independently, by PyTorch's autograd."""
    v = {k: torch.tensor(x, dtype=torch.float64, requires_grad=k.startswith("w"))
         for k, x in BACKPROP_INPUTS.items()}
    H3, H4 = v["w13"] * v["x1"] + v["w23"] * v["x2"], v["w14"] * v["x1"] + v["w24"] * v["x2"]
    y3, y4 = torch.sigmoid(H3), torch.sigmoid(H4)
    O5 = v["w35"] * y3 + v["w45"] * y4
    y5 = torch.sigmoid(O5)
    ((y5 - v["target"]) ** 2).backward()
    forward = {k: t.item() for k, t in dict(H3=H3, H4=H4, y3=y3, y4=y4, O5=O5, y5=y5).items()}
    return forward, {k: v[k].grad.item() for k in ("w13", "w23", "w14", "w24", "w35", "w45")}


def _gradient_hint(k: str, ratio: float, forward: dict[str, float]) -> str:
    """A conceptual hint for one wrong gradient, from the ratio of the student's value to the right one."""
    slope5 = forward["y5"] * (1 - forward["y5"])
    close = lambda a, b: math.isfinite(a) and abs(a - b) <= 1e-6 * max(1.0, abs(b))
    if close(ratio, 0.5):
        return ("exactly half of the right value: differentiate this chapter's loss, the squared error without a 1/2 "
                "in front")
    if close(ratio, -1.0):
        return ("the sign is flipped: the error grows as the output moves away from the target - check the "
                "order of output and target when you differentiate the error")
    if close(ratio, 1 / slope5) or close(ratio, 0.5 / slope5):
        return ("the output unit's sigmoid slope is missing: the error reaches every weight through the sigmoid of "
                "unit 5")
    if close(ratio, slope5):
        return "the output unit's sigmoid slope is used twice on this path: each unit's slope enters once"
    if k in HIDDEN:
        hidden = forward[HIDDEN[k][0]]
        if close(ratio, 1 / (hidden * (1 - hidden))):
            return (f"the hidden unit's sigmoid slope is missing: on the way back the error also passes through "
                    f"the sigmoid of unit {HIDDEN[k][0][1]}")
        return ("chain rule, one more link than for an output weight: the output unit's error signal, carried "
                "back through the weight that links this hidden unit to the output, through the hidden unit's "
                "sigmoid slope, to the input that this weight multiplies")
    return ("chain rule: how the error changes with the output y5, times the slope of the output sigmoid, times "
            "how the output unit's input O5 changes with this weight (the activation the weight multiplies)")


def backprop(fn: Callable) -> bool:
    """Check backprop_by_hand(x1, x2, w13, w23, w14, w24, w35, w45, target) -> (forward, grads)."""
    name = "backprop_by_hand"
    ran, result = attempt(fn, name, **BACKPROP_INPUTS)
    if not ran:
        return False
    if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(r, dict) for r in result)):
        return verdict(False, name, f"should return two dicts (forward, grads), got {describe(result)}",
                       "return forward, grads: forward holds H3, H4, y3, y4, O5, y5; grads holds one entry per weight")
    forward, grads = result
    ref_forward, ref_grads = _autograd_backprop()
    missing = sorted(set(ref_forward) - set(forward)) + sorted(set(ref_grads) - set(grads))
    if missing:
        return verdict(False, name, f"missing entries: {', '.join(missing)}",
                       "forward needs H3, H4, y3, y4, O5, y5; grads needs w13, w23, w14, w24, w35, w45")
    not_numbers = [k for k in list(ref_forward) + list(ref_grads)
                   if to_number((forward if k in ref_forward else grads)[k]) is None]
    if not_numbers:
        return verdict(False, name, f"these entries are not single numbers: {', '.join(not_numbers)}",
                       "store each value as a float")
    ok = True
    wrong_forward = [k for k in ref_forward if relative_error(forward[k], ref_forward[k]) > 1e-9]
    if wrong_forward:
        ok = verdict(False, name, f"forward pass off at {', '.join(wrong_forward)}",
                     "each unit adds up its weighted inputs (H3, H4, O5), then applies the sigmoid (y3, y4, y5); "
                     "the output unit's inputs are the hidden activations")
    else:
        verdict(True, name, "forward pass matches (6 values)")
    for k, expected in ref_grads.items():
        error = relative_error(grads[k], expected)
        if error <= 1e-9:
            continue
        ok = False
        ratio = to_number(grads[k]) / expected
        verdict(False, f"{name} dE/d{k}", f"off by {error:.1%} of its size", _gradient_hint(k, ratio, ref_forward))
    if ok:
        verdict(True, name, "all six gradients match autograd (relative error < 1e-9)")
    return ok


def _as_list(*args: float, **kwargs: float) -> list:
    return list(reference.backprop_by_hand(*args, **kwargs))


def _a_gradient_missing(*args: float, **kwargs: float) -> tuple[dict, dict]:
    forward, grads = reference.backprop_by_hand(*args, **kwargs)
    return forward, {**grads, "w13": None}


FORMULAS = ("y5 (1 - y5)", "2 (y5 - t)")  # hints explain, never give the formula
SOLUTIONS = {"backprop": [reference.backprop_by_hand]}
MISTAKES = [Mistake("backprop", partial(reference.backprop_by_hand, mistake="half"), "1/2", FORMULAS),
            Mistake("backprop", partial(reference.backprop_by_hand, mistake="sign"), "sign", FORMULAS),
            Mistake("backprop", partial(reference.backprop_by_hand, mistake="no-output-slope"), "slope", FORMULAS),
            Mistake("backprop", partial(reference.backprop_by_hand, mistake="no-hidden-slope"),
                    "hidden unit's sigmoid slope", FORMULAS),
            Mistake("backprop", _as_list, "two dicts", FORMULAS),
            Mistake("backprop", _a_gradient_missing, "not single numbers", FORMULAS)]
