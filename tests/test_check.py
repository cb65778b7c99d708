"""helpers.check: every check passes a correct solution and fails typical wrong ones with a hint, never a traceback.

The reference solutions here are written independently of helpers (the way a student would); each
wrong one is a typical mistake. A failing verdict must print a hint; no exception may escape a check.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import attacks, check, interpret, losses, separation


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
                    heat[:, top:top + patch, left:left + patch] += (base - p if quantity == "drop" else p)[:, None, None]
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
        return GuidedFn.apply(x)


class GuidedFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0)


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
