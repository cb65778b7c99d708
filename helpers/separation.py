"""Separation index (SI), centre SI (CSI), greedy forward feature ranking by SI, and SI/CSI per layer.

Definitions (the chapter derives them; everything here matches them exactly):

* Features are z-scored over the samples: ``(x - mean) / (std + 1e-10)`` with the unbiased std,
  in float64 (values below 1e-100 in magnitude are flushed to 0, so that two different values
  never have a squared difference that underflows to 0).
* The squared distance of two samples over a list of features is the float64 sum of the
  per-feature terms ``(a - b) * (a - b)``, added one feature at a time in the list's order
  (column order for a matrix; selection order during a ranking). Every function here, fast or
  naive, compares exactly these numbers, so their results are identical bit for bit.
* SI: the fraction of samples whose nearest *other* sample has the same label; a distance tie
  goes to the lowest sample index.
* CSI: the fraction of samples whose nearest class centroid (the class mean of the z-scored
  features) is their own class; a distance tie goes to the lowest class label.
* Forward ranking: start from no feature; at each step add the candidate that maximises the SI
  of the selected features; a candidate replaces the best so far only if its SI is strictly
  higher, so ties go to the lowest feature index.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ._ranking import _ForwardRanker
from .models import eval_mode, forward_to
from .profile import progress_enabled

EPS = 1e-10
FLUSH = 1e-100
UNIT_ROUNDOFF = 2.0 ** -53
INF = float("inf")
# Where `forward_ranking` runs when it is handed a CUDA device: its branch and bound is a long chain of
# small dependent steps (each a kernel launch, many a device-to-host sync, data-dependent Python control
# flow) and its k-d trees are CPU-only, so a GPU does not run it faster. None: on the device given.
# benchmarks/gpu_check.sh times both paths on a GPU.
RANKING_DEVICE: str | None = "cpu"


# ---------------------------------------------------------------- input checks and normalisation

def _as_tensor(x) -> torch.Tensor:
    return x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def prepare(x, y, normalize: bool = True, device: torch.device | str | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Check (x, y), flatten x to (n, features), z-score it in float64 and map labels to 0..K-1."""
    x, y = _as_tensor(x), _as_tensor(y)
    if x.ndim < 2:
        raise ValueError(f"x must hold one row of features per sample, shape (n, features) or "
                         f"(n, C, H, W); got shape {tuple(x.shape)}")
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D tensor of labels, got shape {tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)} labels: pass one label per sample")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        if y.dtype == torch.bool or not torch.equal(y, y.round()):
            raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if len(x) < 2:
        raise ValueError(f"need at least 2 samples, got {len(x)}")
    x = x.reshape(len(x), -1)
    if x.shape[1] == 0:
        raise ValueError("x has no features (0 columns)")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).any(0).nonzero().flatten()[:5].tolist()
        raise ValueError(f"x contains NaN or inf (e.g. in feature columns {bad}); "
                         f"drop or impute those values before computing the separation index")
    classes, labels = torch.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"the separation index needs at least two classes; all labels are "
                         f"{classes.tolist()}")
    device = torch.device(device) if device is not None else x.device
    z = x.to(device=device, dtype=torch.float64, copy=True)
    if normalize:
        z = _zscore_(z)
    else:
        z.add_(0.0)  # turns -0.0 into 0.0, so equal values have equal bits
        z.masked_fill_(z.abs() < FLUSH, 0.0)
    return z, labels.to(device)


def zscore(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / (std + 1e-10) per feature over the samples, unbiased std, in float64."""
    return _zscore_(x.to(torch.float64, copy=True))


def _zscore_(z: torch.Tensor) -> torch.Tensor:
    mean, std = z.mean(0), z.std(0, correction=1)
    z.sub_(mean).div_(std + EPS)
    return z.masked_fill_(z.abs() < FLUSH, 0.0)


# ---------------------------------------------------------------- exact distances

def sequential_sqdist(q: torch.Tensor, r: torch.Tensor, qi: torch.Tensor, rj: torch.Tensor,
                      pair_chunk: int = 1 << 15, feature_chunk: int = 64) -> torch.Tensor:
    """Squared distances of the row pairs (q[qi], r[rj]), summed one feature at a time in column order."""
    out = torch.empty(len(qi), dtype=torch.float64, device=q.device)
    for start in range(0, len(qi), pair_chunk):
        a, b = qi[start:start + pair_chunk], rj[start:start + pair_chunk]
        acc = torch.zeros(len(a), dtype=torch.float64, device=q.device)
        for f in range(0, q.shape[1], feature_chunk):
            diff = q[a, f:f + feature_chunk] - r[b, f:f + feature_chunk]
            terms = (diff * diff).T.contiguous()
            for term in terms:  # one feature at a time: the order defines the rounding
                acc += term
        out[start:start + pair_chunk] = acc
    return out


def duplicate_groups(x: torch.Tensor) -> torch.Tensor:
    """For each row, the lowest index of an identical row (itself if it has no earlier twin)."""
    n = len(x)
    # Identical rows have identical (sum of squares, first, last value); candidates are then compared exactly.
    key = torch.stack([(x * x).sum(1), x[:, 0], x[:, -1]], 1)
    _, group, counts = torch.unique(key, dim=0, return_inverse=True, return_counts=True)
    first = torch.arange(n, device=x.device)
    for g in (counts >= 2).nonzero().flatten().tolist():
        members = (group == g).nonzero().flatten()
        _, exact = torch.unique(x[members], dim=0, return_inverse=True)
        for e in exact.unique().tolist():
            same = members[exact == e]
            first[same] = same.min()
    return first


def nearest(q: torch.Tensor, r: torch.Tensor, exclude_self: bool = False, chunk: int = 1024) -> torch.Tensor:
    """Index of the nearest row of r for every row of q (exact sequential distances; ties to the lowest index).

    Identical rows of r are searched once (through their lowest index); with `exclude_self` (q is
    r), a row with an identical twin has that twin (distance 0) as nearest. For the others a
    float64 Gram-matrix distance (fast matrix products) filters the candidates: its error against
    the sequential sum is below 8 (d + 4) u (|q|^2 + |r|^2) with u = 2^-53, so only rows within
    that band of the best are re-measured exactly. Peak memory: about 5 * 8 * chunk * len(r)
    bytes for one block of rows, plus the inputs.
    """
    first = duplicate_groups(r)
    representatives = (first == torch.arange(len(r), device=r.device)).nonzero().flatten()
    answer = torch.full((len(q),), -1, dtype=torch.long, device=q.device)
    todo = torch.arange(len(q), device=q.device)
    if exclude_self:
        is_first = first == torch.arange(len(r), device=r.device)
        copies = (~is_first).nonzero().flatten()
        # a group's first row has its second-lowest member as nearest, every other row the first
        second = torch.full_like(first, len(r)).scatter_reduce(0, first[copies], copies, "amin")
        duplicated = ~is_first | (second < len(r))
        answer[duplicated] = torch.where(is_first, second, first)[duplicated]
        todo = (~duplicated).nonzero().flatten()
    if len(todo):
        found = _nearest_exact(q[todo], r[representatives], todo if exclude_self else None,
                               representatives, chunk)
        answer[todo] = representatives[found]
    return answer


def _nearest_exact(q: torch.Tensor, r: torch.Tensor, q_index: torch.Tensor | None,
                   r_index: torch.Tensor, chunk: int) -> torch.Tensor:
    """Position in r of each q row's nearest row; q_index/r_index (original indices) exclude the row itself."""
    d = q.shape[1]
    qn, rn = (q * q).sum(1), (r * r).sum(1)
    coef = 8.0 * (d + 4) * UNIT_ROUNDOFF
    rows_all, cols_all = [], []
    for start in range(0, len(q), chunk):
        stop = min(start + chunk, len(q))
        norms = qn[start:stop, None] + rn[None, :]
        approx = norms - 2.0 * (q[start:stop] @ r.T)
        band = coef * norms
        if q_index is not None:
            approx.masked_fill_(q_index[start:stop, None] == r_index[None, :], INF)
        upper = (approx + band).min(1).values
        rows, cols = (approx - band <= upper[:, None]).nonzero(as_tuple=True)
        rows_all.append(rows + start)
        cols_all.append(cols)
    rows, cols = torch.cat(rows_all), torch.cat(cols_all)
    exact = sequential_sqdist(q, r, rows, cols)
    best = torch.full((len(q),), INF, dtype=torch.float64, device=q.device)
    best.scatter_reduce_(0, rows, exact, "amin")
    hit = exact == best[rows]
    index = torch.full((len(q),), len(r), dtype=torch.long, device=q.device)
    index.scatter_reduce_(0, rows[hit], cols[hit], "amin")
    return index


# ---------------------------------------------------------------- SI and CSI

def separation_index(x, y, *, normalize: bool = True, device: torch.device | str | None = None,
                     chunk: int = 1024) -> float:
    """SI: fraction of samples whose nearest other sample (z-scored features) has the same label.

    Exact (see the module docstring). Memory: the z-scored features (8 n d bytes) plus
    about 40 * chunk * n bytes; the n x n distance matrix is never held at once.
    """
    z, labels = prepare(x, y, normalize, device)
    neighbour = nearest(z, z, exclude_self=True, chunk=chunk)
    return (labels[neighbour] == labels).double().mean().item()


def class_centroids(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean feature vector of each class (labels 0..K-1), in float64."""
    return torch.stack([z[labels == k].mean(0) for k in range(int(labels.max()) + 1)])


def center_separation_index(x, y, *, normalize: bool = True, device: torch.device | str | None = None,
                            chunk: int = 1024) -> float:
    """CSI: fraction of samples whose nearest class centroid is their own class (ties: lowest label)."""
    z, labels = prepare(x, y, normalize, device)
    closest = nearest(z, class_centroids(z, labels), chunk=chunk)
    return (closest == labels).double().mean().item()


# ---------------------------------------------------------------- fast exact forward ranking

@dataclass
class Ranking:
    """Features in the order greedy forward selection picked them, and the SI after each pick."""

    order: list[int]
    si: list[float]
    stats: dict = field(default_factory=dict, repr=False)

    @property
    def best_k(self) -> int:
        """The shortest prefix reaching the highest SI of the curve."""
        return int(np.argmax(self.si)) + 1

    def __len__(self) -> int:
        return len(self.order)


def _check_k(k: int | None, d: int) -> int:
    if k is None:
        return d
    if not 1 <= int(k) <= d:
        raise ValueError(f"k must lie between 1 and the number of features ({d}), got {k}")
    return int(k)


def forward_ranking(x, y, k: int | None = None, *, normalize: bool = True,
                    device: torch.device | str | None = None, tile: int = 64, list_size: int = 24,
                    block: int = 8, window: int = 8, window_steps: int = 3, chunk: int = 1 << 14,
                    progress: bool | None = None) -> Ranking:
    """Greedy forward ranking of features by SI; exact (same order and curve as `reference.forward_ranking`).

    Each step must find the candidate whose addition gives the most samples a same-label
    nearest neighbour. Instead of measuring every candidate on all n^2 pairs, it proves most
    answers and measures only the rest, always with the definition's arithmetic (float64,
    features added in selection order), so every comparison is the naive one, bit for bit.

    The key fact: adding a feature can only grow a distance. Each sample keeps its nearest
    same-label and other-label samples so far (`list_size` of each, sorted) and a radius below
    which no unlisted sample lies; those stay valid as the distances grow.

    1. Level 1, every sample and candidate, in tiles of `tile` candidates: "the nearest listed
       same-label sample, plus the candidate's term, stays nearer than any other-label sample
       can be" (or the reverse) settles most answers from two listed neighbours.
    2. Branch and bound over candidates, on proven lower and upper bounds of their counts: the
       most promising candidate is settled first, which sets the bar; the others are refined
       while they can still beat it (or tie it with a lower index): first the answers level 1
       suggests are wrong (proving a few wrong is often enough to drop a candidate), then a scan
       of the sorted lists in growing blocks that stops once the next listed distance exceeds
       what was found, then the same scan on long lists built for the rows concerned (when
       enough candidates share them), and finally full rows (while at most TREE_DIMS features
       are in play, a k-d tree per candidate proposes the nearest neighbours instead, re-measured
       exactly and accepted only when provably nearest).
    3. The first `window_steps` steps are low-dimensional: a window of `window` nearest values
       along the candidate (each feature's order is sorted once) bounds every other sample.
       Samples equal on all selected features (common with ReLU zeros) are searched exactly by
       sorting along the candidate.
    4. Distance rows are updated lazily, several features at a time, when a step needs them.

    Memory: the n x n float64 distance matrix (8 n^2 bytes: 200 MB for n = 5,000), the z-scored
    features twice and two int64 sort orders (32 n d bytes), long lists (about 4 KB per sample),
    plus per step about 60 n * tile + 500 * chunk bytes of temporaries and 1 byte per sample and
    candidate. Runs on the CPU, also when `device` is CUDA (see RANKING_DEVICE): about 8 minutes for
    5,000 x 2,048 on 2 threads. `stats` records counts and seconds per level.
    The machinery (`_ForwardRanker`, its lists, bounds and levels) lives in helpers/_ranking.py.
    """
    on_cpu = device is not None and torch.device(device).type == "cuda" and RANKING_DEVICE is not None
    z, labels = prepare(x, y, normalize, RANKING_DEVICE if on_cpu else device)
    n, d = z.shape
    if on_cpu:
        print(f"Forward ranking of {n:,} samples x {d:,} features: on the CPU ({torch.get_num_threads()} "
              f"threads), not the GPU - its thousands of small dependent steps run no faster there. The "
              f"original 5,000 x 2,048 takes about 8 minutes on 2 threads.")
    k = _check_k(k, d)
    ranker = _ForwardRanker(z, labels, tile=tile, list_size=list_size, block=block,
                            window=window, window_steps=window_steps, chunk=chunk)
    remaining = torch.ones(d, dtype=torch.bool, device=z.device)
    order, curve, seconds = [], [], []
    show = progress_enabled() if progress is None else progress
    for _ in tqdm(range(k), desc="forward ranking", disable=not show, leave=False):
        started = time.perf_counter()
        feature, count = ranker.step(remaining.nonzero().flatten())
        order.append(feature)
        curve.append(count / n)
        remaining[feature] = False
        if len(order) < k:
            with ranker.timed("add"):
                ranker.add(feature)
        seconds.append(time.perf_counter() - started)
    return Ranking(order, curve, stats=dict(ranker.stats, seconds=seconds))


# ---------------------------------------------------------------- SI and CSI of every layer

def module_name(module: nn.Module) -> str:
    """A module's class name; a Sequential shows its children's, e.g. 'Conv2d+BatchNorm2d'."""
    if isinstance(module, nn.Sequential):
        return "+".join(type(child).__name__ for child in module)
    return type(module).__name__


@torch.no_grad()
def layer_output(model: nn.Module, module: nn.Module, images: torch.Tensor, batch_size: int = 256,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Flattened outputs of `module` inside `model` for all `images` (float32, on the CPU), in eval mode.

    `models.forward_to` collects them with a forward hook that stops the forward pass once the
    module has run (later layers are not computed); the hook is always removed, even if the model raises.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    outputs = []
    with eval_mode(model):
        for batch in torch.as_tensor(images).split(batch_size):
            output = forward_to(model, module, batch.to(device))
            outputs.append(output.detach().flatten(1).to("cpu", torch.float32, copy=True))
    return torch.cat(outputs)


def layerwise_separation(model: nn.Module, images: torch.Tensor, labels, *,
                         modules: Sequence[nn.Module] | None = None, include_input: bool = True,
                         batch_size: int = 256, device: torch.device | str | None = None,
                         progress: bool | None = None) -> dict[str, list]:
    """SI and CSI of the input and of every module's output (default: every module of `model.features`).

    One module at a time (its output only is held: 4 n d bytes, plus the float64 copy the SI
    takes), collected through a forward hook that is always removed. Returns plain lists:
    {"layer": names, "si": [...], "csi": [...]}.
    """
    if modules is None:
        if not isinstance(getattr(model, "features", None), nn.Sequential):
            raise ValueError("model has no `features` nn.Sequential: pass the modules to measure "
                             "with modules=[...]")
        modules = list(model.features)
    images = torch.as_tensor(images)
    labels = _as_tensor(labels)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels: pass one label per image")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    names, si, csi = [], [], []
    show = progress_enabled() if progress is None else progress
    targets = ([("input", None)] if include_input else []) + [
        (f"{i} {module_name(m)}", m) for i, m in enumerate(modules)]
    for name, module in tqdm(targets, desc="SI per layer", disable=not show, leave=False):
        features = images.flatten(1).float() if module is None else layer_output(
            model, module, images, batch_size, device)
        names.append(name)
        si.append(separation_index(features, labels, device=device))
        csi.append(center_separation_index(features, labels, device=device))
    return {"layer": names, "si": si, "csi": csi}
