"""Self-checks for the exercises: a friendly verdict on a student's function, never the answer itself.

Each check runs the student's function on small cases, compares it with a reference and prints one line
per finding: what is right, what is off and by how much, and a hint about the concept (not the code).
A crash, a wrong type or a wrong shape becomes advice, not a stack trace. Every check returns True or
False. Checks that take a model hand the student's function a fresh small model in *train* mode, with
BatchNorm, Dropout and gradients already in its parameters' `.grad`, and verify that the function left
all of that as it found it.
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

PASS, FAIL = "\u2705", "\u274c"
EVAL_HINT = ("compute in eval mode (Dropout off, BatchNorm with its stored statistics), then give every "
             "module back the mode it had")


def verdict(ok: bool, name: str, message: str, hint: str | None = None) -> bool:
    """Print one verdict line (and a hint when it failed); return ok."""
    print(f"{PASS if ok else FAIL} {name}: {message}")
    if hint and not ok:
        print(f"   Hint: {hint}")
    return ok


def _short(error: BaseException, limit: int = 300) -> str:
    text = str(error).strip().splitlines()
    text = text[0] if text else ""
    return text if len(text) <= limit else text[:limit] + "..."


def attempt(fn: Callable, name: str, *args: Any, hint: str | Callable[[Exception], str] | None = None,
            **kwargs: Any) -> tuple[bool, Any]:
    """Call the student's function; a crash becomes advice, not a stack trace."""
    if not callable(fn):
        verdict(False, name, f"expected a function, got {_describe(fn)}",
                "pass the function itself, without calling it")
        return False, None
    try:
        return True, fn(*args, **kwargs)
    except NotImplementedError:
        verdict(False, name, "not implemented yet", "replace the `raise NotImplementedError` by your code")
    except Exception as error:  # any bug in a half-finished function
        advice = hint(error) if callable(hint) else hint
        verdict(False, name, f"raised {type(error).__name__}: {_short(error)}",
                advice or "run the function on a small example by hand and print intermediate values")
    return False, None


def _describe(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _to_number(value: Any) -> float | None:
    """A single real number from a float, int, NumPy scalar or one-element tensor; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, torch.Tensor):
        return float(value.detach()) if value.numel() == 1 and not value.is_complex() else None
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "size", None) == 1 and hasattr(value, "item"):  # a 0-d NumPy array
        try:
            return _to_number(value.item())
        except (TypeError, ValueError):
            return None
    return None


def _relative_error(value: Any, expected: float) -> float:
    number = _to_number(value)
    if number is None:
        return math.inf
    return abs(number - expected) / max(abs(expected), 1e-300)


def _fresh(value: Any) -> Any:
    """A copy of a call's arguments (tensors cloned, modules deep-copied): in-place changes cannot leak."""
    if isinstance(value, torch.Tensor):
        copy_ = value.detach().clone()
        return copy_.requires_grad_(True) if value.requires_grad else copy_
    if isinstance(value, nn.Module):
        return copy.deepcopy(value)
    if isinstance(value, tuple):
        return tuple(_fresh(v) for v in value)
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
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


def _difference(out: Any, expected: Any, kind: str, atol: float, rtol: float, where: str,
                shape_hint: str | None = None, nan_hint: str | None = None) -> tuple[str, str | None] | None:
    """None if out matches expected; else (what is off, a hint or None)."""
    if kind == "number":
        got, want = _to_number(out), _to_number(expected)
        if got is None:
            return f"{where}: returned {_describe(out)}; expected a single number", \
                   "return one number (a Python float or a one-element tensor)"
        if not math.isfinite(got):
            return f"{where}: the result is {got}", nan_hint
        if abs(got - want) > atol + rtol * abs(want):
            return f"{where}: {got:.6g} is off by {got - want:+.3g}", None
        return None
    if not isinstance(out, torch.Tensor):
        return f"{where}: returned {_describe(out)}; expected a tensor of shape {tuple(expected.shape)}", \
               "return a torch.Tensor (not a list, a NumPy array or None)"
    if tuple(out.shape) != tuple(expected.shape):
        return f"{where}: shape {tuple(out.shape)}, expected {tuple(expected.shape)}", shape_hint
    if out.is_complex() or out.dtype == torch.bool:
        return f"{where}: returned a {out.dtype} tensor; expected real numbers", None
    got, want = out.detach().to(torch.float64).cpu(), expected.detach().to(torch.float64).cpu()
    if not torch.isfinite(got).all():
        bad = int((~torch.isfinite(got)).sum())
        return f"{where}: {bad} of {got.numel()} values are NaN or inf", nan_hint
    if not got.numel():
        return None
    diff = (got - want).abs()
    tolerance = atol + rtol * want.abs().max().item()
    if diff.max().item() > tolerance:
        wrong = int((diff > tolerance).sum())
        return (f"{where}: {wrong} of {got.numel()} values differ from the reference, by up to "
                f"{diff.max().item():.3g} (largest reference value {want.abs().max().item():.3g})"), None
    return None


def _diagnose(out: Any, variants: Sequence[Variant], args: tuple, kwargs: dict, kind: str, atol: float,
              rtol: float) -> str | None:
    """The hint of the first typical mistake whose result equals the student's."""
    for variant, hint in variants:
        try:
            value = variant(*_fresh(args), **_fresh(kwargs))
        except Exception:  # a variant that does not apply to this case
            continue
        if value is not None and _difference(out, value, kind, atol, rtol, "") is None:
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
        ran, out = attempt(fn, name, *_fresh(case.args), **_fresh(case.kwargs))
        if not ran:
            return False
        expected = reference(*_fresh(case.args), **_fresh(case.kwargs))
        problem = _difference(out, expected, kind, atol, rtol, where, shape_hint, nan_hint)
        if problem:
            message, advice = problem
            advice = advice or _diagnose(out, diagnose, case.args, case.kwargs, kind, atol, rtol)
            return verdict(False, name, message, advice or case.hint or hint)
    labels = [c.label for c in cases if c.label]
    covered = f": {', '.join(labels)}" if labels else ""
    return verdict(True, name, f"matches the reference on {len(cases)} test cases{covered}")


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


def _conv_net(seed: int = 0, inplace: bool = False) -> nn.Module:
    """A small CNN: conv-BN-ReLU, a stride-2 conv, ReLU, max-pool, Dropout, global pooling, linear."""
    from .models import Normalize

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
        from .models import Normalize

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


def _shared_relu_net(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _SharedReLUNet()
    return _prepared(model, seed)


def _images(n: int = 6, seed: int = 0, size: tuple[int, int] = (16, 16), classes: int = 10
            ) -> tuple[torch.Tensor, torch.Tensor]:
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


def _check_with_model(fn: Callable, name: str, cases: Sequence[ModelCase], reference: Callable, hint: str,
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
        args, originals = _fresh(case.args), _fresh(case.args)
        ran, out = attempt(fn, name, model, *args, hint=crash_hint, **_fresh(case.kwargs))
        if not ran:
            return False
        expected = reference(case.build(), *_fresh(case.args), **_fresh(case.kwargs))
        problems = _model_problems(model, before) + _input_problems(args, originals)
        if after:
            try:
                problems += after(model, probe)
            except Exception as error:  # the function left the model unusable
                problems.append((f"afterwards the model itself fails ({type(error).__name__}: {_short(error)})",
                                 "leave the model as you found it: undo every change, also when an error occurs"))
        mismatch = _difference(out, expected, "tensor", atol, rtol, where, shape_hint, nan_hint)
        for message, advice in problems:
            verdict(False, name, f"{where}: {message}", advice)
        if mismatch:
            message, advice = mismatch
            if advice is None and any(advice_ == EVAL_HINT for _, advice_ in problems):
                advice = ("the values differ because the computation ran in train mode: Dropout dropped "
                          "random units and BatchNorm used the batch's statistics")
            if advice is None:
                variants = [(lambda *a, _v=v, **k: _v(case.build(), *a, **k), h) for v, h in diagnose]
                advice = _diagnose(out, variants, case.args, case.kwargs, "tensor", atol, rtol)
            verdict(False, name, message, advice or hint)
        if problems or mismatch:
            return False
    return verdict(True, name, f"matches the reference on {len(cases)} test cases; {success}")


UNTOUCHED = "the model's modes, weights, BatchNorm statistics and .grad, and the input, are left as they were"


# ---------------------------------------------------------------- chapter 1

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
        return verdict(False, name, f"should return two dicts (forward, grads), got {_describe(result)}",
                       "return forward, grads: forward holds H3, H4, y3, y4, O5, y5; grads holds one entry per weight")
    forward, grads = result
    ref_forward, ref_grads = _autograd_backprop()
    missing = sorted(set(ref_forward) - set(forward)) + sorted(set(ref_grads) - set(grads))
    if missing:
        return verdict(False, name, f"missing entries: {', '.join(missing)}",
                       "forward needs H3, H4, y3, y4, O5, y5; grads needs w13, w23, w14, w24, w35, w45")
    not_numbers = [k for k in list(ref_forward) + list(ref_grads)
                   if _to_number((forward if k in ref_forward else grads)[k]) is None]
    if not_numbers:
        return verdict(False, name, f"these entries are not single numbers: {', '.join(not_numbers)}",
                       "store each value as a float")
    ok = True
    wrong_forward = [k for k in ref_forward if _relative_error(forward[k], ref_forward[k]) > 1e-9]
    if wrong_forward:
        ok = verdict(False, name, f"forward pass off at {', '.join(wrong_forward)}",
                     "each unit adds up its weighted inputs (H3, H4, O5), then applies the sigmoid (y3, y4, y5); "
                     "the output unit's inputs are the hidden activations")
    else:
        verdict(True, name, "forward pass matches (6 values)")
    for k, expected in ref_grads.items():
        error = _relative_error(grads[k], expected)
        if error <= 1e-9:
            continue
        ok = False
        ratio = _to_number(grads[k]) / expected
        verdict(False, f"{name} dE/d{k}", f"off by {error:.1%} of its size", _gradient_hint(k, ratio, ref_forward))
    if ok:
        verdict(True, name, "all six gradients match autograd (relative error < 1e-9)")
    return ok


# ---------------------------------------------------------------- chapter 2

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
        problem = _difference(out, h, "tensor", 0.0, math.inf, f"p = {p}", "work element-wise on h and keep")
        if problem:  # only the type and the shape are checked here (infinite tolerance)
            return verdict(False, name, *problem)
        out = out.detach().float()
        expected = h * keep / (1 - p)
        if torch.allclose(out, expected, atol=1e-6):
            continue
        ok = False
        if torch.allclose(out, h * keep, atol=1e-6):
            hint = "the kept units are not rescaled: their expected value must stay that of h"
        elif torch.allclose(out, h * keep * (1 - p), atol=1e-6):
            hint = ("you shrink the kept units; to keep the expected value they must grow by the inverse of the keep "
                    "probability")
        elif torch.allclose(out, h * keep / p, atol=1e-6):
            hint = "p is the probability of *dropping* a unit; the rescaling uses the probability of keeping it"
        elif torch.allclose(out, h * (1 - keep) / (1 - p), atol=1e-6):
            hint = "keep = 1 marks the units that survive; you kept the dropped ones"
        else:
            hint = ("zero the dropped units (keep = 0) and rescale the others so that each unit's expected value "
                    "stays the same")
        verdict(False, name, f"wrong output for p = {p}", hint)
    ran, out = attempt(fn, name, h.clone(), keep.clone(), 0.5, training=False)
    if not ran:
        return False
    problem = _difference(out, h, "tensor", 1e-6, 0.0, "evaluation mode (training=False)")
    if problem:
        message, hint = problem
        if isinstance(out, torch.Tensor) and out.shape == h.shape and torch.allclose(out.float(), h * 0.5):
            hint = ("this is the old (non-inverted) dropout's test-time scaling; inverted dropout does all its "
                    "scaling in training")
        ok = verdict(False, name, message, hint or "with training=False inverted dropout changes nothing: every "
                                                   "unit is used as it is")
    if ok:
        verdict(True, name, "training mode (p = 0.5, 0.4, 0.2) and evaluation mode are right")
    return ok


# ---------------------------------------------------------------- chapter 3

def _smoothing_variant(logits: torch.Tensor, target: torch.Tensor, epsilon: float, *, off_label: str = "K",
                       batch: str = "mean") -> torch.Tensor:
    k = logits.shape[1]
    spread = epsilon / (k - 1) if off_label == "K-1" else epsilon / k
    q = torch.full_like(logits, spread)
    q[torch.arange(len(target)), target] = 1 - epsilon + (0 if off_label == "K-1" else epsilon / k)
    per_sample = -(q * F.log_softmax(logits, dim=1)).sum(1)
    return per_sample.mean() if batch == "mean" else per_sample.sum()


def label_smoothing(fn: Callable) -> bool:
    """Check label_smoothing_cross_entropy(logits, target, epsilon) against PyTorch's built-in."""
    g = torch.Generator().manual_seed(0)
    cases = [Case((torch.randn(8, 10, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)),
                  {"epsilon": eps}, f"epsilon = {eps}") for eps in (0.0, 0.1, 0.25)]
    reference = lambda logits, target, epsilon: F.cross_entropy(logits, target, label_smoothing=epsilon)
    variants = [(lambda l, t, epsilon: _smoothing_variant(l, t, epsilon, off_label="K-1"),
                 "this book spreads eps over all K classes, the label included (each gets eps / K on top)"),
                (lambda l, t, epsilon: _smoothing_variant(l, t, epsilon, batch="sum"),
                 "average the per-sample losses over the batch instead of adding them up"),
                (lambda l, t, epsilon: F.cross_entropy(l, t),
                 "epsilon has no effect: the target must move eps of its mass away from the label")]
    return compare(fn, reference, cases, "label_smoothing_cross_entropy",
                   "the smoothed target gives every class a share of eps and the label the rest; the loss is "
                   "the cross-entropy between that target and the softmax of the logits, averaged over the batch",
                   atol=1e-9, kind="number", diagnose=variants)


# ---------------------------------------------------------------- chapter 4

def _fgsm_variant(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, sign: float = 1.0,
                  clip: bool = True, use_sign: bool = True) -> torch.Tensor:
    from . import attacks

    grad = attacks.loss_gradient(model, x, y)
    out = x + sign * eps * (grad.sign() if use_sign else grad)
    return out.clamp(0, 1) if clip else out


def _pgd_variant(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int, *,
                 sign: float = 1.0, project: bool = True, clip: bool = True) -> torch.Tensor:
    from . import attacks

    x_adv = x.clone()
    for _ in range(steps):
        x_adv = x_adv + sign * alpha * attacks.loss_gradient(model, x_adv, y).sign()
        if project:
            x_adv = x + torch.clamp(x_adv - x, -eps, eps)
        if clip:
            x_adv = x_adv.clamp(0, 1)
    return x_adv


ATTACK_SHAPE = "return the perturbed images, shaped like x"


def fgsm(fn: Callable) -> bool:
    """Check fgsm(model, x, y, eps) against the book's reference, on a train-mode model with BatchNorm and Dropout.

    The result must equal the attack computed in eval mode, and the function must leave the model's
    modes (every submodule's), weights, BatchNorm statistics and parameters' .grad as they were.
    """
    from . import attacks

    x, y = _images()
    cases = [ModelCase(_conv_net, (x, y, eps), label=f"eps = {eps}") for eps in (0.03, 0.1)]
    cases.append(ModelCase(lambda: _conv_net(seed=1), _images(4, seed=1) + (0.05,), label="another model"))
    variants = [(lambda m, x, y, eps: _fgsm_variant(m, x, y, eps, sign=-1.0),
                 "the step goes against the gradient, which lowers the loss: the attack moves uphill, to increase it"),
                (lambda m, x, y, eps: _fgsm_variant(m, x, y, eps, clip=False),
                 "some pixels leave [0, 1]: the adversarial image must stay a valid image"),
                (lambda m, x, y, eps: _fgsm_variant(m, x, y, eps, use_sign=False),
                 "FGSM moves every pixel by exactly eps, in the direction of its gradient's sign, not by the "
                 "gradient itself")]
    return _check_with_model(fn, "fgsm", cases, attacks.fgsm,
                             "one step of size eps per pixel along the sign of the loss gradient with respect to "
                             "the input, then keep the pixels valid; the gradient is taken in eval mode",
                             UNTOUCHED, diagnose=variants, shape_hint=ATTACK_SHAPE)


def pgd(fn: Callable) -> bool:
    """Check pgd(model, x, y, eps, alpha, steps) (no random start) like fgsm: eval-mode result, model untouched."""
    from . import attacks

    x, y = _images()
    cases = [ModelCase(_conv_net, (x, y, 0.03, 0.01, 1), label="1 step"),
             ModelCase(_conv_net, (x, y, 0.03, 0.01, 5), label="5 steps"),
             ModelCase(lambda: _conv_net(seed=1), _images(4, seed=1) + (0.05, 0.03, 4), label="alpha close to eps")]
    variants = [(lambda m, *a: _pgd_variant(m, *a, project=False),
                 "the perturbation grows beyond eps: after every step, bring the image back into the eps-ball "
                 "around the *original* x"),
                (lambda m, *a: _pgd_variant(m, *a, clip=False),
                 "some pixels leave [0, 1]: after every step the image must also stay a valid image"),
                (lambda m, *a: _pgd_variant(m, *a, sign=-1.0),
                 "the steps go against the gradient, which lowers the loss: the attack moves uphill")]
    return _check_with_model(fn, "pgd", cases, attacks.pgd,
                             "repeat a small FGSM-like step of size alpha, each time measuring the gradient at the "
                             "current adversarial image, then project back onto the eps-ball around x and onto "
                             "valid pixels; gradients in eval mode", UNTOUCHED, diagnose=variants,
                             shape_hint=ATTACK_SHAPE)


# ---------------------------------------------------------------- chapter 5

def _cosines(e: torch.Tensor, normalise: bool) -> torch.Tensor:
    unit = F.normalize(e, dim=1) if normalise else e
    return unit @ unit.T


def _pooled(s_p: torch.Tensor, s_n: torch.Tensor, m: float, gamma: float, softplus: bool = True) -> torch.Tensor:
    from . import losses

    if not len(s_p) or not len(s_n):
        return torch.zeros((), dtype=s_p.dtype)
    logit_p, logit_n = losses.circle_logits(s_p, s_n, m, gamma)
    total = torch.logsumexp(logit_n, 0) + torch.logsumexp(logit_p, 0)
    return F.softplus(total) if softplus else total


def _circle_batch_variant(e: torch.Tensor, labels: torch.Tensor, m: float, gamma: float, *, pairs: str = "upper",
                          normalise: bool = True, softplus: bool = True) -> torch.Tensor:
    sim = _cosines(e, normalise)
    n = len(labels)
    ones = torch.ones(n, n, dtype=torch.bool)
    mask = {"upper": ones.triu(1), "ordered": ~torch.eye(n, dtype=torch.bool), "with-self": ones.triu(0)}[pairs]
    same = labels[:, None] == labels[None, :]
    return _pooled(sim[mask & same], sim[mask & ~same], m, gamma, softplus)


def _circle_anchor_variant(e: torch.Tensor, labels: torch.Tensor, m: float, gamma: float, *, normalise: bool = True,
                           self_positive: bool = False, average: str = "nonzero") -> torch.Tensor:
    sim = _cosines(e, normalise)
    terms = []
    for a in range(len(labels)):
        pos = labels == labels[a]
        if not self_positive:
            pos = pos & (torch.arange(len(labels)) != a)
        terms.append(_pooled(sim[a][pos], sim[a][labels != labels[a]], m, gamma))
    terms = torch.stack(terms)
    if average == "all":
        return terms.mean()
    return terms[terms > 0].mean() if (terms > 0).any() else torch.zeros((), dtype=e.dtype)


def circle_loss(fn: Callable) -> bool:
    """Check circle_loss(embeddings, labels, m, gamma, reduction) for both reductions: value and gradient.

    reduction='batch' pools every pair i < j of the batch into one term (helpers.losses.circle_loss_from_pairs);
    reduction='anchor' averages the non-zero per-anchor terms (helpers.losses.circle_loss_per_anchor).
    Edge cases: a batch with a single class (no negative pair) and one with distinct labels (no positive
    pair) give a zero loss that can still be backpropagated.
    """
    from . import losses

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
        "batch": [(lambda e, l, m, gamma: _circle_batch_variant(e, l, m, gamma, pairs="ordered"),
                   "each pair of samples counts once (i < j), not once in each order"),
                  (lambda e, l, m, gamma: _circle_batch_variant(e, l, m, gamma, pairs="with-self"),
                   "a sample does not form a pair with itself"),
                  (lambda e, l, m, gamma: _circle_batch_variant(e, l, m, gamma, normalise=False),
                   "similarities are cosines: put every embedding on the unit sphere first"),
                  (lambda e, l, m, gamma: _circle_batch_variant(e, l, m, gamma, softplus=False),
                   "the pooled term is log(1 + ...): the two log-sum-exps go through a softplus"),
                  (lambda e, l, m, gamma: _circle_anchor_variant(e, l, m, gamma),
                   "reduction='batch' pools all pairs of the batch into one term; this looks like the per-anchor "
                   "form")],
        "anchor": [(lambda e, l, m, gamma: _circle_anchor_variant(e, l, m, gamma, average="all"),
                    "average only the anchors whose term is non-zero (an anchor without a positive or a negative "
                    "contributes nothing and is left out of the mean)"),
                   (lambda e, l, m, gamma: _circle_anchor_variant(e, l, m, gamma, self_positive=True),
                    "an anchor is not its own positive: leave the self-pair out"),
                   (lambda e, l, m, gamma: _circle_anchor_variant(e, l, m, gamma, normalise=False),
                    "similarities are cosines: put every embedding on the unit sphere first"),
                   (lambda e, l, m, gamma: _circle_batch_variant(e, l, m, gamma),
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
                passed = verdict(False, label, f"{where}: returned {_describe(out)}; expected a single-number tensor",
                                 "return the loss as a 0-d tensor, computed from the embeddings so that it can "
                                 "be backpropagated")
                break
            problem = _difference(out, expected, "number", 1e-9, 1e-6, where)
            if problem:
                message, hint = problem
                hint = hint or _diagnose(out, variants[reduction], (e, labels, m, gamma), {}, "number", 1e-9, 1e-6)
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
                                               f"{_short(error)}",
                                 "build the loss from differentiable tensor operations")
                break
            grad = torch.zeros_like(leaf) if grad is None else grad
            problem = _difference(grad, expected_grad, "tensor", 1e-9, 1e-5, where)
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


# ---------------------------------------------------------------- chapter 6

def _zscored(x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    z = x.double()
    return (z - z.mean(0)) / (z.std(0) + 1e-10) if normalize else z


def _argmin(d: torch.Tensor, ties: str) -> torch.Tensor:
    return d.argmin(1) if ties == "lowest" else d.shape[1] - 1 - d.flip(1).argmin(1)


def _si_variant(x: torch.Tensor, y: torch.Tensor, *, normalize: bool = True, ties: str = "lowest",
                exclude: str = "self", count: bool = False) -> float:
    z = _zscored(x, normalize)
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    if exclude == "self":
        d.fill_diagonal_(math.inf)
    elif exclude == "zero":
        d[d == 0] = math.inf
    same = (y[_argmin(d, ties)] == y).double()
    return same.sum().item() if count else same.mean().item()


def _csi_variant(x: torch.Tensor, y: torch.Tensor, *, normalize: bool = True, ties: str = "lowest",
                 count: bool = False) -> float:
    z = _zscored(x, normalize)
    classes = torch.unique(y)
    centroids = torch.stack([z[y == c].mean(0) for c in classes])
    d = ((z[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    same = (classes[_argmin(d, ties)] == y).double()
    return same.sum().item() if count else same.mean().item()


def _blobs(n: int, d: int, k: int, seed: int, spread: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    y = y[torch.randperm(n, generator=g)]
    centres = torch.randn(k, d, generator=g, dtype=torch.float64) * 1.5
    return centres[y] + spread * torch.randn(n, d, generator=g, dtype=torch.float64), y


def _tie_grid() -> tuple[torch.Tensor, torch.Tensor]:
    """30 points of the grid {-2..2} x {-1, 0, 1} x {-1, 1}: exact distance ties between left and right neighbours.

    Each column's mean is exactly 0 and its values are 0, +-1, +-2, so after z-scoring they are 0, +-a, +-2a
    for some a per column, whatever rounding the std has: every step along the first column is the same
    float, ties are exact, and the columns' different spreads keep steps along other columns longer.
    """
    rows = [(i, j, k) for i in range(-2, 3) for j in (-1, 0, 1) for k in (-1, 1)]
    x = torch.tensor(rows, dtype=torch.float64)
    y = torch.tensor([[0, 0, 1, 1, 2][i + 2] for i, _, _ in rows])
    return x, y


def _duplicates(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Random samples with three groups of identical rows (labels differing inside the groups), interleaved."""
    x, y = _blobs(14, 3, 3, seed)
    groups = [(x[0], [0, 1, 1]), (x[1], [1, 0]), (x[2], [2, 2, 0])]
    rows, labels = list(x[3:]), list(y[3:].tolist())
    for offset, (row, group_labels) in enumerate(groups):
        for j, label in enumerate(group_labels):
            position = min(len(rows), 1 + offset + 4 * j)
            rows.insert(position, row.clone())
            labels.insert(position, label)
    return torch.stack(rows), torch.tensor(labels)


def _scaled_feature(seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Three informative features and one noise feature measured in units 1000 times larger."""
    x, y = _blobs(40, 3, 3, seed, spread=0.6)
    g = torch.Generator().manual_seed(seed)
    noise = 1000.0 * torch.randn(40, 1, generator=g, dtype=torch.float64)
    return torch.cat([x[:, :2], noise, x[:, 2:]], 1), y


def _constant_feature(seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _blobs(30, 3, 3, seed)
    return torch.cat([x[:, :1], torch.full((30, 1), 5.0, dtype=torch.float64), x[:, 1:]], 1), y


def _tied_centroids(seed: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 is one row r and class 2 two copies of r: their centroids are exactly equal, every distance tied."""
    x, _ = _blobs(8, 3, 1, seed)
    r = x[0] + 1.0
    return torch.cat([x, r[None], r[None], r[None]]), torch.tensor([0] * 8 + [2, 1, 2])


ZSCORE_HINT = ("a feature measured in large units dominates the Euclidean distance unless every feature is first "
               "put on the same scale: z-score each feature over the samples (centre it, divide by its standard "
               "deviation)")
CONSTANT_HINT = ("a constant feature has standard deviation 0: the definition divides by (std + 1e-10), so such a "
                 "feature becomes all zeros (it carries no information) instead of NaN")
TIE_HINT = ("when several samples are exactly equally close, the one with the lowest index is the nearest "
            "neighbour; ties only show if distances are exact: measure them from the differences of the features "
            "(the shortcut |a|^2 + |b|^2 - 2 a.b, used e.g. by torch.cdist on larger inputs, makes equal "
            "distances come out slightly different)")
FRACTION_HINT = "the index is a fraction: divide the count of agreeing samples by the number of samples"


def separation_index(fn: Callable) -> bool:
    """Check separation_index(x, y) -> float against the brute-force definition (naive_separation_index).

    Cases: random blobs, exact distance ties on an integer grid and between duplicated rows (the lowest
    index wins), one feature in units 1000 times larger (z-scoring), a constant feature (std + 1e-10).
    """
    from . import separation

    x1, y1 = _blobs(30, 4, 3, 1)
    x2, y2 = _blobs(45, 7, 3, 2)
    cases = [Case((x1, y1), label="random blobs", hint="z-score each feature, find each sample's nearest other "
                                                      "sample, count how often it has the same label"),
             Case((x2, torch.tensor([1, 4, 9])[y2]), label="labels 1, 4, 9"),
             Case(_tie_grid(), label="exact ties on an integer grid", hint=TIE_HINT),
             Case(_duplicates(), label="duplicated rows",
                  hint="an identical copy of a sample is another sample at distance 0: it is the nearest "
                       "neighbour (the copy with the lowest index); only the sample itself is left out"),
             Case(_scaled_feature(), label="one feature x1000", hint=ZSCORE_HINT),
             Case(_constant_feature(), label="a constant feature", hint=CONSTANT_HINT)]
    variants = [(lambda x, y: separation.naive_separation_index(x, y, normalize=False), ZSCORE_HINT),
                (lambda x, y: _si_variant(x, y, ties="highest"), TIE_HINT),
                (lambda x, y: _si_variant(x, y, exclude="none"),
                 "a sample is not its own nearest neighbour: leave the sample itself out"),
                (lambda x, y: _si_variant(x, y, exclude="zero"),
                 "only the sample itself is left out; an identical copy (distance 0) is a real neighbour"),
                (lambda x, y: _si_variant(x, y, count=True), FRACTION_HINT)]
    return compare(fn, lambda x, y: separation.naive_separation_index(x, y), cases, "separation_index",
                   "z-score each feature, find each sample's nearest other sample, count how often its label "
                   "is the same", atol=1e-9, kind="number", diagnose=variants, nan_hint=CONSTANT_HINT)


def center_separation_index(fn: Callable) -> bool:
    """Check center_separation_index(x, y) -> float (CSI) against naive_center_separation_index.

    CSI is the fraction of samples whose nearest class centroid is their own class. Features are
    z-scored first, (x - mean) / (std + 1e-10) with the unbiased std, in float64; a class's centroid is
    the mean of its z-scored samples; a distance tie between centroids goes to the lowest label. Labels
    may be any integers (e.g. 0, 2, 5): the classes are the labels that occur.
    Cases: random blobs, labels 0, 2, 5, two classes with exactly equal centroids (the tie rule), one
    feature in units 1000 times larger (z-scoring), a constant feature.
    """
    from . import separation

    x1, y1 = _blobs(36, 4, 3, 11)
    x2, y2 = _blobs(40, 5, 3, 12, spread=1.5)
    cases = [Case((x1, y1), label="random blobs", hint="z-score each feature, average each class's samples into "
                                                       "its centroid, count the samples whose nearest centroid is "
                                                       "their own class's"),
             Case((x2, torch.tensor([0, 2, 5])[y2]), label="labels 0, 2, 5",
                  hint="the labels need not be 0..K-1: the classes are the labels that occur, each with its centroid"),
             Case(_tied_centroids(), label="two classes with equal centroids",
                  hint="when several centroids are exactly equally close, the class with the lowest label wins"),
             Case(_scaled_feature(14), label="one feature x1000", hint=ZSCORE_HINT),
             Case(_constant_feature(15), label="a constant feature", hint=CONSTANT_HINT)]
    variants = [(lambda x, y: separation.naive_center_separation_index(x, y, normalize=False), ZSCORE_HINT),
                (lambda x, y: _csi_variant(x, y, ties="highest"),
                 "when several centroids are exactly equally close, the class with the lowest label wins "
                 "(yours takes the highest)"),
                (lambda x, y: _csi_variant(x, y, count=True), FRACTION_HINT)]
    return compare(fn, lambda x, y: separation.naive_center_separation_index(x, y), cases, "center_separation_index",
                   "z-score the features, compute each class's centroid, count the samples whose nearest "
                   "centroid is their own class", atol=1e-9, kind="number", diagnose=variants,
                   nan_hint=CONSTANT_HINT)


# ---------------------------------------------------------------- chapter 7

def _minmax(maps: torch.Tensor) -> torch.Tensor:
    maps = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + 1e-7)


def _targets(target: Any, logits: torch.Tensor) -> torch.Tensor:
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, dtype=torch.long).flatten()
    return t.expand(len(logits)) if t.numel() == 1 else t


def _restoring_eval(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    return modes


def _plain_grad_cam(model: nn.Module, x: torch.Tensor, layer: str, target: Any = None, *, score: str = "logit",
                    relu: bool = True, upsample: str = "bilinear", align_corners: bool = False,
                    renormalise: bool = True) -> torch.Tensor:
    """Grad-CAM written out from the recipe (an independent reference; the keyword arguments give typical mistakes).

    Raw-logit gradients at `layer`; channel weights = spatial mean of the gradients; weighted sum of the
    activations; ReLU; min-max normalise; bilinear upsample (align_corners=False) to the input size;
    min-max again.
    """
    module = dict(model.named_modules())[layer]
    stored = []

    def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        stored.append(output)
        return output.clone()  # a later in-place op (ReLU(inplace=True)) cannot overwrite the stored activations

    modes = _restoring_eval(model)
    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x.detach().clone().requires_grad_(True))
            scores = logits if score == "logit" else logits.softmax(1)
            class_score = scores[torch.arange(len(x)), _targets(target, logits)].sum()
            (grads,) = torch.autograd.grad(class_score, stored[0])
    finally:
        handle.remove()
        for m, mode in modes:
            m.training = mode
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = (weights * stored[0].detach()).sum(1, keepdim=True)
    cam = _minmax(cam.clamp(min=0) if relu else cam)
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode=upsample,
                        align_corners=align_corners if upsample == "bilinear" else None)
    return (_minmax(cam) if renormalise else cam)[:, 0]


def grad_cam(fn: Callable) -> bool:
    """Check grad_cam(model, x, layer, target=None) -> (N, H, W) against a plain re-implementation of the recipe.

    The layers sit after a stride-2 convolution (followed by an in-place ReLU) and after a max-pool, so
    the maps are upsampled from 8x8 / 4x4 (and 8x6 / 4x3 for non-square images); the model is in train
    mode with BatchNorm and Dropout, and must be left as it was.
    """
    x, y = _images(3)
    wide, _ = _images(2, seed=2, size=(16, 12))
    build = lambda: _conv_net(inplace=True)
    cases = [ModelCase(build, (x, "conv2", y), label="after a stride-2 conv, given targets"),
             ModelCase(build, (x, "pool", None), label="after max-pooling, predicted class"),
             ModelCase(build, (wide, "conv2", 3), label="16x12 images, target 3")]
    variants = [(lambda m, *a: _plain_grad_cam(m, *a, upsample="nearest"),
                 "the map looks blocky: upsample it with bilinear interpolation, not by repeating pixels"),
                (lambda m, *a: _plain_grad_cam(m, *a, align_corners=True),
                 "bilinear upsampling here aligns pixel centres, not corners (align_corners=False)"),
                (lambda m, *a: _plain_grad_cam(m, *a, relu=False),
                 "keep only the evidence *for* the class: the weighted sum goes through a ReLU before normalising"),
                (lambda m, *a: _plain_grad_cam(m, *a, renormalise=False),
                 "upsampling moves the extremes: normalise the map to [0, 1] again after upsampling"),
                (lambda m, *a: _plain_grad_cam(m, *a, score="probability"),
                 "differentiate the raw class score (the logit), not the softmax probability"),
                (lambda m, x, layer, t: _plain_grad_cam(m, x, "relu2" if layer == "conv2" else layer, t),
                 "the layer's output is overwritten by the in-place ReLU that follows it: keep the activations "
                 "in a copy the rest of the network cannot change")]
    return _check_with_model(fn, "grad_cam", cases, _plain_grad_cam,
                             "channel weights = spatial mean of the gradients of the raw class logit; ReLU of the "
                             "weighted sum of the activation maps; min-max normalise, upsample bilinearly to the "
                             "input size, min-max again", UNTOUCHED, atol=1e-5, diagnose=variants,
                             shape_hint="one map per image, at the input's height and width: (N, H, W)",
                             nan_hint="a map with no positive evidence is all zeros: guard the division when "
                                      "normalising a constant map")


def _plain_occlusion(model: nn.Module, x: torch.Tensor, target: Any, patch: int, stride: int, fill: float = 0.0, *,
                     quantity: str = "drop", score: str = "probability", border: bool = True,
                     average: bool = True) -> torch.Tensor:
    """Occlusion written out plainly (the keyword arguments give typical mistakes)."""
    def starts(length: int) -> list[int]:
        s = list(range(0, length - patch + 1, stride))
        return s + [length - patch] if border and s[-1] != length - patch else s

    n, _, height, width = x.shape
    modes = _restoring_eval(model)
    try:
        with torch.no_grad():
            f = (lambda logits: logits.softmax(1)) if score == "probability" else (lambda logits: logits)
            logits = model(x)
            t = _targets(target, logits)
            base = f(logits)[torch.arange(n), t]
            heat = torch.zeros(n, height, width, dtype=torch.float64)
            count = torch.zeros(height, width, dtype=torch.float64)
            for top in starts(height):
                for left in starts(width):
                    hidden = x.clone()
                    hidden[..., top:top + patch, left:left + patch] = fill
                    p = f(model(hidden))[torch.arange(n), t]
                    value = {"drop": base - p, "rise": p - base, "probability": p}[quantity]
                    heat[:, top:top + patch, left:left + patch] += value[:, None, None]
                    count[top:top + patch, left:left + patch] += 1
    finally:
        for m, mode in modes:
            m.training = mode
    return heat / count.clamp(min=1) if average else heat


def occlusion(fn: Callable) -> bool:
    """Check occlusion(model, x, target, patch, stride, fill=0.0) -> (N, H, W) against helpers.interpret.occlusion.

    The semantics to implement (exactly those of helpers.interpret.occlusion):
    - The model runs in eval mode (its modes restored afterwards), without gradients.
    - target: an int (the same class for every image), one class per image (a list or tensor), or None
      (the class the model predicts on the clean image).
    - A patch x patch square of value `fill` covers the image at top-left corners (top, left), with
      top in 0, stride, 2*stride, ... <= H - patch, plus a last top = H - patch when the stride does
      not land on it, so that the bottom border is covered too; the same for left and W.
    - For each position: drop = (softmax probability of the target class on the clean image) minus
      (that probability on the occluded image); positive where hiding the patch hurt the class.
    - Each pixel's value is the mean of the drops of all the patches that covered it.
    """
    from . import interpret

    x, y = _images(2, seed=3, size=(12, 12))
    odd, _ = _images(2, seed=4, size=(13, 11))
    one, _ = _images(1, seed=5, size=(10, 10))
    cases = [ModelCase(_conv_net, (x, y, 4, 4), {"fill": 0.0}, "patch 4 = stride 4 on 12x12, given targets"),
             ModelCase(_conv_net, (odd, None, 5, 3), {"fill": 0.5}, "overlapping patches on 13x11, predicted class"),
             ModelCase(_conv_net, (one, 3, 3, 2), {"fill": 0.0}, "one image, target 3")]
    variants = [(lambda m, *a, **k: _plain_occlusion(m, *a, **k, quantity="probability"),
                 "record the *drop* of the target's probability (clean minus occluded), not the occluded "
                 "probability itself"),
                (lambda m, *a, **k: _plain_occlusion(m, *a, **k, quantity="rise"),
                 "the sign is flipped: the drop is the clean probability minus the occluded one, so that "
                 "important regions are positive"),
                (lambda m, *a, **k: _plain_occlusion(m, *a, **k, score="logit"),
                 "measure the class's softmax probability, not its raw logit"),
                (lambda m, *a, **k: _plain_occlusion(m, *a, **k, average=False),
                 "where patches overlap, a pixel gets the *mean* of the drops of the patches covering it"),
                (lambda m, *a, **k: _plain_occlusion(m, *a, **k, border=False),
                 "the last rows or columns are never covered: when the stride does not land on H - patch "
                 "(or W - patch), add a last patch touching the border")]
    return _check_with_model(fn, "occlusion", cases, interpret.occlusion,
                             "slide the patch; at each position record how much the target class's probability "
                             "drops; each pixel gets the mean drop of the patches covering it (see the docstring "
                             "of helpers.check.occlusion)", UNTOUCHED, atol=1e-5, diagnose=variants,
                             shape_hint="one heatmap per image, at the input's height and width: (N, H, W)",
                             nan_hint="some pixels got no value: every pixel must be covered by at least one patch "
                                      "(a last patch touching the bottom and right borders)")


def _plain_input_gradient(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d(sum of the logits)/dx in eval mode, through the model's ReLUs as they behave now."""
    modes = _restoring_eval(model)
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(x).sum(), x)
    finally:
        for m, mode in modes:
            m.training = mode
    return grad


def _guided_variant(model: nn.Module, x: torch.Tensor, target: Any = None, *, rule: str = "plain",
                    score: str = "logit") -> torch.Tensor:
    from . import interpret

    modes = _restoring_eval(model)
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            if rule == "guided":
                with interpret.guided_relus(model):
                    logits = model(x)
            else:
                logits = model(x)
            scores = logits if score == "logit" else logits.softmax(1)
            (grad,) = torch.autograd.grad(scores[torch.arange(len(x)), _targets(target, logits)].sum(), x)
    finally:
        for m, mode in modes:
            m.training = mode
    return grad.clamp(min=0) if rule == "clamp-input" else grad


def _guided_crash_hint(error: Exception) -> str:
    text = str(error).lower()
    if "inplace" in text or "in-place" in text or "view" in text:
        return ("this check's models use ReLU(inplace=True), and one model calls a single ReLU module twice; a "
                "module backward hook fails on an in-place ReLU - guide the gradient of each ReLU call's output "
                "tensor instead")
    return "run the function on a small example by hand and print intermediate values"


def guided_backprop(fn: Callable) -> bool:
    """Check guided_backprop(model, x, target) -> (N, C, H, W) against helpers.interpret.guided_backprop.

    The result is the gradient of the target's raw logit (target: an int, one class per image, or None
    for the predicted class) with respect to x, with every ReLU guided on the way back: gradient passes
    only where the ReLU's input and the incoming gradient are both positive. The models use in-place
    ReLUs, one calls a single ReLU instance twice; afterwards the model's ReLUs must behave normally
    again (an ordinary backward after the call equals one before), no hook may be left behind.
    """
    from . import interpret

    x, y = _images(3, seed=6)

    def unchanged_relus(model: nn.Module, before: torch.Tensor | None) -> Any:
        now = _plain_input_gradient(model, x)
        if before is None:
            return now
        if not torch.allclose(now, before, rtol=1e-9, atol=1e-12):
            return [("after the call an ordinary gradient through the model differs from the one before: the "
                     "ReLUs still behave as guided ones", "undo every change once the gradient is computed (remove "
                                                           "the hooks, also when an error occurs)")]
        return []

    cases = [ModelCase(lambda: _conv_net(inplace=True), (x, y), label="in-place ReLUs, given targets"),
             ModelCase(_shared_relu_net, (x, None), label="one ReLU instance used twice, predicted class"),
             ModelCase(_conv_net, (x, 7), label="plain ReLUs, target 7")]
    variants = [(lambda m, *a: _guided_variant(m, *a, rule="plain"),
                 "this is the ordinary gradient: in the backward pass, every ReLU must let gradient through only "
                 "where its input was positive *and* the gradient arriving from above is positive"),
                (lambda m, *a: _guided_variant(m, *a, rule="clamp-input"),
                 "the guiding happens at every ReLU on the way back, not once on the final gradient"),
                (lambda m, *a: _guided_variant(m, *a, rule="guided", score="probability"),
                 "differentiate the raw class score (the logit), not the softmax probability")]
    return _check_with_model(fn, "guided_backprop", cases, interpret.guided_backprop,
                             "the gradient of the target's logit with respect to the input, where each ReLU passes "
                             "gradient back only where its input and the incoming gradient are both positive",
                             UNTOUCHED + "; the ReLUs behave normally afterwards", atol=1e-9, rtol=1e-6,
                             diagnose=variants, shape_hint="the gradient has the input's shape (N, C, H, W)",
                             crash_hint=_guided_crash_hint, after=unchanged_relus)


# ---------------------------------------------------------------- chapter 8

def run_ablation(fn: Callable) -> bool:
    """Check run_ablation(variants, run, seeds, *, study, cache_dir, fixed): fresh seeded runs, a resumable cache."""
    import tempfile

    name = "run_ablation"
    calls: list[tuple[Any, Any, float]] = []

    def fake_run(config: dict, seed: int) -> dict:
        calls.append((config["size"], seed, torch.rand(1).item()))  # the draw shows whether the run was seeded
        return {"acc": 0.5 + 0.1 * config["size"] + 0.01 * seed}

    variants = {"small": {"size": 1}, "large": {"size": 2}}
    with tempfile.TemporaryDirectory() as cache:
        ran, first = attempt(fn, name, variants, fake_run, [0, 1], study="check", cache_dir=cache, fixed={"n": 1})
        if not ran:
            return False
        if len(calls) != 4:
            return verdict(False, name, f"ran {len(calls)} trainings for 2 variants x 2 seeds; expected 4",
                           "every variant runs once for every seed")
        by_seed: dict[Any, set] = {}
        for size, seed, draw in calls:
            by_seed.setdefault(seed, set()).add(round(draw, 12))
        if any(len(draws) != 1 for draws in by_seed.values()):
            return verdict(False, name, "runs with the same seed started from different random states",
                           "seed every random number generator right before each run, with that run's seed")
        runs = getattr(first, "runs", None)
        try:
            table_ok = runs is not None and len(runs) == 4 and "acc" in list(getattr(runs, "columns", []))
        except TypeError:
            table_ok = False
        if not table_ok:
            return verdict(False, name, "the result's `runs` table should have one row per (variant, seed) "
                                        "with the metrics as columns", "one row per run: variant, seed and its metrics")
        calls.clear()
        ran, second = attempt(fn, name, variants, fake_run, [0, 1], study="check", cache_dir=cache, fixed={"n": 1})
        if not ran:
            return False
        if calls or getattr(second, "skipped", None) != 4:
            return verdict(False, name, f"a re-run trained {len(calls)} runs again; all 4 are in the cache",
                           "before training, look for the saved record of this (study, config, seed, fixed) and "
                           "reuse it")
    return verdict(True, name, "every (variant, seed) ran once from its seed, and a re-run used the cache")


def block_drops(fn: Callable) -> bool:
    """Check block_drops(model, loader, blocks): the accuracy lost per ablated block, model restored afterwards."""
    from torch.utils.data import DataLoader, TensorDataset

    from . import ablation, models
    from .training import evaluate

    name = "block_drops"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = models.ResNet18(width=0.0625)
        x = torch.rand(64, 3, 8, 8)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(20):  # an untrained ResNet predicts one class for every image: then no ablation shows
            loss = F.cross_entropy(model(x), torch.arange(64) % 10)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)  # the model is right on every image: any ablation can only lower accuracy
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    blocks = ["layer1.1", "layer3.0", "layer4.1"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ran, drops = attempt(fn, name, model, loader, blocks)
    if not ran:
        return False
    if not isinstance(drops, dict) or set(drops) != set(blocks):
        keys = f" with keys {list(drops)}" if isinstance(drops, dict) else ""
        return verdict(False, name, f"returned {_describe(drops)}{keys}"
                       + f"; expected a dict block -> accuracy drop for {blocks}",
                       "one entry per block name: its clean accuracy minus its accuracy with the block ablated")
    not_numbers = [b for b in blocks if _to_number(drops[b]) is None]
    if not_numbers:
        return verdict(False, name, f"the drop for {not_numbers[0]} is {_describe(drops[not_numbers[0]])}; expected "
                                    f"a number", "each drop is one number: an accuracy difference")
    if any(not torch.equal(before[k], v) for k, v in model.state_dict().items()):
        return verdict(False, name, "changed the model's weights",
                       "ablate with a forward hook, never by editing weights")
    try:
        restored = not any(m._forward_hooks for m in model.modules()) and evaluate(model, loader)["acc"] == 1.0
    except Exception:
        restored = False
    if not restored:
        return verdict(False, name, "the model stays ablated afterwards",
                       "the ablation must undo itself when the block has been measured (a context manager does)")
    for block in blocks:
        with ablation.ablate(model, f"{block}.bn2"):
            expected = 1.0 - evaluate(model, loader)["acc"]
        got = _to_number(drops[block])
        if abs(got - expected) > 1e-9:
            if abs(got + expected) <= 1e-9 and expected:
                hint = "the sign is flipped: the drop is the clean accuracy minus the ablated one"
            elif abs(got - 100 * expected) <= 1e-6 and expected:
                hint = "accuracies here are fractions in [0, 1], not percentages"
            else:
                hint = ("the drop is clean minus ablated accuracy; ablate the block's residual branch (zero the "
                        "output of its last module, `bn2`) and keep the shortcut")
            return verdict(False, name, f"the drop for {block} is off by {got - expected:+.3g}", hint)
    return verdict(True, name, "drops match, weights untouched, model restored")
