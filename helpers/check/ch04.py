"""Chapter 4's self-checks: FGSM and PGD, on a train-mode model the attack must leave as it found it."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

from .. import attacks, reference
from .grading import UNTOUCHED, Mistake, ModelCase, check_with_model, conv_net, images

__all__ = ["fgsm", "pgd"]

ATTACK_SHAPE = "return the perturbed images, shaped like x"


def fgsm(fn: Callable) -> bool:
    """Check fgsm(model, x, y, eps) against the book's reference, on a train-mode model with BatchNorm and Dropout.

    The result must equal the attack computed in eval mode, and the function must leave the model's
    modes (every submodule's), weights, BatchNorm statistics and parameters' .grad as they were.
    """
    x, y = images()
    cases = [ModelCase(conv_net, (x, y, eps), label=f"eps = {eps}") for eps in (0.03, 0.1)]
    cases.append(ModelCase(lambda: conv_net(seed=1), images(4, seed=1) + (0.05,), label="another model"))
    variants = [(partial(reference.fgsm, sign=-1.0),
                 "the step goes against the gradient, which lowers the loss: the attack moves uphill, to increase it"),
                (partial(reference.fgsm, clip=False),
                 "some pixels leave [0, 1]: the adversarial image must stay a valid image"),
                (partial(reference.fgsm, use_sign=False),
                 "FGSM moves every pixel by exactly eps, in the direction of its gradient's sign, not by the "
                 "gradient itself")]
    return check_with_model(fn, "fgsm", cases, attacks.fgsm,
                            "one step of size eps per pixel along the sign of the loss gradient with respect to "
                            "the input, then keep the pixels valid; the gradient is taken in eval mode",
                            UNTOUCHED, diagnose=variants, shape_hint=ATTACK_SHAPE)


def pgd(fn: Callable) -> bool:
    """Check pgd(model, x, y, eps, alpha, steps) (no random start) like fgsm: eval-mode result, model untouched."""
    x, y = images()
    cases = [ModelCase(conv_net, (x, y, 0.03, 0.01, 1), label="1 step"),
             ModelCase(conv_net, (x, y, 0.03, 0.01, 5), label="5 steps"),
             ModelCase(lambda: conv_net(seed=1), images(4, seed=1) + (0.05, 0.03, 4), label="alpha close to eps")]
    variants = [(partial(reference.pgd, project=False),
                 "the perturbation grows beyond eps: after every step, bring the image back into the eps-ball "
                 "around the *original* x"),
                (partial(reference.pgd, clip=False),
                 "some pixels leave [0, 1]: after every step the image must also stay a valid image"),
                (partial(reference.pgd, sign=-1.0),
                 "the steps go against the gradient, which lowers the loss: the attack moves uphill")]
    return check_with_model(fn, "pgd", cases, attacks.pgd,
                            "repeat a small FGSM-like step of size alpha, each time measuring the gradient at the "
                            "current adversarial image, then project back onto the eps-ball around x and onto "
                            "valid pixels; gradients in eval mode", UNTOUCHED, diagnose=variants,
                            shape_hint=ATTACK_SHAPE)


def _never_restores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    model.eval()  # right values, but the caller's train mode is gone
    return reference.fgsm(model, x, y, eps, train_mode=True)


def _marks_the_callers_x(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    x.requires_grad_(True)
    return reference.fgsm(model, x, y, eps)


SOLUTIONS = {"fgsm": [attacks.fgsm, reference.fgsm],
             "pgd": [lambda model, x, y, eps, alpha, steps: attacks.pgd(model, x, y, eps, alpha, steps),
                     reference.pgd]}
MISTAKES = [Mistake("fgsm", partial(reference.fgsm, train_mode=True), "train mode"),
            Mistake("fgsm", partial(reference.fgsm, backward=True), ".grad", never=("train mode",)),
            Mistake("fgsm", partial(reference.fgsm, sign=-1.0), "uphill"),
            Mistake("fgsm", partial(reference.fgsm, clip=False), "[0, 1]"),
            Mistake("fgsm", _never_restores, "wrong mode"),
            Mistake("fgsm", _marks_the_callers_x, "requires_grad"),
            Mistake("fgsm", lambda *a: reference.fgsm(*a).tolist(), "torch.Tensor"),
            Mistake("fgsm", lambda *a: None, "None"),
            Mistake("pgd", partial(reference.pgd, project=False), "eps-ball"),
            Mistake("pgd", partial(reference.pgd, train_mode=True), "train mode"),
            Mistake("pgd", partial(reference.pgd, backward=True), ".grad"),
            Mistake("pgd", lambda model, x, y, eps, alpha, steps: reference.fgsm(model, x, y, eps)),
            Mistake("pgd", lambda *a: reference.pgd(*a)[0], "shape")]
