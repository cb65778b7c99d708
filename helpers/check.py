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


# ---------------------------------------------------------------- chapters 3-8: compare with a reference

def _as_float64(value: Any) -> torch.Tensor | None:
    try:
        return torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None


def compare(fn: Callable, reference: Callable, cases: list[tuple[tuple, dict]], name: str, hint: str,
            atol: float = 1e-6) -> bool:
    """Run fn and reference on the same cases; a verdict on shape and values (never the expected values)."""
    for number, (args, kwargs) in enumerate(cases, 1):
        ran, out = attempt(fn, name, *args, **kwargs)
        if not ran:
            return False
        expected = _as_float64(reference(*args, **kwargs))
        got = _as_float64(out)
        if got is None:
            return verdict(False, name, f"returned {type(out).__name__}; expected a tensor or number", hint)
        if got.shape != expected.shape:
            return verdict(False, name, f"test case {number}: shape {tuple(got.shape)}, expected "
                                        f"{tuple(expected.shape)}", hint)
        if not torch.isfinite(got).all():
            return verdict(False, name, f"test case {number}: the result holds NaN or inf", hint)
        error = (got - expected).abs().max().item() if got.numel() else 0.0
        if error > atol:
            return verdict(False, name, f"test case {number}: differs from the reference by up to {error:.3g}", hint)
    return verdict(True, name, f"matches the reference on {len(cases)} test cases (tolerance {atol:g})")


def _tiny_classifier(seed: int = 0, channels: int = 3) -> torch.nn.Module:
    from .models import Normalize

    torch.manual_seed(seed)
    return torch.nn.Sequential(Normalize([0.5] * channels, [0.5] * channels),
                               torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(128, 10))


def _images(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def label_smoothing(fn: Callable) -> bool:
    """Check label_smoothing_cross_entropy(logits, target, epsilon) against PyTorch's built-in."""
    g = torch.Generator().manual_seed(0)
    cases = [((torch.randn(8, 10, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)),
              {"epsilon": eps}) for eps in (0.0, 0.1, 0.25)]
    reference = lambda logits, target, epsilon: torch.nn.functional.cross_entropy(
        logits, target, label_smoothing=epsilon)
    return compare(fn, reference, cases, "label_smoothing_cross_entropy",
                   "the smoothed target puts 1 - eps + eps/K on the label and eps/K on every other class; "
                   "the loss is -sum(target * log_softmax(logits)), averaged over the batch")


def fgsm(fn: Callable) -> bool:
    """Check fgsm(model, x, y, eps) against the book's reference on a small model."""
    from . import attacks

    model = _tiny_classifier()
    x, y = _images()
    cases = [((model, x, y, eps), {}) for eps in (0.0, 0.03, 0.1)]
    return compare(fn, attacks.fgsm, cases, "fgsm",
                   "one step of eps * sign(gradient of the loss w.r.t. x), then clamp to [0, 1]; "
                   "take the gradient with the model in eval mode", atol=1e-6)


def pgd(fn: Callable) -> bool:
    """Check pgd(model, x, y, eps, alpha, steps) (no random start) against the book's reference."""
    from . import attacks

    model = _tiny_classifier()
    x, y = _images()
    cases = [((model, x, y, 0.03, 0.01, steps), {}) for steps in (1, 5)]
    return compare(fn, attacks.pgd, cases, "pgd",
                   "repeat: x += alpha * sign(grad); delta = clamp(x - x0, -eps, eps); x = clamp(x0 + delta, 0, 1)",
                   atol=1e-6)


def circle_loss(fn: Callable) -> bool:
    """Check circle_loss(embeddings, labels, m, gamma) - the batch-pooled form - against the reference."""
    from . import losses

    g = torch.Generator().manual_seed(0)
    cases = [((torch.randn(12, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,), generator=g)),
              {"m": m, "gamma": gamma}) for m, gamma in ((0.25, 80.0), (0.4, 80.0), (0.25, 256.0))]
    reference = lambda e, labels, m, gamma: losses.circle_loss(e, labels, m=m, gamma=gamma, reduction="batch")
    return compare(fn, reference, cases, "circle_loss",
                   "L2-normalise, take cosine similarities of pairs i < j, alpha_p = relu(1 + m - s_p), "
                   "alpha_n = relu(s_n + m), then softplus(logsumexp(logit_n) + logsumexp(logit_p))", atol=1e-5)


def separation_index(fn: Callable) -> bool:
    """Check separation_index(x, y) against the brute-force definition."""
    from . import separation

    g = torch.Generator().manual_seed(0)
    cases = []
    for n, d in ((30, 4), (50, 7)):
        y = torch.randint(0, 3, (n,), generator=g)
        cases.append(((torch.randn(n, d, generator=g, dtype=torch.float64) + y[:, None], y), {}))
    return compare(fn, lambda x, y: separation.naive_separation_index(x, y), cases, "separation_index",
                   "z-score each feature (unbiased std + 1e-10), find each sample's nearest *other* sample, "
                   "count how often its label is the same", atol=1e-12)


def grad_cam(fn: Callable) -> bool:
    """Check grad_cam(model, x, layer, target) against the book's reference."""
    from . import interpret

    model = _tiny_classifier()
    x, y = _images(3)
    cases = [((model, x, "1", None), {}), ((model, x, "1", y), {})]
    return compare(fn, interpret.grad_cam, cases, "grad_cam",
                   "weights = spatial mean of d(logit)/d(activation); map = ReLU(sum of weights * activations); "
                   "min-max normalise, upsample bilinearly to the input size, min-max again", atol=1e-5)


def run_ablation(fn: Callable) -> bool:
    """Check run_ablation(variants, run, seeds, *, study, cache_dir, fixed): fresh seeded runs, a resumable cache."""
    import tempfile

    name = "run_ablation"
    calls: list[tuple[str, int, float]] = []

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
                           "loop over every seed and every variant")
        by_seed = {}
        for size, seed, draw in calls:
            by_seed.setdefault(seed, set()).add(round(draw, 12))
        if any(len(draws) != 1 for draws in by_seed.values()):
            return verdict(False, name, "runs with the same seed started from different random states",
                           "call seed_everything(seed) right before each run(config, seed)")
        runs = getattr(first, "runs", None)
        if runs is None or len(runs) != 4 or "acc" not in getattr(runs, "columns", []):
            return verdict(False, name, "the result's `runs` table should have one row per (variant, seed) "
                                        "with the metrics as columns", "build rows {'variant', 'seed', **metrics}")
        calls.clear()
        ran, second = attempt(fn, name, variants, fake_run, [0, 1], study="check", cache_dir=cache, fixed={"n": 1})
        if not ran:
            return False
        if calls or getattr(second, "skipped", None) != 4:
            return verdict(False, name, f"a re-run trained {len(calls)} runs again; all 4 are in the cache",
                           "look for the JSON file of (study, config, seed, fixed) first and reuse it")
    return verdict(True, name, "every (variant, seed) ran once from its seed, and a re-run used the cache")


def block_drops(fn: Callable) -> bool:
    """Check block_drops(model, loader, blocks): the accuracy lost per ablated block, model restored afterwards."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from . import ablation, models
    from .training import evaluate

    name = "block_drops"
    with torch.random.fork_rng():
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
    if not isinstance(drops, dict) or sorted(drops) != sorted(blocks):
        return verdict(False, name, f"should return a dict block -> accuracy drop for {blocks}",
                       "drops[block] = clean accuracy - accuracy with the block ablated")
    if any(not torch.equal(before[k], v) for k, v in model.state_dict().items()):
        return verdict(False, name, "changed the model's weights", "ablate with a forward hook, never by editing weights")
    if any(m._forward_hooks for m in model.modules()) or evaluate(model, loader)["acc"] != 1.0:
        return verdict(False, name, "the model stays ablated afterwards", "use `with ablate(...)`: it undoes itself")
    for block in blocks:
        with ablation.ablate(model, f"{block}.bn2"):
            expected = 1.0 - evaluate(model, loader)["acc"]
        if abs(float(drops[block]) - expected) > 1e-9:
            return verdict(False, name, f"the drop for {block} is off",
                           "the drop is clean minus ablated accuracy; zero the block's residual branch "
                           "(its `bn2` output) and keep the shortcut")
    return verdict(True, name, "drops match, weights untouched, model restored")
