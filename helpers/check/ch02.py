"""Chapter 2's self-check: inverted dropout."""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch

from .. import reference
from .grading import Mistake, attempt, difference, verdict

__all__ = ["inverted_dropout"]

TRAINING_MISTAKES = {  # reference.inverted_dropout's mistake -> its hint
    "classic": "the kept units are not rescaled: their expected value must stay that of h",
    "shrink": "you shrink the kept units; to keep the expected value they must grow by the inverse of the keep "
              "probability",
    "drop-probability": "p is the probability of *dropping* a unit; the rescaling uses the probability of keeping it",
    "swapped-mask": "keep = 1 marks the units that survive; you kept the dropped ones"}


def inverted_dropout(fn: Callable) -> bool:
    """Check inverted_dropout(h, keep, p, training=True) on the chapter's example and edge cases."""
    name = "inverted_dropout"
    h = torch.tensor([-4.5, -0.75, 3.0, 6.0, 1.5])
    keep = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    ok = True
    for p in (0.5, 0.4, 0.2):
        ran, out = attempt(fn, name, h.clone(), keep.clone(), p)
        if not ran:
            return False
        problem = difference(out, h, "tensor", 0.0, math.inf, f"p = {p}", "work element-wise on h and keep")
        if problem:  # only the type and the shape are checked here (infinite tolerance)
            return verdict(False, name, *problem)
        out = out.detach().float()
        if torch.allclose(out, reference.inverted_dropout(h, keep, p), atol=1e-6):
            continue
        ok = False
        hint = next((hint for mistake, hint in TRAINING_MISTAKES.items()
                     if torch.allclose(out, reference.inverted_dropout(h, keep, p, mistake=mistake), atol=1e-6)),
                    "zero the dropped units (keep = 0) and rescale the others so that each unit's expected value "
                    "stays the same")
        verdict(False, name, f"wrong output for p = {p}", hint)
    ran, out = attempt(fn, name, h.clone(), keep.clone(), 0.5, training=False)
    if not ran:
        return False
    problem = difference(out, reference.inverted_dropout(h, keep, 0.5, training=False), "tensor", 1e-6, 0.0,
                         "evaluation mode (training=False)")
    if problem:
        message, hint = problem
        old = reference.inverted_dropout(h, keep, 0.5, training=False, mistake="classic")
        if isinstance(out, torch.Tensor) and out.shape == h.shape and torch.allclose(out.float(), old):
            hint = ("this is the old (non-inverted) dropout's test-time scaling; inverted dropout does all its "
                    "scaling in training")
        ok = verdict(False, name, message, hint or "with training=False inverted dropout changes nothing: every "
                                                   "unit is used as it is")
    if ok:
        verdict(True, name, "training mode (p = 0.5, 0.4, 0.2) and evaluation mode are right")
    return ok


SOLUTIONS = {"inverted_dropout": [reference.inverted_dropout]}
MISTAKES = [Mistake("inverted_dropout", partial(reference.inverted_dropout, mistake="drop-probability"), "dropping"),
            Mistake("inverted_dropout", partial(reference.inverted_dropout, mistake="shrink"), "shrink"),
            Mistake("inverted_dropout", partial(reference.inverted_dropout, mistake="always"), "evaluation mode"),
            Mistake("inverted_dropout", lambda *a, **k: reference.inverted_dropout(*a, **k).tolist(), "torch.Tensor"),
            Mistake("inverted_dropout", lambda *a, **k: None, "None"),
            Mistake("inverted_dropout", lambda *a, **k: reference.inverted_dropout(*a, **k)[:3], "shape")]
