"""Slow by-definition versions of the book's algorithms: the one set of oracles for self-checks, tests, benchmarks.

Each function is written plainly from the definition the chapter gives, independently of the careful or
fast version in helpers; the tests compare both with each other and with published libraries. The
keyword-only switches turn on the typical mistakes the self-checks recognise; their defaults are the
definition.
"""
from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .ablation import ablate
from .models import eval_mode
from .separation import EPS, FLUSH, Ranking
from .training import evaluate


def _mode(model: nn.Module, train_mode: bool) -> AbstractContextManager:
    """Eval mode with every module's own mode restored afterwards; the mistake train_mode=True leaves the mode alone."""
    return nullcontext() if train_mode else eval_mode(model)


def _targets(target: Any, logits: torch.Tensor) -> torch.Tensor:
    """One class per image: None is the predicted class, one int is the same class for every image."""
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, dtype=torch.long).flatten()
    return t.expand(len(logits)) if t.numel() == 1 else t


# ---------------------------------------------------------------- chapter 1: backpropagation by hand

def backprop_by_hand(x1: float, x2: float, w13: float, w23: float, w14: float, w24: float, w35: float, w45: float,
                     target: float, *, mistake: str | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """The 2-2-1 sigmoid network's forward pass and the gradients of (y5 - target)^2, by the chain rule.

    mistake: "half" (the loss with a 1/2), "sign" (output minus target swapped), "no-output-slope",
    "no-hidden-slope" (a sigmoid's slope left out).
    """
    sigmoid = lambda z: 1 / (1 + math.exp(-z))
    H3, H4 = w13 * x1 + w23 * x2, w14 * x1 + w24 * x2
    y3, y4 = sigmoid(H3), sigmoid(H4)
    O5 = w35 * y3 + w45 * y4
    y5 = sigmoid(O5)
    dE_dy5 = {"half": 1, "sign": -2}.get(mistake, 2) * (y5 - target)
    d5 = dE_dy5 * (1 if mistake == "no-output-slope" else y5 * (1 - y5))
    slope = (lambda y: 1) if mistake == "no-hidden-slope" else (lambda y: y * (1 - y))
    d3, d4 = d5 * w35 * slope(y3), d5 * w45 * slope(y4)
    forward = dict(H3=H3, H4=H4, y3=y3, y4=y4, O5=O5, y5=y5)
    return forward, dict(w35=d5 * y3, w45=d5 * y4, w13=d3 * x1, w23=d3 * x2, w14=d4 * x1, w24=d4 * x2)


# ---------------------------------------------------------------- chapter 2: inverted dropout

def inverted_dropout(h: torch.Tensor, keep: torch.Tensor, p: float, training: bool = True, *,
                     mistake: str | None = None) -> torch.Tensor:
    """Zero the dropped units (keep = 0), scale the kept ones by 1 / (1 - p); unchanged when not training.

    mistake: "classic" (no scaling in training, times (1 - p) at test time: the non-inverted dropout),
    "shrink" (times (1 - p)), "drop-probability" (divided by p), "swapped-mask" (the dropped units kept),
    "always" (also in evaluation).
    """
    if not training and mistake != "always":
        return h * (1 - p) if mistake == "classic" else h
    kept = h * (1 - keep) if mistake == "swapped-mask" else h * keep
    if mistake == "classic":
        return kept
    if mistake == "shrink":
        return kept * (1 - p)
    return kept / p if mistake == "drop-probability" else kept / (1 - p)


# ---------------------------------------------------------------- chapter 3: label smoothing

def label_smoothing_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float, *,
                                  spread: str = "K", reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against the smoothed target: eps / K for every class, 1 - eps on top for the label.

    Mistakes: spread="K-1" (eps shared by the other classes only), reduction="sum" (not averaged).
    """
    k = logits.shape[1]
    share = epsilon / (k - 1) if spread == "K-1" else epsilon / k
    q = torch.full_like(logits, share)
    q[torch.arange(len(target)), target] = 1 - epsilon + (0 if spread == "K-1" else share)
    per_sample = -(q * F.log_softmax(logits, dim=1)).sum(1)
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


# ---------------------------------------------------------------- chapter 4: FGSM and PGD

def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, train_mode: bool = False,
                  backward: bool = False) -> torch.Tensor:
    """The gradient of the cross-entropy with respect to the input, in eval mode.

    Mistakes: train_mode (Dropout and BatchNorm in train mode), backward (loss.backward(), which also
    adds into the parameters' .grad).
    """
    x = x.detach().clone().requires_grad_(True)
    with _mode(model, train_mode), torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        if backward:
            loss.backward()
            return x.grad
        return torch.autograd.grad(loss, x)[0]


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, sign: float = 1.0,
         use_sign: bool = True, clip: bool = True, train_mode: bool = False, backward: bool = False) -> torch.Tensor:
    """x + eps * sign(gradient of the loss), clipped to [0, 1].

    Mistakes: sign=-1 (downhill), use_sign=False (the raw gradient), clip=False, and loss_gradient's.
    """
    grad = loss_gradient(model, x, y, train_mode=train_mode, backward=backward)
    out = x.detach() + sign * eps * (grad.sign() if use_sign else grad)
    return out.clamp(0, 1) if clip else out


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int, *,
        sign: float = 1.0, project: bool = True, clip: bool = True, train_mode: bool = False,
        backward: bool = False) -> torch.Tensor:
    """`steps` FGSM steps of size alpha from x, each projected onto the eps-ball around x and onto [0, 1].

    Mistakes: sign=-1 (downhill), project=False, clip=False, and loss_gradient's.
    """
    x = x.detach()
    x_adv = x.clone()
    for _ in range(steps):
        grad = loss_gradient(model, x_adv, y, train_mode=train_mode, backward=backward)
        x_adv = x_adv + sign * alpha * grad.sign()
        if project:
            x_adv = x + (x_adv - x).clamp(-eps, eps)
        if clip:
            x_adv = x_adv.clamp(0, 1)
    return x_adv


# ---------------------------------------------------------------- chapter 5: circle loss

def circle_loss(embeddings: torch.Tensor, labels: torch.Tensor, m: float = 0.25, gamma: float = 80.0,
                reduction: str = "batch", *, pairs: str = "upper", normalise: bool = True, softplus: bool = True,
                detach: bool = True, self_positive: bool = False, average: str = "nonzero") -> torch.Tensor:
    """Circle loss from the paper's formulas: 'batch' pools the pairs i < j, 'anchor' averages non-zero anchor terms.

    Mistakes: pairs="ordered" (each pair twice) or "with-self", normalise=False (dot products, not
    cosines), softplus=False, detach=False (the weights alpha differentiated), self_positive (an
    anchor its own positive), average="all" (the mean over every anchor).
    """
    unit = F.normalize(embeddings, dim=1) if normalise else embeddings
    sim = unit @ unit.T
    n = len(labels)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=labels.device)

    def term(s_p: torch.Tensor, s_n: torch.Tensor) -> torch.Tensor:
        if not len(s_p) or not len(s_n):
            return sim.sum() * 0  # nothing to pull together or push apart; still connected to the embeddings
        alpha_p = torch.relu(1 + m - (s_p.detach() if detach else s_p))
        alpha_n = torch.relu((s_n.detach() if detach else s_n) + m)
        total = (torch.logsumexp(gamma * alpha_n * (s_n - m), 0)
                 + torch.logsumexp(-gamma * alpha_p * (s_p - (1 - m)), 0))
        return F.softplus(total) if softplus else total

    if reduction == "batch":
        upper = torch.ones(n, n, dtype=torch.bool, device=labels.device).triu(1)
        mask = {"upper": upper, "ordered": ~eye, "with-self": upper | eye}[pairs]
        return term(sim[mask & same], sim[mask & ~same])
    terms = torch.stack([term(sim[a][same[a] if self_positive else same[a] & ~eye[a]], sim[a][~same[a]])
                         for a in range(n)])
    if average == "all":
        return terms.mean()
    nonzero = terms > 0
    return terms[nonzero].mean() if nonzero.any() else terms.sum() * 0


# ---------------------------------------------------------------- chapter 6: separation indices and ranking

def _tensor(values: Any) -> torch.Tensor:
    return values.detach() if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))


def _zscored(x: Any, normalize: bool = True, eps: float = EPS) -> torch.Tensor:
    """One row per sample in float64, each feature (x - mean) / (std + eps), values below FLUSH flushed to 0."""
    x = _tensor(x)
    z = x.reshape(len(x), -1).to(torch.float64)
    if normalize:
        z = (z - z.mean(0)) / (z.std(0) + eps)
    return z.masked_fill(z.abs() < FLUSH, 0.0)


def _squared_distances(a: torch.Tensor, b: torch.Tensor, features: Sequence[int] | None = None) -> torch.Tensor:
    """(len(a), len(b)) squared distances, the per-feature terms added one feature at a time in the given order."""
    dist = torch.zeros(len(a), len(b), dtype=torch.float64)
    for k in range(a.shape[1]) if features is None else features:
        diff = a[:, k, None] - b[None, :, k]
        dist = dist + diff * diff
    return dist


def _nearest(dist: torch.Tensor, ties: str) -> torch.Tensor:
    """Each row's nearest column; ties to the lowest index (the mistake ties="highest": to the highest)."""
    return dist.argmin(1) if ties == "lowest" else dist.shape[1] - 1 - dist.flip(1).argmin(1)


def separation_index(x: Any, y: Any, *, normalize: bool = True, eps: float = EPS, ties: str = "lowest",
                     exclude: str = "self", count: bool = False) -> float:
    """SI: the fraction of samples whose nearest other sample (z-scored features) has the same label.

    Mistakes: normalize=False, eps=0 (a constant feature becomes NaN), ties="highest", exclude="none"
    (a sample its own neighbour) or "zero" (identical copies left out too), count=True (not a fraction).
    """
    z, y = _zscored(x, normalize, eps), _tensor(y)
    dist = _squared_distances(z, z)
    if exclude == "self":
        dist.fill_diagonal_(math.inf)  # a sample is not its own neighbour
    elif exclude == "zero":
        dist[dist == 0] = math.inf
    same = (y[_nearest(dist, ties)] == y).double()
    return same.sum().item() if count else same.mean().item()


def center_separation_index(x: Any, y: Any, *, normalize: bool = True, eps: float = EPS, ties: str = "lowest",
                            classes: str = "present", count: bool = False) -> float:
    """CSI: the fraction of samples whose nearest class centroid (mean of the z-scored features) is their own class.

    Mistakes: normalize=False, eps=0, ties="highest", classes="range" (centroids for 0..max label, empty
    ones included), count=True.
    """
    z, y = _zscored(x, normalize, eps), _tensor(y)
    labels = torch.unique(y) if classes == "present" else torch.arange(int(y.max()) + 1)
    centroids = torch.stack([z[y == c].mean(0) for c in labels])
    same = (labels[_nearest(_squared_distances(z, centroids), ties)] == y).double()
    return same.sum().item() if count else same.mean().item()


def _steps(k: int | None, d: int) -> int:
    if k is not None and not 1 <= int(k) <= d:
        raise ValueError(f"k must lie between 1 and the number of features ({d}), got {k}")
    return d if k is None else int(k)


def forward_ranking(x: Any, y: Any, k: int | None = None, normalize: bool = True) -> Ranking:
    """Greedy forward ranking by SI, naive: every candidate's distance matrix recomputed from scratch.

    At each step the candidate giving the most samples a same-label nearest neighbour is added; it
    replaces the best so far only if strictly better, so ties go to the lowest feature index.
    """
    z, y = _zscored(x, normalize), _tensor(y)
    n, d = z.shape
    order: list[int] = []
    curve: list[float] = []
    for _ in range(_steps(k, d)):
        best, best_count = -1, -1
        for c in range(d):
            if c in order:
                continue
            dist = _squared_distances(z, z, order + [c])
            dist.fill_diagonal_(math.inf)  # a sample is not its own neighbour
            count = int((y[dist.argmin(1)] == y).sum())  # argmin: the lowest index among ties
            if count > best_count:  # strictly better: ties keep the lower feature index
                best, best_count = c, count
        order.append(best)
        curve.append(best_count / n)
    return Ranking(order, curve)


def incremental_forward_ranking(x: Any, y: Any, k: int | None = None, normalize: bool = True) -> Ranking:
    """The same ranking, plain incremental: the selected features' distances kept, one candidate added at a time."""
    z, y = _zscored(x, normalize), _tensor(y)
    n, d = z.shape
    base = torch.zeros(n, n, dtype=torch.float64)
    base.fill_diagonal_(math.inf)
    order: list[int] = []
    curve: list[float] = []
    for _ in range(_steps(k, d)):
        best, best_count, best_dist = -1, -1, base
        for c in range(d):
            if c in order:
                continue
            dist = base + _squared_distances(z, z, [c])
            count = int((y[dist.argmin(1)] == y).sum())
            if count > best_count:
                best, best_count, best_dist = c, count, dist
        base = best_dist
        order.append(best)
        curve.append(best_count / n)
    return Ranking(order, curve)


# ---------------------------------------------------------------- chapter 7: interpretability

def _minmax(maps: torch.Tensor) -> torch.Tensor:
    maps = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + 1e-7)


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str, target: Any = None, *, score: str = "logit",
             relu: bool = True, upsample: str = "bilinear", align_corners: bool = False, renormalise: bool = True,
             copy: bool = True, train_mode: bool = False) -> torch.Tensor:
    """Grad-CAM (N, H, W) from the recipe, in eval mode.

    Raw-logit gradients at `layer`; channel weights = spatial mean of the gradients; weighted sum of the
    activations; ReLU; min-max normalise; bilinear upsampling (align_corners=False) to the input size;
    min-max again. Mistakes: score="probability", relu=False, upsample="nearest", align_corners=True,
    renormalise=False, copy=False (activations a later in-place ReLU overwrites), train_mode.
    """
    stored = []

    def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        stored.append(output)
        return output.clone() if copy else None  # the rest of the network works on a copy it cannot overwrite

    handle = dict(model.named_modules())[layer].register_forward_hook(keep)
    try:
        with _mode(model, train_mode), torch.enable_grad():
            logits = model(x.detach().clone().requires_grad_(True))
            scores = logits if score == "logit" else logits.softmax(1)
            (grads,) = torch.autograd.grad(scores[torch.arange(len(x)), _targets(target, logits)].sum(), stored[0])
    finally:
        handle.remove()
    cam = (grads.mean(dim=(2, 3), keepdim=True) * stored[0].detach()).sum(1, keepdim=True)
    cam = _minmax(cam.clamp(min=0) if relu else cam)
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode=upsample,
                        align_corners=align_corners if upsample == "bilinear" else None)
    return (_minmax(cam) if renormalise else cam)[:, 0]


def occlusion(model: nn.Module, x: torch.Tensor, target: Any, patch: int, stride: int, fill: float = 0.0, *,
              quantity: str = "drop", score: str = "probability", border: bool = True, average: bool = True,
              train_mode: bool = False) -> torch.Tensor:
    """Occlusion (N, H, W): each pixel's mean drop of the target's probability over the patches that covered it.

    Patches start at 0, stride, 2 stride, ... plus a last one touching the border. Mistakes:
    quantity="probability" (the occluded probability) or "rise" (the sign flipped), score="logit",
    border=False, average=False (sums, not means), train_mode.
    """
    def starts(length: int) -> list[int]:
        s = list(range(0, length - patch + 1, stride))
        return s + [length - patch] if border and s[-1] != length - patch else s

    n, _, height, width = x.shape
    f = (lambda logits: logits.softmax(1)) if score == "probability" else (lambda logits: logits)
    heat = torch.zeros(n, height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    with _mode(model, train_mode), torch.no_grad():
        logits = model(x)
        t = _targets(target, logits)
        base = f(logits)[torch.arange(n), t]
        for top in starts(height):
            for left in starts(width):
                hidden = x.clone()
                hidden[..., top:top + patch, left:left + patch] = fill
                p = f(model(hidden))[torch.arange(n), t]
                value = {"drop": base - p, "rise": p - base, "probability": p}[quantity]
                heat[:, top:top + patch, left:left + patch] += value[:, None, None]
                count[top:top + patch, left:left + patch] += 1
    return heat / count.clamp(min=1) if average else heat


class GuidedReLU(torch.autograd.Function):
    """The guided ReLU by definition: max(x, 0); backward passes gradient only where input and gradient are > 0."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


def input_gradient(model: nn.Module, x: torch.Tensor, target: Any = None, *, guided: bool = False,
                   score: str = "logit", train_mode: bool = False, backward: bool = False) -> torch.Tensor:
    """The gradient of the target class's raw logit with respect to x, in eval mode; guided: every nn.ReLU a GuidedReLU.

    Mistakes: score="probability", train_mode, backward (x.grad by backward(), which fills the weights' .grad too).
    """
    def as_guided(_module: nn.Module, inputs: tuple, _output: torch.Tensor) -> torch.Tensor:
        return GuidedReLU.apply(inputs[0])  # an in-place ReLU already clamped its input: the same result

    handles = [m.register_forward_hook(as_guided) for m in model.modules() if guided and isinstance(m, nn.ReLU)]
    try:
        with _mode(model, train_mode), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            logits = model(x)
            scores = logits if score == "logit" else logits.softmax(1)
            chosen = scores[torch.arange(len(x)), _targets(target, logits)].sum()
            if backward:
                chosen.backward()
                return x.grad
            return torch.autograd.grad(chosen, x)[0]
    finally:
        for handle in handles:
            handle.remove()


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Any = None, *, rule: str = "guided",
                    score: str = "logit", train_mode: bool = False, backward: bool = False) -> torch.Tensor:
    """Guided backpropagation: the input gradient of the target's logit through guided ReLUs.

    Mistakes: rule="plain" (the ordinary gradient) or "clamp-input" (the ordinary gradient clamped at
    the input, not at every ReLU), and input_gradient's.
    """
    grad = input_gradient(model, x, target, guided=rule == "guided", score=score, train_mode=train_mode,
                          backward=backward)
    return grad.clamp(min=0) if rule == "clamp-input" else grad


# ---------------------------------------------------------------- chapter 8: ablation

def block_drops(model: nn.Module, loader: Any, blocks: Sequence[str]) -> dict[str, float]:
    """The accuracy lost when each residual block's branch is ablated (its last BatchNorm's output zeroed)."""
    clean = evaluate(model, loader)["acc"]
    drops = {}
    for block in blocks:
        with ablate(model, f"{block}.bn2"):
            drops[block] = clean - evaluate(model, loader)["acc"]
    return drops
