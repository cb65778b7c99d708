"""Chapter 3's self-check: label-smoothing cross-entropy."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from .. import losses, reference
from .grading import Case, Mistake, compare

__all__ = ["label_smoothing"]


def label_smoothing(fn: Callable) -> bool:
    """Check label_smoothing_cross_entropy(logits, target, epsilon) against PyTorch's built-in."""
    g = torch.Generator().manual_seed(0)
    cases = [Case((torch.randn(8, 10, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)),
                  {"epsilon": eps}, f"epsilon = {eps}") for eps in (0.0, 0.1, 0.25)]
    builtin = lambda logits, target, epsilon: F.cross_entropy(logits, target, label_smoothing=epsilon)
    variants = [(partial(reference.label_smoothing_cross_entropy, spread="K-1"),
                 "this book spreads eps over all K classes, the label included (each gets eps / K on top)"),
                (partial(reference.label_smoothing_cross_entropy, reduction="sum"),
                 "average the per-sample losses over the batch instead of adding them up"),
                (lambda l, t, epsilon: F.cross_entropy(l, t),
                 "epsilon has no effect: the target must move eps of its mass away from the label")]
    return compare(fn, builtin, cases, "label_smoothing_cross_entropy",
                   "the smoothed target gives every class a share of eps and the label the rest; the loss is "
                   "the cross-entropy between that target and the softmax of the logits, averaged over the batch",
                   atol=1e-9, kind="number", diagnose=variants)


SOLUTIONS = {"label_smoothing": [losses.label_smoothing_cross_entropy, reference.label_smoothing_cross_entropy]}
MISTAKES = [Mistake("label_smoothing", partial(reference.label_smoothing_cross_entropy, spread="K-1"), "all K"),
            Mistake("label_smoothing", partial(reference.label_smoothing_cross_entropy, reduction="sum"), "average"),
            Mistake("label_smoothing", lambda l, t, epsilon: F.cross_entropy(l, t, reduction="none"),
                    "single number")]
