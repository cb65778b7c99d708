"""Adversarial attacks in [0, 1] pixel space: FGSM, PGD, Gaussian noise, and a batch adversary for `fit`."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .models import eval_mode  # chapter 4 shows it here: attacks run the model in eval mode

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  loss_fn: Callable | None = None) -> torch.Tensor:
    """Gradient of the loss with respect to the input pixels (model in eval mode, parameters' .grad untouched)."""
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    x = x.detach().requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        loss = loss_fn(model(x), y)
        # autograd.grad (not loss.backward) so nothing accumulates in the parameters' .grad
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
         loss_fn: Callable | None = None) -> torch.Tensor:
    """Fast gradient sign method: x' = clip(x + eps * sign(grad_x L), 0, 1)."""
    check_eps(eps)
    check_batch(x, y)
    x = x.detach()
    delta = eps * loss_gradient(model, x, y, loss_fn).sign()  # |delta| <= eps: already in the eps-ball
    return torch.clamp(x + delta, 0, 1)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
        random_start: bool = False, loss_fn: Callable | None = None,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent (L-inf): `steps` FGSM steps of size alpha, each projected onto the eps-ball and [0, 1]."""
    check_eps(eps)
    if not alpha > 0:
        raise ValueError(f"alpha (the PGD step size) must be positive, got {alpha}; a common choice is 2.5 * eps / steps")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    check_batch(x, y)
    x = x.detach()
    x_adv = x.clone()
    if random_start:  # start from a uniformly random point of the eps-ball
        delta = _random(x, generator).mul_(2 * eps).sub_(eps)
        x_adv = torch.clamp(x + delta, 0, 1)
    for _ in range(steps):
        x_adv = x_adv + alpha * loss_gradient(model, x_adv, y, loss_fn).sign()
        delta = torch.clamp(x_adv - x, -eps, eps)  # project onto the eps-ball around x ...
        x_adv = torch.clamp(x + delta, 0, 1)       # ... and onto valid pixels
    return x_adv


def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x plus N(0, sigma^2) noise per pixel, clipped to [0, 1]."""
    if not sigma >= 0:
        raise ValueError(f"sigma (the noise standard deviation) must be >= 0, got {sigma}")
    check_pixels(x)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype,
                        device=generator.device if generator is not None else x.device)
    return torch.clamp(x.detach() + sigma * noise.to(x.device), 0, 1)


def fgsm_with_noise(eps: float, sigma: float, generator: torch.Generator | None = None) -> Attack:
    """The coursework's attack as one callable attack(model, x, y): FGSM(eps), then Gaussian noise(sigma)."""
    check_eps(eps)
    if not sigma >= 0:
        raise ValueError(f"sigma (the noise standard deviation) must be >= 0, got {sigma}")

    def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return gaussian_noise(fgsm(model, x, y, eps), sigma, generator)

    attack.__qualname__ = attack.__name__ = f"fgsm_with_noise(eps={eps:g}, sigma={sigma:g})"
    return attack


def adversary(attack: Attack, p: float, generator: torch.Generator | None = None) -> Attack:
    """For fit(adversary=...): with probability p, replace the whole batch by attack(model, x, y)."""
    if not callable(attack):
        raise ValueError(f"attack must be a callable attack(model, x, y), got {attack!r}; "
                         f"e.g. functools.partial(attacks.fgsm, eps=0.1)")
    if not 0 <= p <= 1:
        raise ValueError(f"p (the probability of replacing a batch) must lie in [0, 1], got {p}")

    def replace(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        coin = torch.rand((), generator=generator,
                          device=generator.device if generator is not None else None)
        return attack(model, x, y).detach() if coin.item() < p else x

    return replace


# ---------------------------------------------------------------- input checks

def check_eps(eps: float) -> None:
    """eps is the L-inf radius in [0, 1] pixel units: a finite number >= 0."""
    if not isinstance(eps, (int, float)) or not 0 <= eps < float("inf"):
        raise ValueError(f"eps (the L-inf budget, in [0, 1] pixel units) must be a number >= 0, got {eps!r}; "
                         f"e.g. eps=8/255 or eps=0.1")


def check_pixels(x: torch.Tensor) -> None:
    """Attacks work on float images in [0, 1]: the model normalises inside (helpers.models.Normalize)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"images must be a float tensor in [0, 1], got "
                         f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}; "
                         f"convert uint8 images with x.float() / 255")
    if not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError(f"images must lie in [0, 1] (found {x.min().item():.3g}..{x.max().item():.3g}, or NaN): "
                         f"attacks work in pixel space - pass images before normalisation; the model "
                         f"normalises them inside (helpers.models.Normalize)")


def check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    """A batch of images in [0, 1] with one integer label each."""
    check_pixels(x)
    if x.ndim < 2:
        raise ValueError(f"images must be a batch (N, ...), got shape {tuple(x.shape)}")
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"need one label per image: {len(x)} images but labels of shape "
                         f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"labels must be integer class indices, got {y.dtype}; use y.long()")


def _random(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform [0, 1) noise shaped like x, drawn on the generator's device (reproducible) then moved to x's."""
    device = generator.device if generator is not None else x.device
    return torch.rand(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
