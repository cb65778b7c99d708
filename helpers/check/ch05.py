"""Chapter 5's self-check: circle loss, both reductions, value and gradient."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from .. import losses, reference
from .grading import PASS, Mistake, attempt, describe, difference, matching_hint, short, verdict

__all__ = ["circle_loss"]


def circle_loss(fn: Callable) -> bool:
    """Check circle_loss(embeddings, labels, m, gamma, reduction) for both reductions: value and gradient.

    reduction='batch' pools every pair i < j of the batch into one term (helpers.losses.circle_loss_from_pairs);
    reduction='anchor' averages the non-zero per-anchor terms (helpers.losses.circle_loss_per_anchor).
    Edge cases: a batch with a single class (no negative pair) and one with distinct labels (no positive
    pair) give a zero loss that can still be backpropagated.
    """
    name = "circle_loss"
    g = torch.Generator().manual_seed(0)

    def embeddings(n: int) -> torch.Tensor:
        return torch.randn(n, 8, generator=g, dtype=torch.float64)

    three = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    cases = [("3 classes, m = 0.25, gamma = 80", embeddings(12), three, 0.25, 80.0),
             ("m = 0.4, gamma = 80", embeddings(12), three[torch.randperm(12, generator=g)], 0.4, 80.0),
             ("m = 0.25, gamma = 256", embeddings(12), three, 0.25, 256.0),
             ("a class with a single sample", embeddings(9), torch.tensor([0, 0, 1, 1, 1, 2, 0, 1, 0]), 0.25, 80.0),
             ("one class only: no negative pair", embeddings(5), torch.zeros(5, dtype=torch.long), 0.25, 80.0),
             ("all labels distinct: no positive pair", embeddings(5), torch.arange(5), 0.25, 80.0)]
    variants = {
        "batch": [(partial(reference.circle_loss, reduction="batch", pairs="ordered"),
                   "each pair of samples counts once (i < j), not once in each order"),
                  (partial(reference.circle_loss, reduction="batch", pairs="with-self"),
                   "a sample does not form a pair with itself"),
                  (partial(reference.circle_loss, reduction="batch", normalise=False),
                   "similarities are cosines: put every embedding on the unit sphere first"),
                  (partial(reference.circle_loss, reduction="batch", softplus=False),
                   "the pooled term is log(1 + ...): the two log-sum-exps go through a softplus"),
                  (lambda e, l, m, gamma: reference.circle_loss(e, l, m, gamma, "anchor"),
                   "reduction='batch' pools all pairs of the batch into one term; this looks like the per-anchor "
                   "form")],
        "anchor": [(partial(reference.circle_loss, reduction="anchor", average="all"),
                    "average only the anchors whose term is non-zero (an anchor without a positive or a negative "
                    "contributes nothing and is left out of the mean)"),
                   (partial(reference.circle_loss, reduction="anchor", self_positive=True),
                    "an anchor is not its own positive: leave the self-pair out"),
                   (partial(reference.circle_loss, reduction="anchor", normalise=False),
                    "similarities are cosines: put every embedding on the unit sphere first"),
                   (lambda e, l, m, gamma: reference.circle_loss(e, l, m, gamma, "batch"),
                    "reduction='anchor' computes one term per anchor over its own pairs, then averages; this "
                    "looks like the pooled 'batch' form")]}
    general = {"batch": "cosine similarities of the pairs i < j, self-paced weights alpha, the scaled logits, then "
                        "one softplus term pooling the log-sum-exps of all positive and all negative logits",
               "anchor": "for each anchor, its positives and negatives over ordered pairs (no self-pair), one "
                         "softplus term per anchor, then the mean of the non-zero terms"}
    ok = True
    for reduction in ("batch", "anchor"):
        label = f"{name} (reduction={reduction!r})"
        passed = True
        for number, (what, e, labels, m, gamma) in enumerate(cases, 1):
            where = f"test case {number} ({what})"
            leaf = e.clone().requires_grad_(True)
            ran, out = attempt(fn, label, leaf, labels.clone(), m=m, gamma=gamma, reduction=reduction)
            if not ran:
                passed = False
                break
            reference_leaf = e.clone().requires_grad_(True)
            expected = losses.circle_loss(reference_leaf, labels, m=m, gamma=gamma, reduction=reduction)
            (expected_grad,) = torch.autograd.grad(expected, reference_leaf)
            if not isinstance(out, torch.Tensor) or out.numel() != 1:
                passed = verdict(False, label, f"{where}: returned {describe(out)}; expected a single-number tensor",
                                 "return the loss as a 0-d tensor, computed from the embeddings so that it can "
                                 "be backpropagated")
                break
            problem = difference(out, expected, "number", 1e-9, 1e-6, where)
            if problem:
                message, hint = problem
                hint = hint or matching_hint(out, variants[reduction], (e, labels, m, gamma), {}, "number", 1e-9, 1e-6)
                if not hint and expected.item() == 0:
                    hint = ("with no positive pair or no negative pair there is nothing to pull together or push "
                            "apart: the loss is 0")
                passed = verdict(False, label, message, hint or general[reduction])
                break
            if not out.requires_grad:
                passed = verdict(False, label, f"{where}: the value is right but it is not connected to the "
                                               f"embeddings, so it cannot be backpropagated",
                                 "even a zero loss (an empty side) should be computed from the embeddings, "
                                 "e.g. as a sum of similarities times 0")
                break
            try:
                (grad,) = torch.autograd.grad(out.sum(), leaf, allow_unused=True)
            except Exception as error:
                passed = verdict(False, label, f"{where}: backpropagating the loss raised {type(error).__name__}: "
                                               f"{short(error)}",
                                 "build the loss from differentiable tensor operations")
                break
            grad = torch.zeros_like(leaf) if grad is None else grad
            problem = difference(grad, expected_grad, "tensor", 1e-9, 1e-5, where)
            if problem:
                passed = verdict(False, label, f"{where}: the value is right but the gradient is not ("
                                               f"{problem[0].split(': ', 1)[-1]})",
                                 "the self-paced weights alpha are constants for the gradient: compute them from "
                                 "similarities cut off from the graph")
                break
        if passed:
            verdict(True, label, f"value and gradient match the reference on {len(cases)} test cases, "
                                 f"edge cases included")
        ok = ok and passed
    return ok


def _zero_without_graph(e: torch.Tensor, labels: torch.Tensor, m: float, gamma: float, reduction: str
                        ) -> torch.Tensor:
    loss = reference.circle_loss(e, labels, m, gamma, reduction)
    return torch.tensor(0.0, dtype=e.dtype) if loss.item() == 0 else loss


BOTH = ("reduction='batch'", "reduction='anchor'")
SOLUTIONS = {"circle_loss": [losses.circle_loss, reference.circle_loss]}
MISTAKES = [Mistake("circle_loss", partial(reference.circle_loss, detach=False),
                    ("constants for the gradient",) + BOTH),
            Mistake("circle_loss", partial(reference.circle_loss, average="all"),
                    ("non-zero", f"{PASS} circle_loss (reduction='batch')")),  # the batch form is right and says so
            Mistake("circle_loss", partial(reference.circle_loss, pairs="ordered"), "i < j"),
            Mistake("circle_loss", lambda e, labels, m, gamma, reduction: reference.circle_loss(e, labels, m, gamma),
                    "anchor"),
            Mistake("circle_loss", _zero_without_graph, "backpropagated"),
            Mistake("circle_loss", lambda *a, **k: reference.circle_loss(*a, **k).item(), "tensor"),
            Mistake("circle_loss", lambda e, labels, m, gamma: reference.circle_loss(e, labels, m, gamma), "TypeError")]
