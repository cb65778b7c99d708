"""helpers.check: every check passes a correct solution and fails typical wrong ones with a hint, never a traceback.

The reference solutions here are written independently of helpers (the way a student would); each
wrong one is a typical mistake. A failing verdict must print a hint; no exception may escape a check.
"""
from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import attacks, check, interpret, losses, separation
from references import GuidedReLUFunction


def run(check_fn, fn, capsys) -> tuple[bool, str]:
    """The check's result and everything it printed."""
    result = check_fn(fn)
    return result, capsys.readouterr().out


def assert_passes(check_fn, fn, capsys):
    result, out = run(check_fn, fn, capsys)
    assert result is True, out
    assert check.FAIL not in out, out


def assert_fails(check_fn, fn, capsys, *expected: str):
    """A failing verdict with a hint, and (if given) these words in the output."""
    result, out = run(check_fn, fn, capsys)
    assert result is False, out
    assert check.FAIL in out and "Hint:" in out, out
    assert "Traceback" not in out, out
    for words in expected:
        assert words.lower() in out.lower(), f"{words!r} not in:\n{out}"
    return out


def not_implemented(*args, **kwargs):
    raise NotImplementedError


# ---------------------------------------------------------------- shared: eval mode as a student writes it

class EvalMode:
    """Eval mode for a block, every module's own mode restored afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode


def targets_of(target, logits):
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target).long().flatten()
    return t.expand(len(logits)) if t.numel() == 1 else t


# ---------------------------------------------------------------- centre separation index (ch. 6)

def csi(x, y, ties="lowest", zscore=True, eps=1e-10):
    z = x.double()
    if zscore:
        z = (z - z.mean(0)) / (z.std(0) + eps)
    classes = torch.unique(y)
    centroids = torch.stack([z[y == c].mean(0) for c in classes])
    d = ((z[:, None] - centroids[None]) ** 2).sum(-1)
    nearest = d.argmin(1) if ties == "lowest" else len(classes) - 1 - d.flip(1).argmin(1)
    return (classes[nearest] == y).double().mean().item()


def test_center_separation_index_passes_a_correct_solution(capsys):
    assert_passes(check.center_separation_index, csi, capsys)
    assert_passes(check.center_separation_index, lambda x, y: separation.center_separation_index(x, y), capsys)


@pytest.mark.parametrize("wrong,words", [
    (lambda x, y: csi(x, y, ties="highest"), "lowest label"),
    (lambda x, y: csi(x, y, zscore=False), "z-score"),
    (lambda x, y: csi(x, y, eps=0.0), "std + 1e-10"),
    (lambda x, y: csi(x, y) * len(y), "fraction"),
    (lambda x, y: [csi(x, y)], "single number"),
    (lambda x, y: None, "single number"),
    (lambda x, y: torch.tensor([0.5, 0.5]), "single number"),
    (not_implemented, "not implemented yet"),
])
def test_center_separation_index_fails_typical_mistakes(wrong, words, capsys):
    assert_fails(check.center_separation_index, wrong, capsys, words)


def test_center_separation_index_range_k_labels_get_advice(capsys):
    def by_range(x, y):  # centroids indexed 0..max(label): empty classes for labels 0, 2, 5
        z = (x - x.mean(0)) / (x.std(0) + 1e-10)
        centroids = torch.stack([z[y == k].mean(0) for k in range(int(y.max()) + 1)])
        return (torch.cdist(z, centroids).argmin(1) == y).double().mean().item()

    assert_fails(check.center_separation_index, by_range, capsys, "labels 0, 2, 5")


# ---------------------------------------------------------------- occlusion (ch. 7)

def starts(length, patch, stride, border=True):
    s = list(range(0, length - patch + 1, stride))
    return s + [length - patch] if border and s[-1] != length - patch else s


def occlusion(model, x, target, patch, stride, fill=0.0, quantity="drop", border=True, mean=True, eval_mode=True,
              score="softmax"):
    n, _, h, w = x.shape

    def compute():
        with torch.no_grad():
            f = (lambda z: z.softmax(1)) if score == "softmax" else (lambda z: z)
            logits = model(x)
            t = targets_of(target, logits)
            base = f(logits)[torch.arange(n), t]
            heat, count = torch.zeros(n, h, w, dtype=x.dtype), torch.zeros(h, w, dtype=x.dtype)
            for top in starts(h, patch, stride, border):
                for left in starts(w, patch, stride, border):
                    hidden = x.clone()
                    hidden[:, :, top:top + patch, left:left + patch] = fill
                    p = f(model(hidden))[torch.arange(n), t]
                    value = base - p if quantity == "drop" else p
                    heat[:, top:top + patch, left:left + patch] += value[:, None, None]
                    count[top:top + patch, left:left + patch] += 1
            return heat / count if mean else heat

    if eval_mode:
        with EvalMode(model):
            return compute()
    return compute()


def test_occlusion_passes_a_correct_solution(capsys):
    assert_passes(check.occlusion, occlusion, capsys)
    assert_passes(check.occlusion, interpret.occlusion, capsys)


@pytest.mark.parametrize("wrong,words", [
    (lambda *a, **k: occlusion(*a, **k, quantity="probability"), "drop"),
    (lambda *a, **k: -occlusion(*a, **k), "sign"),
    (lambda *a, **k: occlusion(*a, **k, score="logit"), "probability"),
    (lambda *a, **k: occlusion(*a, **k, mean=False), "mean"),
    (lambda *a, **k: occlusion(*a, **k, border=False), "border"),
    (lambda *a, **k: occlusion(*a, **k, eval_mode=False), "train mode"),
    (lambda *a, **k: occlusion(*a, **k)[:, None], "(N, H, W)"),
    (lambda *a, **k: occlusion(*a, **k).tolist(), "torch.Tensor"),
    (lambda *a, **k: None, "None"),
    (not_implemented, "not implemented yet"),
])
def test_occlusion_fails_typical_mistakes(wrong, words, capsys):
    assert_fails(check.occlusion, wrong, capsys, words)


def test_occlusion_that_forgets_to_restore_the_mode_fails(capsys):
    def no_restore(model, *args, **kwargs):
        model.eval()
        return occlusion(model, *args, **kwargs, eval_mode=False)

    assert_fails(check.occlusion, no_restore, capsys, "wrong mode")


def test_plain_occlusion_equals_interpret_occlusion():
    model = check._conv_net()
    x, y = check._images(2, seed=4, size=(13, 11))
    for args in [(x, y, 5, 3, 0.5), (x, None, 4, 4, 0.0), (x[:1], 2, 13 - 2, 2, 0.25)]:
        expected = interpret.occlusion(model, *args[:4], fill=args[4])
        assert torch.allclose(check._plain_occlusion(model, *args), expected.double(), atol=1e-6)


# ---------------------------------------------------------------- guided backpropagation (ch. 7)

def clamp_output_gradient(module, inputs, output):
    """A forward hook: the gradient arriving at this ReLU call's output is clamped to >= 0."""
    output.register_hook(lambda g: g.clamp(min=0))


def guided_backprop(model, x, target):
    """Forward hooks on every ReLU put a clamp(min=0) hook on the output's gradient; all removed afterwards."""
    handles = [m.register_forward_hook(clamp_output_gradient)
               for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with EvalMode(model), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            logits = model(x)
            score = logits[torch.arange(len(x)), targets_of(target, logits)].sum()
            (grad,) = torch.autograd.grad(score, x)
    finally:
        for h in handles:
            h.remove()
    return grad


def plain_gradient(model, x, target):
    with EvalMode(model), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(logits[torch.arange(len(x)), targets_of(target, logits)].sum(), x)
    return grad


def backward_hook_guided(model, x, target):
    """The classic module backward hook: fails on in-place ReLUs."""
    handles = [m.register_full_backward_hook(lambda mod, gin, gout: (gin[0].clamp(min=0),))
               for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        return plain_gradient(model, x, target)
    finally:
        for h in handles:
            h.remove()


def hooks_left_behind(model, x, target):
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(clamp_output_gradient)
    return plain_gradient(model, x, target)


class GuidedReLU(nn.Module):
    def forward(self, x):
        return GuidedReLUFunction.apply(x)


def swapped_modules(model, x, target):
    """Replaces every ReLU by a guided one and never puts them back."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, GuidedReLU())
    return plain_gradient(model, x, target)


def test_guided_backprop_passes_a_correct_solution(capsys):
    assert_passes(check.guided_backprop, guided_backprop, capsys)
    assert_passes(check.guided_backprop, interpret.guided_backprop, capsys)


@pytest.mark.parametrize("wrong,words", [
    (plain_gradient, "ordinary gradient"),
    (lambda m, x, t: plain_gradient(m, x, t).clamp(min=0), "every relu"),
    (backward_hook_guided, "inplace"),
    (hooks_left_behind, "hook"),
    (swapped_modules, "replaced"),
    (lambda m, x, t: guided_backprop(m, x, t)[:, 0], "(N, C, H, W)"),
    (lambda m, x, t: None, "None"),
    (not_implemented, "not implemented yet"),
])
def test_guided_backprop_fails_typical_mistakes(wrong, words, capsys):
    assert_fails(check.guided_backprop, wrong, capsys, words)


def test_guided_backprop_without_eval_mode_fails(capsys):
    def train_mode(model, x, target):
        handles = [m.register_forward_hook(clamp_output_gradient)
                   for m in model.modules() if isinstance(m, nn.ReLU)]
        try:
            x = x.detach().clone().requires_grad_(True)
            logits = model(x)
            logits[torch.arange(len(x)), targets_of(target, logits)].sum().backward()
            return x.grad
        finally:
            for h in handles:
                h.remove()

    out = assert_fails(check.guided_backprop, train_mode, capsys, "train mode")
    assert ".grad" in out  # backward() also filled the weights' gradients


# ---------------------------------------------------------------- backprop by hand (ch. 1)

def backprop_by_hand(x1, x2, w13, w23, w14, w24, w35, w45, target, mistake=None):
    s = lambda z: 1 / (1 + math.exp(-z))
    H3, H4 = w13 * x1 + w23 * x2, w14 * x1 + w24 * x2
    y3, y4 = s(H3), s(H4)
    O5 = w35 * y3 + w45 * y4
    y5 = s(O5)
    d5 = {"half": 1, "sign": -2}.get(mistake, 2) * (y5 - target) * (1 if mistake == "no-slope5" else y5 * (1 - y5))
    slope = (lambda y: 1) if mistake == "no-hidden-slope" else (lambda y: y * (1 - y))
    d3, d4 = d5 * w35 * slope(y3), d5 * w45 * slope(y4)
    forward = dict(H3=H3, H4=H4, y3=y3, y4=y4, O5=O5, y5=y5)
    grads = dict(w35=d5 * y3, w45=d5 * y4, w13=d3 * x1, w23=d3 * x2, w14=d4 * x1, w24=d4 * x2)
    if mistake == "list":
        return [forward, grads]
    if mistake == "none-grad":
        grads["w13"] = None
    return forward, grads


def test_backprop_check(capsys):
    assert_passes(check.backprop, backprop_by_hand, capsys)
    for mistake, words in [("half", "1/2"), ("sign", "sign"), ("no-slope5", "slope"),
                           ("no-hidden-slope", "hidden unit's sigmoid slope"), ("list", "two dicts"),
                           ("none-grad", "not single numbers")]:
        out = assert_fails(check.backprop, lambda *a, **k: backprop_by_hand(*a, **k, mistake=mistake), capsys, words)
        assert "y5 (1 - y5)" not in out and "2 (y5 - t)" not in out  # hints explain, never give the formula
    assert_fails(check.backprop, not_implemented, capsys, "not implemented yet")


# ---------------------------------------------------------------- inverted dropout (ch. 2)

def test_inverted_dropout_check(capsys):
    right = lambda h, keep, p, training=True: h * keep / (1 - p) if training else h
    assert_passes(check.inverted_dropout, right, capsys)
    for wrong, words in [(lambda h, keep, p, training=True: h * keep / p if training else h, "dropping"),
                         (lambda h, keep, p, training=True: h * keep * (1 - p) if training else h, "shrink"),
                         (lambda h, keep, p, training=True: h * keep / (1 - p), "evaluation mode"),
                         (lambda h, keep, p, training=True: (h * keep / (1 - p)).tolist(), "torch.Tensor"),
                         (lambda h, keep, p, training=True: None, "None"),
                         (lambda h, keep, p, training=True: (h * keep)[:3], "shape")]:
        assert_fails(check.inverted_dropout, wrong, capsys, words)


# ---------------------------------------------------------------- label smoothing (ch. 3)

def smoothed_ce(logits, target, epsilon, spread="K", reduce="mean"):
    k = logits.shape[1]
    q = torch.full_like(logits, epsilon / (k - 1 if spread == "K-1" else k))
    q[torch.arange(len(target)), target] = 1 - epsilon + (0 if spread == "K-1" else epsilon / k)
    loss = -(q * logits.log_softmax(1)).sum(1)
    return loss.mean() if reduce == "mean" else loss.sum()


def test_label_smoothing_check(capsys):
    assert_passes(check.label_smoothing, smoothed_ce, capsys)
    assert_fails(check.label_smoothing, lambda l, t, epsilon: smoothed_ce(l, t, epsilon, spread="K-1"), capsys, "all K")
    assert_fails(check.label_smoothing, lambda l, t, epsilon: smoothed_ce(l, t, epsilon, reduce="sum"), capsys,
                 "average")
    assert_fails(check.label_smoothing, lambda l, t, epsilon: F.cross_entropy(l, t, reduction="none"), capsys,
                 "single number")


def test_compare_gives_each_call_its_own_copy_of_the_arguments(capsys):
    def mutates(logits, target, epsilon):
        loss = F.cross_entropy(logits, target, label_smoothing=epsilon)
        logits.mul_(2)  # the reference must not see this
        target.zero_()
        return loss

    assert_passes(check.label_smoothing, mutates, capsys)


# ---------------------------------------------------------------- FGSM and PGD (ch. 4)

def gradient(model, x, y, train=False, backward=False):
    x = x.detach().clone().requires_grad_(True)
    if train:
        loss = F.cross_entropy(model(x), y)
    else:
        with EvalMode(model):
            loss = F.cross_entropy(model(x), y)
    if backward:
        loss.backward()
        return x.grad
    return torch.autograd.grad(loss, x)[0]


def fgsm(model, x, y, eps, **how):
    return (x + eps * gradient(model, x, y, **how).sign()).clamp(0, 1).detach()


def pgd(model, x, y, eps, alpha, steps, project=True, **how):
    x_adv = x.clone()
    for _ in range(steps):
        x_adv = x_adv + alpha * gradient(model, x_adv, y, **how).sign()
        if project:
            x_adv = x + (x_adv - x).clamp(-eps, eps)
        x_adv = x_adv.clamp(0, 1)
    return x_adv.detach()


def test_fgsm_check(capsys):
    assert_passes(check.fgsm, fgsm, capsys)
    assert_passes(check.fgsm, lambda m, x, y, eps: fgsm(m, x, y, eps, backward=False), capsys)
    assert_fails(check.fgsm, lambda m, x, y, eps: fgsm(m, x, y, eps, train=True), capsys, "train mode")
    out = assert_fails(check.fgsm, lambda m, x, y, eps: fgsm(m, x, y, eps, backward=True), capsys, ".grad")
    assert "train mode" not in out  # eval mode was right: only the side effect is reported
    assert_fails(check.fgsm, lambda m, x, y, eps: (x - eps * gradient(m, x, y).sign()).clamp(0, 1), capsys, "uphill")
    assert_fails(check.fgsm, lambda m, x, y, eps: x + eps * gradient(m, x, y).sign(), capsys, "[0, 1]")

    def never_restores(model, x, y, eps):
        model.eval()
        x = x.detach().clone().requires_grad_(True)
        return (x + eps * torch.autograd.grad(F.cross_entropy(model(x), y), x)[0].sign()).clamp(0, 1).detach()

    assert_fails(check.fgsm, never_restores, capsys, "wrong mode")

    def caller_x_requires_grad(model, x, y, eps):
        x.requires_grad_(True)
        with EvalMode(model):
            g = torch.autograd.grad(F.cross_entropy(model(x), y), x)[0]
        return (x + eps * g.sign()).clamp(0, 1).detach()

    assert_fails(check.fgsm, caller_x_requires_grad, capsys, "requires_grad")
    assert_fails(check.fgsm, lambda m, x, y, eps: fgsm(m, x, y, eps).tolist(), capsys, "torch.Tensor")
    assert_fails(check.fgsm, lambda m, x, y, eps: None, capsys, "None")


def test_pgd_check(capsys):
    assert_passes(check.pgd, pgd, capsys)
    assert_passes(check.pgd, lambda m, x, y, eps, alpha, steps: attacks.pgd(m, x, y, eps, alpha, steps), capsys)
    assert_fails(check.pgd, lambda *a: pgd(*a, project=False), capsys, "eps-ball")
    assert_fails(check.pgd, lambda *a: pgd(*a, train=True), capsys, "train mode")
    assert_fails(check.pgd, lambda *a: pgd(*a, backward=True), capsys, ".grad")
    assert_fails(check.pgd, lambda m, x, y, eps, alpha, steps: fgsm(m, x, y, eps), capsys)
    assert_fails(check.pgd, lambda m, x, y, eps, alpha, steps: pgd(m, x, y, eps, alpha, steps)[0], capsys, "shape")


# ---------------------------------------------------------------- circle loss (ch. 5)

def circle(e, labels, m=0.25, gamma=80.0, reduction="batch", detach=True, average="nonzero", pairs="upper"):
    """Written from the paper's formulas: both reductions."""
    unit = F.normalize(e, dim=1)
    sim = unit @ unit.T
    n = len(labels)
    same = labels[:, None] == labels[None, :]

    def term(s_p, s_n):
        if not len(s_p) or not len(s_n):
            return e.sum() * 0
        a_p = torch.relu(1 + m - (s_p.detach() if detach else s_p))
        a_n = torch.relu((s_n.detach() if detach else s_n) + m)
        return F.softplus(torch.logsumexp(gamma * a_n * (s_n - m), 0)
                          + torch.logsumexp(-gamma * a_p * (s_p - (1 - m)), 0))

    if reduction == "batch":
        mask = torch.ones(n, n, dtype=torch.bool).triu(1) if pairs == "upper" else ~torch.eye(n, dtype=torch.bool)
        return term(sim[mask & same], sim[mask & ~same])
    eye = torch.eye(n, dtype=torch.bool)
    terms = torch.stack([term(sim[a][same[a] & ~eye[a]], sim[a][~same[a]]) for a in range(n)])
    if average == "all":
        return terms.mean()
    return terms[terms > 0].mean() if (terms > 0).any() else e.sum() * 0


def test_circle_loss_check_covers_both_reductions(capsys):
    assert_passes(check.circle_loss, circle, capsys)
    assert_passes(check.circle_loss, losses.circle_loss, capsys)
    out = assert_fails(check.circle_loss, lambda *a, **k: circle(*a, **k, detach=False), capsys,
                       "constants for the gradient")
    assert "reduction='batch'" in out and "reduction='anchor'" in out
    out = assert_fails(check.circle_loss, lambda *a, **k: circle(*a, **k, average="all"), capsys, "non-zero")
    assert f"{check.PASS} circle_loss (reduction='batch')" in out  # the batch form is right and says so
    assert_fails(check.circle_loss, lambda *a, **k: circle(*a, **k, pairs="ordered"), capsys, "i < j")
    assert_fails(check.circle_loss, lambda e, l, m, gamma, reduction: circle(e, l, m, gamma), capsys, "anchor")

    def zero_without_graph(e, labels, m, gamma, reduction):
        loss = circle(e, labels, m, gamma, reduction)
        return torch.tensor(0.0, dtype=e.dtype) if loss.item() == 0 else loss

    assert_fails(check.circle_loss, zero_without_graph, capsys, "backpropagated")
    assert_fails(check.circle_loss, lambda *a, **k: circle(*a, **k).item(), capsys, "tensor")
    assert_fails(check.circle_loss, lambda e, labels, m, gamma: circle(e, labels, m, gamma), capsys, "TypeError")


# ---------------------------------------------------------------- separation index (ch. 6)

def si(x, y, ties="lowest", zscore=True, eps=1e-10, exclude="self"):
    z = x.double()
    if zscore:
        z = (z - z.mean(0)) / (z.std(0) + eps)
    d = ((z[:, None] - z[None]) ** 2).sum(-1)
    if exclude == "self":
        d.fill_diagonal_(float("inf"))
    elif exclude == "zero":
        d[d == 0] = float("inf")
    nearest = d.argmin(1) if ties == "lowest" else len(z) - 1 - d.flip(1).argmin(1)
    return (y[nearest] == y).double().mean().item()


def test_separation_index_check(capsys):
    assert_passes(check.separation_index, si, capsys)
    assert_passes(check.separation_index, lambda x, y: separation.separation_index(x, y), capsys)
    assert_fails(check.separation_index, lambda x, y: si(x, y, ties="highest"), capsys, "lowest index")
    assert_fails(check.separation_index, lambda x, y: si(x, y, zscore=False), capsys, "z-score")
    assert_fails(check.separation_index, lambda x, y: si(x, y, eps=0.0), capsys, "std + 1e-10")
    assert_fails(check.separation_index, lambda x, y: si(x, y, exclude="none"), capsys, "itself")
    assert_fails(check.separation_index, lambda x, y: si(x, y, exclude="zero"), capsys, "identical copy")
    assert_fails(check.separation_index, lambda x, y: None, capsys, "single number")


def test_separation_index_tie_cases_are_exact_for_any_rounding_of_the_std():
    """The grid's ties hold whatever the std's last bits: a student's z-score may round differently."""
    x, y = check._tie_grid()
    for scale in (1.0, 1.0 + 2 ** -52, 1.0 - 2 ** -53, 3.0):
        z = x / (x.std(0) * scale + 1e-10)
        d = ((z[:, None] - z[None]) ** 2).sum(-1)
        d.fill_diagonal_(float("inf"))
        tied = (d == d.min(1, keepdim=True).values).sum(1)
        assert (tied == 2).sum() == 18  # every interior point of the first column: left and right neighbour
    assert si(x, y) != si(x, y, ties="highest")
    x, y = check._duplicates()
    assert si(x, y) != si(x, y, ties="highest")
    x, y = check._tied_centroids()
    assert csi(x, y) != csi(x, y, ties="highest")


# ---------------------------------------------------------------- Grad-CAM (ch. 7)

def grad_cam(model, x, layer, target=None, upsample="bilinear", eval_mode=True, copy=True):
    module = dict(model.named_modules())[layer]
    stored = []

    def hook(mod, inputs, output):
        stored.append(output)
        return output.clone() if copy else None

    handle = module.register_forward_hook(hook)
    try:
        with (EvalMode(model) if eval_mode else torch.enable_grad()), torch.enable_grad():
            logits = model(x.detach().clone().requires_grad_(True))
            score = logits[torch.arange(len(x)), targets_of(target, logits)].sum()
            (grads,) = torch.autograd.grad(score, stored[0])
    finally:
        handle.remove()
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * stored[0].detach()).sum(1, keepdim=True))

    def norm(c):
        c = c - c.amin((2, 3), keepdim=True)
        return c / (c.amax((2, 3), keepdim=True) + 1e-7)

    cam = F.interpolate(norm(cam), size=x.shape[-2:], mode=upsample,
                        align_corners=False if upsample == "bilinear" else None)
    return norm(cam)[:, 0]


def test_grad_cam_check(capsys):
    assert_passes(check.grad_cam, grad_cam, capsys)
    assert_passes(check.grad_cam, interpret.grad_cam, capsys)
    assert_fails(check.grad_cam, lambda *a: grad_cam(*a, upsample="nearest"), capsys, "bilinear")
    assert_fails(check.grad_cam, lambda *a: grad_cam(*a, eval_mode=False), capsys, "train mode")
    assert_fails(check.grad_cam, lambda *a: grad_cam(*a, copy=False), capsys, "in-place relu")
    assert_fails(check.grad_cam, lambda *a: grad_cam(*a)[:, None], capsys, "(N, H, W)")
    assert_fails(check.grad_cam, lambda *a: grad_cam(*a).numpy(), capsys, "torch.Tensor")


def test_plain_grad_cam_equals_interpret_grad_cam():
    """check.py's own recipe is independent of interpret.grad_cam, and agrees with it to 1e-6."""
    from helpers import models

    x, y = check._images(3)
    wide, _ = check._images(2, seed=2, size=(16, 12))
    for model in (check._conv_net(inplace=True), check._conv_net(seed=3)):
        for images, layer, target in [(x, "conv2", y), (x, "pool", None), (wide, "conv2", 3), (x, "conv1", y)]:
            ours = check._plain_grad_cam(model, images, layer, target)
            assert ours.shape == (len(images), *images.shape[-2:])
            assert (ours.amax((1, 2)) > 0.99).all()  # a real map, not an all-zero one
            assert torch.allclose(ours, interpret.grad_cam(model, images, layer, target), atol=1e-6)
    torch.manual_seed(0)
    resnet = models.ResNet18(width=0.125).double().eval()
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    for layer in ("layer2", "layer3.0.conv1"):
        assert torch.allclose(check._plain_grad_cam(resnet, images, layer, [1, 4]),
                              interpret.grad_cam(resnet, images, layer, [1, 4]), atol=1e-6)


def test_grad_cam_layers_are_upsampled():
    model = check._conv_net(inplace=True)
    x, _ = check._images(1)
    shapes = {name: out.shape[-2:] for name, out in interpret.activations(model, x, ["conv2", "pool"]).items()}
    assert shapes == {"conv2": (8, 8), "pool": (4, 4)}


# ---------------------------------------------------------------- ablation (ch. 8)

def test_block_drops_check_gives_advice_for_wrong_types(capsys):
    from helpers import ablation, evaluate

    def right(model, loader, blocks):
        clean = evaluate(model, loader)["acc"]
        drops = {}
        for block in blocks:
            with ablation.ablate(model, f"{block}.bn2"):
                drops[block] = clean - evaluate(model, loader)["acc"]
        return drops

    assert_passes(check.block_drops, right, capsys)
    assert_fails(check.block_drops, lambda m, l, blocks: {b: None for b in blocks}, capsys, "expected a number")
    assert_fails(check.block_drops, lambda m, l, blocks: {b: [0.1] for b in blocks}, capsys, "expected a number")
    assert_fails(check.block_drops, lambda m, l, blocks: {b: -v for b, v in right(m, l, blocks).items()}, capsys,
                 "sign")
    assert_fails(check.block_drops, lambda m, l, blocks: list(right(m, l, blocks).values()), capsys, "dict")


def test_run_ablation_check(capsys):
    from helpers.ablation import run_ablation

    assert_passes(check.run_ablation, run_ablation, capsys)

    calls = iter(range(100))

    def no_cache(variants, run, seeds, *, study, cache_dir, fixed):  # a new cache directory on every call
        return run_ablation(variants, run, seeds, study=study, cache_dir=f"{cache_dir}/{next(calls)}", fixed=fixed)

    assert_fails(check.run_ablation, no_cache, capsys, "cache")

    def unseeded(variants, run, seeds, **kwargs):
        for seed in seeds:
            for config in variants.values():
                run(dict(config), seed)

    assert_fails(check.run_ablation, unseeded, capsys, "random states")


# ---------------------------------------------------------------- typical mistakes per check, for tests/test_student.py

def _train_mode_fgsm(m, x, y, eps):
    return fgsm(m, x, y, eps, train=True)


MISTAKES: dict[str, list[tuple[Callable, str]]] = {
    "backprop": [(lambda *a, **k: backprop_by_hand(*a, **k, mistake="sign"), "sign"),
                 (lambda *a, **k: backprop_by_hand(*a, **k, mistake="no-hidden-slope"), "slope"),
                 (lambda *a, **k: backprop_by_hand(*a, **k, mistake="list"), "two dicts")],
    "inverted_dropout": [(lambda h, keep, p, training=True: h * keep / p if training else h, "dropping"),
                         (lambda h, keep, p, training=True: h * keep / (1 - p), "evaluation mode"),
                         (lambda h, keep, p, training=True: None, "None")],
    "label_smoothing": [(lambda l, t, epsilon: smoothed_ce(l, t, epsilon, spread="K-1"), "all K"),
                        (lambda l, t, epsilon: smoothed_ce(l, t, epsilon, reduce="sum"), "average"),
                        (lambda l, t, epsilon: F.cross_entropy(l, t, reduction="none"), "single number")],
    "fgsm": [(_train_mode_fgsm, "train mode"),
             (lambda m, x, y, eps: fgsm(m, x, y, eps, backward=True), ".grad"),
             (lambda m, x, y, eps: (x - eps * gradient(m, x, y).sign()).clamp(0, 1), "uphill")],
    "pgd": [(lambda *a: pgd(*a, project=False), "eps-ball"),
            (lambda *a: pgd(*a, train=True), "train mode"),
            (lambda m, x, y, eps, alpha, steps: pgd(m, x, y, eps, alpha, steps)[0], "shape")],
    "circle_loss": [(lambda *a, **k: circle(*a, **k, detach=False), "constants for the gradient"),
                    (lambda *a, **k: circle(*a, **k, average="all"), "non-zero"),
                    (lambda *a, **k: circle(*a, **k).item(), "tensor")],
    "separation_index": [(lambda x, y: si(x, y, ties="highest"), "lowest index"),
                         (lambda x, y: si(x, y, zscore=False), "z-score"),
                         (lambda x, y: [si(x, y)], "single number")],
    "center_separation_index": [(lambda x, y: csi(x, y, ties="highest"), "lowest label"),
                                (lambda x, y: csi(x, y, zscore=False), "z-score"),
                                (lambda x, y: None, "single number")],
    "grad_cam": [(lambda *a: grad_cam(*a, upsample="nearest"), "bilinear"),
                 (lambda *a: grad_cam(*a, eval_mode=False), "train mode"),
                 (lambda *a: grad_cam(*a)[:, None], "(N, H, W)")],
    "occlusion": [(lambda *a, **k: occlusion(*a, **k, quantity="probability"), "drop"),
                  (lambda *a, **k: occlusion(*a, **k, border=False), "border"),
                  (lambda *a, **k: occlusion(*a, **k).tolist(), "torch.Tensor")],
    "guided_backprop": [(plain_gradient, "ordinary gradient"), (backward_hook_guided, "inplace"),
                        (hooks_left_behind, "hook")],
    "run_ablation": [(lambda variants, run, seeds, **k: [run(dict(c), s) for s in seeds for c in variants.values()],
                      "random states"),
                     (lambda *a, **k: None, "runs")],
    "block_drops": [(lambda m, l, blocks: {b: None for b in blocks}, "expected a number"),
                    (lambda m, l, blocks: {b: 0.0 for b in blocks}, "off")],
}


def test_every_check_has_typical_mistakes_registered():
    checks = {name for name in dir(check) if callable(getattr(check, name)) and not name.startswith("_")
              and getattr(getattr(check, name), "__module__", "") == check.__name__
              and name not in ("verdict", "attempt", "compare", "Case", "ModelCase")}
    assert checks == set(MISTAKES)


def test_a_model_left_broken_gets_advice(capsys):
    def breaks_the_model(model, x, target):
        grad = guided_backprop(model, x, target)
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                m.register_forward_pre_hook(lambda mod, inputs: 1 / 0)
        return grad

    assert_fails(check.guided_backprop, breaks_the_model, capsys, "the model itself fails")
