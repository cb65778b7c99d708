"""The grading framework of the self-checks: verdicts, safe calls, comparison with a reference, models to hand over.

A check runs the student's function on small cases, compares it with a reference and prints one line
per finding: what is right, what is off and by how much, and a hint about the concept (not the code).
A crash, a wrong type or a wrong shape becomes advice, not a stack trace. Functions that take a model
get a fresh small model in *train* mode, with BatchNorm, Dropout and gradients already in its
parameters' `.grad`, and must leave all of that as they found it.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Normalize
from .language import FAIL, PASS, translate

EVAL_HINT = ("compute in eval mode (Dropout off, BatchNorm with its stored statistics), then give every "
             "module back the mode it had")


def verdict(ok: bool, name: str, message: str, hint: str | None = None) -> bool:
    """Print one verdict line (and a hint when it failed) in the checks' language (English unless set); return ok."""
    print(f"{PASS if ok else FAIL} {name}: {translate(message)}")
    if hint and not ok:
        print(translate(f"   Hint: {hint}"))
    return ok


def short(error: BaseException, limit: int = 300) -> str:
    """The first line of an error message, cut to `limit` characters."""
    text = str(error).strip().splitlines()
    text = text[0] if text else ""
    return text if len(text) <= limit else text[:limit] + "..."


def attempt(fn: Callable, name: str, *args: Any, hint: str | Callable[[Exception], str] | None = None,
            **kwargs: Any) -> tuple[bool, Any]:
    """Call the student's function; a crash becomes advice, not a stack trace."""
    if not callable(fn):
        verdict(False, name, f"expected a function, got {describe(fn)}",
                "pass the function itself, without calling it")
        return False, None
    try:
        return True, fn(*args, **kwargs)
    except NotImplementedError:
        verdict(False, name, "not implemented yet", "replace the `raise NotImplementedError` by your code")
    except Exception as error:  # any bug in a half-finished function
        advice = hint(error) if callable(hint) else hint
        verdict(False, name, f"raised {type(error).__name__}: {short(error)}",
                advice or "run the function on a small example by hand and print intermediate values")
    return False, None


def describe(value: Any) -> str:
    """What a value is, in words: "None", "a tensor of shape (2, 3)", "a list"."""
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def to_number(value: Any) -> float | None:
    """A single real number from a float, int, NumPy scalar or one-element tensor; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, torch.Tensor):
        return float(value.detach()) if value.numel() == 1 and not value.is_complex() else None
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "size", None) == 1 and hasattr(value, "item"):  # a 0-d NumPy array
        try:
            return to_number(value.item())
        except (TypeError, ValueError):
            return None
    return None


def relative_error(value: Any, expected: float) -> float:
    """|value - expected| / |expected|; infinite when value is not a single number."""
    number = to_number(value)
    if number is None:
        return math.inf
    return abs(number - expected) / max(abs(expected), 1e-300)


def fresh(value: Any) -> Any:
    """A copy of a call's arguments (tensors cloned, modules deep-copied): in-place changes cannot leak."""
    if isinstance(value, torch.Tensor):
        copy_ = value.detach().clone()
        return copy_.requires_grad_(True) if value.requires_grad else copy_
    if isinstance(value, nn.Module):
        return copy.deepcopy(value)
    if isinstance(value, tuple):
        return tuple(fresh(v) for v in value)
    if isinstance(value, list):
        return [fresh(v) for v in value]
    if isinstance(value, dict):
        return {k: fresh(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- comparing with a reference

@dataclass
class Case:
    """One test case: the arguments, a short label shown in verdicts, and the concept it tests (its hint)."""
    args: tuple
    kwargs: dict = field(default_factory=dict)
    label: str = ""
    hint: str | None = None


Variant = tuple[Callable[..., Any], str]  # a typical mistake computed on the same arguments, and its hint


@dataclass(frozen=True)
class Mistake:
    """A typical wrong implementation of an exercise: its check must fail it with a hint that says these words."""
    check: str  # the check's name in helpers.check
    wrong: Callable
    says: str | tuple[str, ...] = ()  # words the verdict must contain (case-insensitive)
    never: tuple[str, ...] = ()  # words it must not contain (e.g. a formula a hint must not give away)

    @property
    def words(self) -> tuple[str, ...]:
        """The words the verdict must contain, as a tuple."""
        return (self.says,) if isinstance(self.says, str) else self.says


def difference(out: Any, expected: Any, kind: str, atol: float, rtol: float, where: str,
                shape_hint: str | None = None, nan_hint: str | None = None) -> tuple[str, str | None] | None:
    """None if out matches expected; else (what is off, a hint or None)."""
    if kind == "number":
        got, want = to_number(out), to_number(expected)
        if got is None:
            return f"{where}: returned {describe(out)}; expected a single number", \
                   "return one number (a Python float or a one-element tensor)"
        if not math.isfinite(got):
            return f"{where}: the result is {got}", nan_hint
        if abs(got - want) > atol + rtol * abs(want):
            return f"{where}: {got:.6g} is off by {got - want:+.3g}", None
        return None
    if not isinstance(out, torch.Tensor):
        return f"{where}: returned {describe(out)}; expected a tensor of shape {tuple(expected.shape)}", \
               "return a torch.Tensor (not a list, a NumPy array or None)"
    if tuple(out.shape) != tuple(expected.shape):
        return f"{where}: shape {tuple(out.shape)}, expected {tuple(expected.shape)}", shape_hint
    if out.is_complex() or out.dtype == torch.bool:
        return f"{where}: returned a {out.dtype} tensor; expected real numbers", None
    got, want = out.detach().to(torch.float64).cpu(), expected.detach().to(torch.float64).cpu()
    if not torch.isfinite(got).all():
        bad = int((~torch.isfinite(got)).sum())
        return f"{where}: " + f"{bad} of {got.numel()} values are NaN or inf", nan_hint  # the detail stands alone
    if not got.numel():
        return None
    diff = (got - want).abs()
    tolerance = atol + rtol * want.abs().max().item()
    if diff.max().item() > tolerance:
        wrong = int((diff > tolerance).sum())
        return (f"{where}: " + f"{wrong} of {got.numel()} values differ from the reference, by up to "
                f"{diff.max().item():.3g} (largest reference value {want.abs().max().item():.3g})"), None
    return None


def matching_hint(out: Any, variants: Sequence[Variant], args: tuple, kwargs: dict, kind: str, atol: float,
              rtol: float) -> str | None:
    """The hint of the first typical mistake whose result equals the student's."""
    for variant, hint in variants:
        try:
            value = variant(*fresh(args), **fresh(kwargs))
        except Exception:  # a variant that does not apply to this case
            continue
        if value is not None and difference(out, value, kind, atol, rtol, "") is None:
            return hint
    return None


def compare(fn: Callable, reference: Callable, cases: Sequence[Case | tuple], name: str, hint: str,
            atol: float = 1e-6, rtol: float = 0.0, kind: str = "tensor", diagnose: Sequence[Variant] = (),
            shape_hint: str | None = None, nan_hint: str | None = None) -> bool:
    """Run fn and reference on fresh copies of each case; a verdict on type, shape and values (never the values).

    kind: "tensor" (the result must be a tensor shaped like the reference's) or "number" (one real number).
    diagnose: typical mistakes as (function computing the mistaken result, hint); the first one matching
    the student's result gives the hint, otherwise the case's own hint or `hint`.
    """
    cases = [c if isinstance(c, Case) else Case(*c) for c in cases]
    for number, case in enumerate(cases, 1):
        where = f"test case {number}" + (f" ({case.label})" if case.label else "")
        ran, out = attempt(fn, name, *fresh(case.args), **fresh(case.kwargs))
        if not ran:
            return False
        expected = reference(*fresh(case.args), **fresh(case.kwargs))
        problem = difference(out, expected, kind, atol, rtol, where, shape_hint, nan_hint)
        if problem:
            message, advice = problem
            advice = advice or matching_hint(out, diagnose, case.args, case.kwargs, kind, atol, rtol)
            return verdict(False, name, message, advice or case.hint or hint)
    labels = [c.label for c in cases if c.label]
    if labels:
        return verdict(True, name, f"matches the reference on {len(cases)} test cases: {', '.join(labels)}")
    return verdict(True, name, f"matches the reference on {len(cases)} test cases")


# ---------------------------------------------------------------- models handed to the student's function

def _prepared(model: nn.Module, seed: int, size: tuple[int, int] = (16, 16)) -> nn.Module:
    """In float64, confident logits, non-trivial BatchNorm statistics, `.grad` filled, left in train mode."""
    model = model.double()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1000)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.Linear):
                    module.weight.mul_(4.0)  # a random model is unsure of everything; this one is not
            model.train()
            for _ in range(3):  # BatchNorm's running statistics move away from (0, 1)
                model(torch.rand(16, 3, *size, dtype=torch.float64))
    for p in model.parameters():  # as a caller in the middle of training would have them
        p.grad = torch.full_like(p, 0.125)
    return model.train()


def conv_net(seed: int = 0, inplace: bool = False) -> nn.Module:
    """A small CNN: conv-BN-ReLU, a stride-2 conv, ReLU, max-pool, Dropout, global pooling, linear."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(OrderedDict(
            norm=Normalize([0.5] * 3, [0.25] * 3),
            conv1=nn.Conv2d(3, 8, 3, padding=1), bn1=nn.BatchNorm2d(8), relu1=nn.ReLU(inplace=inplace),
            conv2=nn.Conv2d(8, 16, 3, stride=2, padding=1), relu2=nn.ReLU(inplace=inplace),
            pool=nn.MaxPool2d(2), drop=nn.Dropout(0.5),
            gap=nn.AdaptiveAvgPool2d(2), flat=nn.Flatten(), fc=nn.Linear(64, 10)))
    return _prepared(model, seed)


class _SharedReLUNet(nn.Module):
    """A small CNN that calls one ReLU(inplace=True) instance twice, as some real models do."""

    def __init__(self):
        super().__init__()
        self.norm = Normalize([0.5] * 3, [0.25] * 3)
        self.conv1, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv1(self.norm(x))))
        x = self.relu(self.conv2(x))
        return self.fc(F.adaptive_avg_pool2d(self.drop(x), 2).flatten(1))


def shared_relu_net(seed: int = 0) -> nn.Module:
    """_SharedReLUNet, seeded and prepared like conv_net."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _SharedReLUNet()
    return _prepared(model, seed)


def images(n: int = 6, seed: int = 0, size: tuple[int, int] = (16, 16), classes: int = 10
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """n random float64 images in [0, 1] and random labels, reproducible from the seed."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, *size, generator=g, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=g))


def _hook_count(model: nn.Module) -> int:
    return sum(len(getattr(m, attr, {})) for m in model.modules()
               for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def _snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a function that only *reads* the model must leave as it was."""
    return dict(modules={n: id(m) for n, m in model.named_modules()},
                modes={n: m.training for n, m in model.named_modules()},
                params={n: p.detach().clone() for n, p in model.named_parameters()},
                requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
                grads={n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()},
                buffers={n: b.detach().clone() for n, b in model.named_buffers()},
                hooks=_hook_count(model))


def _examples(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (", ..." if len(names) > limit else "")


def _model_problems(model: nn.Module, before: dict[str, Any]) -> list[tuple[str, str]]:
    """What the student's function changed in the model: (what, hint) pairs."""
    now = _snapshot(model)
    problems = []
    if now["modules"] != before["modules"]:
        changed = [n for n in set(before["modules"]) | set(now["modules"])
                   if before["modules"].get(n) != now["modules"].get(n)]
        problems.append((f"replaced or added modules of the model ({_examples(sorted(changed))})",
                         "leave the model's modules in place: hooks can change what a module does and "
                         "are removed afterwards"))
    flipped = [n or "the model" for n, mode in before["modes"].items() if now["modes"].get(n, mode) != mode]
    if flipped:
        problems.append((f"left {len(flipped)} module(s) in the wrong mode afterwards ({_examples(flipped)}: "
                         f"was train mode)", EVAL_HINT))
    if any(not torch.equal(p, now["params"][n]) for n, p in before["params"].items() if n in now["params"]):
        problems.append(("changed the model's weights", "the function only reads the model: no optimiser "
                                                        "step, no in-place change of a parameter"))
    if now["requires_grad"] != before["requires_grad"]:
        problems.append(("changed requires_grad of the model's parameters",
                         "gradients with respect to the input need no change to the parameters' flags"))
    cleared = [n for n, g in before["grads"].items() if g is not None and now["grads"].get(n) is None]
    changed = [n for n, g in before["grads"].items()
               if g is not None and now["grads"].get(n) is not None and not torch.equal(g, now["grads"][n])]
    if cleared:
        problems.append((f"cleared the gradients the caller had in the parameters' .grad ({_examples(cleared)})",
                         "leave the parameters' .grad alone: a caller in the middle of training would lose "
                         "its gradients"))
    elif changed:
        problems.append((f"changed the parameters' .grad ({_examples(changed)}): a backward() on the score "
                         f"or loss adds into every weight's gradient",
                         "ask autograd for the gradient with respect to the input only; the weights' .grad "
                         "belongs to the caller"))
    stats = [n for n, b in before["buffers"].items() if n in now["buffers"] and not torch.equal(b, now["buffers"][n])]
    if stats:
        problems.append((f"updated BatchNorm's running statistics ({_examples(stats)}): a forward pass ran "
                         f"in train mode", EVAL_HINT))
    if now["hooks"] > before["hooks"]:
        problems.append((f"left {now['hooks'] - before['hooks']} hook(s) registered on the model",
                         "remove every hook you register once you are done, also when an error occurs "
                         "(a try/finally or a context manager)"))
    return problems


def _input_problems(args: tuple, originals: tuple) -> list[tuple[str, str]]:
    problems = []
    for arg, original in zip(args, originals):
        if not isinstance(arg, torch.Tensor) or not isinstance(original, torch.Tensor):
            continue
        if arg.requires_grad and not original.requires_grad:
            problems.append(("switched on requires_grad of the caller's tensor x",
                             "work on a detached copy of x, so the caller's images stay plain data"))
        elif arg.shape != original.shape or not torch.equal(arg.detach(), original):
            problems.append(("changed the caller's input tensor in place", "work on a copy of the input"))
    return problems


@dataclass
class ModelCase:
    """A case for a function fn(model, *args, **kwargs): `build` gives a fresh model for every call."""
    build: Callable[[], nn.Module]
    args: tuple
    kwargs: dict = field(default_factory=dict)
    label: str = ""


def check_with_model(fn: Callable, name: str, cases: Sequence[ModelCase], reference: Callable, hint: str,
                      success: str, *, atol: float = 1e-6, rtol: float = 0.0, diagnose: Sequence[Variant] = (),
                      shape_hint: str | None = None, nan_hint: str | None = None,
                      crash_hint: str | Callable[[Exception], str] | None = None,
                      after: Callable[[nn.Module, Callable], list[tuple[str, str]]] | None = None) -> bool:
    """Run fn(model, *args) on a fresh train-mode model per case; check its result and every side effect."""
    for number, case in enumerate(cases, 1):
        where = f"test case {number}" + (f" ({case.label})" if case.label else "")
        model = case.build()
        probe = after(model, None) if after else None  # e.g. the model's plain gradient before the call
        before = _snapshot(model)
        args, originals = fresh(case.args), fresh(case.args)
        ran, out = attempt(fn, name, model, *args, hint=crash_hint, **fresh(case.kwargs))
        if not ran:
            return False
        expected = reference(case.build(), *fresh(case.args), **fresh(case.kwargs))
        problems = _model_problems(model, before) + _input_problems(args, originals)
        if after:
            try:
                problems += after(model, probe)
            except Exception as error:  # the function left the model unusable
                problems.append((f"afterwards the model itself fails ({type(error).__name__}: {short(error)})",
                                 "leave the model as you found it: undo every change, also when an error occurs"))
        mismatch = difference(out, expected, "tensor", atol, rtol, where, shape_hint, nan_hint)
        for message, advice in problems:
            verdict(False, name, f"{where}: {message}", advice)
        if mismatch:
            message, advice = mismatch
            if advice is None and any(advice_ == EVAL_HINT for _, advice_ in problems):
                advice = ("the values differ because the computation ran in train mode: Dropout dropped "
                          "random units and BatchNorm used the batch's statistics")
            if advice is None:
                variants = [(lambda *a, _v=v, **k: _v(case.build(), *a, **k), h) for v, h in diagnose]
                advice = matching_hint(out, variants, case.args, case.kwargs, "tensor", atol, rtol)
            verdict(False, name, message, advice or hint)
        if problems or mismatch:
            return False
    return verdict(True, name, f"matches the reference on {len(cases)} test cases; {success}")


UNTOUCHED = "the model's modes, weights, BatchNorm statistics and .grad, and the input, are left as they were"
