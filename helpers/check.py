"""Self-checks for the exercises: a friendly verdict on a student's function, never the answer itself."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

PASS, FAIL = "\u2705", "\u274c"


def verdict(ok: bool, name: str, message: str, hint: str | None = None) -> bool:
    """Print one verdict line (and a hint when it failed); return ok."""
    print(f"{PASS if ok else FAIL} {name}: {message}")
    if hint and not ok:
        print(f"   Hint: {hint}")
    return ok


def attempt(fn: Callable, name: str, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """Call the student's function; a crash becomes advice, not a stack trace."""
    if not callable(fn):
        verdict(False, name, f"expected a function, got {type(fn).__name__}",
                "pass the function itself, without calling it")
        return False, None
    try:
        return True, fn(*args, **kwargs)
    except NotImplementedError:
        verdict(False, name, "not implemented yet", "replace the `raise NotImplementedError` by your code")
    except Exception as error:  # any bug in a half-finished function
        verdict(False, name, f"raised {type(error).__name__}: {error}",
                "run the function on the example by hand and print intermediate values")
    return False, None


def _relative_error(value: Any, expected: float) -> float:
    try:
        return abs(float(value) - expected) / max(abs(expected), 1e-300)
    except (TypeError, ValueError):
        return math.inf


# ---------------------------------------------------------------- chapter 1

BACKPROP_INPUTS = dict(x1=0.35, x2=0.9, w13=0.1, w23=0.8, w14=0.4, w24=0.6, w35=0.3, w45=0.9, target=0.5)


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


def backprop(fn: Callable) -> bool:
    """Check backprop_by_hand(x1, x2, w13, w23, w14, w24, w35, w45, target) -> (forward, grads)."""
    name = "backprop_by_hand"
    ran, result = attempt(fn, name, **BACKPROP_INPUTS)
    if not ran:
        return False
    if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(r, dict) for r in result)):
        return verdict(False, name, f"should return two dicts (forward, grads), got {type(result).__name__}",
                       "return forward, grads - e.g. forward = dict(H3=..., y5=...), grads = dict(w35=..., ...)")
    forward, grads = result
    ref_forward, ref_grads = _autograd_backprop()
    ok = True
    missing = sorted(set(ref_forward) - set(forward)) + sorted(set(ref_grads) - set(grads))
    if missing:
        return verdict(False, name, f"missing entries: {', '.join(missing)}",
                       "forward needs H3, H4, y3, y4, O5, y5; grads needs w13, w23, w14, w24, w35, w45")
    wrong_forward = [k for k in ref_forward if _relative_error(forward[k], ref_forward[k]) > 1e-9]
    if wrong_forward:
        ok = verdict(False, name, f"forward pass off at {', '.join(wrong_forward)}",
                     "H3 = w13*x1 + w23*x2, y3 = sigmoid(H3); O5 = w35*y3 + w45*y4")
    else:
        verdict(True, name, "forward pass matches (6 values)")
    for k, expected in ref_grads.items():
        error = _relative_error(grads[k], expected)
        if error <= 1e-9:
            continue
        ok = False
        ratio = float(grads[k]) / expected if error < math.inf else math.nan
        if abs(ratio - 0.5) < 1e-6:
            hint = "exactly half: the loss here is E = (y5 - t)^2, without the 1/2"
        elif abs(ratio + 1) < 1e-6:
            hint = "the sign is flipped: dE/dy5 = 2 (y5 - t)"
        elif k in ("w13", "w23", "w14", "w24"):
            hint = "a hidden weight's gradient is delta5 * w(out) * y(1 - y) * x(in)"
        else:
            hint = "dE/dw35 = 2 (y5 - t) * y5 (1 - y5) * y3"
        verdict(False, f"{name} dE/d{k}", f"off by {error:.1%} of its size", hint)
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
        try:
            out = torch.as_tensor(out, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            return verdict(False, name, f"returned {type(out).__name__}, expected a tensor", "return h * ...")
        if out.shape != h.shape:
            return verdict(False, name, f"returned shape {tuple(out.shape)}, expected {tuple(h.shape)}",
                           "work element-wise on h and keep")
        expected = h * keep / (1 - p)
        if torch.allclose(out, expected, atol=1e-6):
            continue
        ok = False
        if torch.allclose(out, h * keep, atol=1e-6):
            hint = "the kept units are not rescaled: inverted dropout divides them by (1 - p)"
        elif torch.allclose(out, h * keep * (1 - p), atol=1e-6):
            hint = "you multiplied by (1 - p); training-time scaling divides by (1 - p)"
        elif torch.allclose(out, h * keep / p, atol=1e-6):
            hint = "p is the probability of *dropping*: divide by (1 - p), not by p"
        elif torch.allclose(out, h * (1 - keep) / (1 - p), atol=1e-6):
            hint = "keep = 1 marks the units that survive; you kept the dropped ones"
        else:
            hint = "zero the dropped units (keep = 0), scale the others by 1/(1 - p)"
        verdict(False, name, f"wrong output for p = {p}", hint)
    ran, out = attempt(fn, name, h.clone(), keep.clone(), 0.5, training=False)
    if not ran:
        return False
    if not torch.allclose(torch.as_tensor(out, dtype=torch.float32), h):
        ok = verdict(False, name, "evaluation mode changes h",
                     "with training=False inverted dropout is the identity: return h unchanged")
    if ok:
        verdict(True, name, "training mode (p = 0.5, 0.4, 0.2) and evaluation mode are right")
    return ok
