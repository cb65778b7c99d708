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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .profile import progress_enabled

EPS = 1e-10
FLUSH = 1e-100
UNIT_ROUNDOFF = 2.0 ** -53
INF = float("inf")


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


# ---------------------------------------------------------------- naive references (the definitions, slow)

def naive_separation_index(x, y, normalize: bool = True) -> float:
    """SI written plainly from the definition: the full distance matrix, one feature at a time."""
    z, labels = prepare(x, y, normalize, "cpu")
    n = len(z)
    dist = torch.zeros(n, n, dtype=torch.float64)
    for k in range(z.shape[1]):
        diff = z[:, k, None] - z[None, :, k]
        dist = dist + diff * diff
    dist.fill_diagonal_(INF)  # a sample is not its own neighbour
    neighbour = dist.argmin(1)  # argmin returns the first (lowest) index among ties
    return (labels[neighbour] == labels).double().mean().item()


def naive_center_separation_index(x, y, normalize: bool = True) -> float:
    """CSI written plainly from the definition."""
    z, labels = prepare(x, y, normalize, "cpu")
    centroids = torch.stack([z[labels == k].mean(0) for k in range(int(labels.max()) + 1)])
    dist = torch.zeros(len(z), len(centroids), dtype=torch.float64)
    for k in range(z.shape[1]):
        diff = z[:, k, None] - centroids[None, :, k]
        dist = dist + diff * diff
    return (dist.argmin(1) == labels).double().mean().item()


def _naive_count(z: torch.Tensor, labels: torch.Tensor, features: Sequence[int]) -> int:
    n = len(z)
    dist = torch.zeros(n, n, dtype=torch.float64)
    for k in features:
        diff = z[:, k, None] - z[None, :, k]
        dist = dist + diff * diff
    dist.fill_diagonal_(INF)
    return int((labels[dist.argmin(1)] == labels).sum())


def naive_forward_ranking(x, y, k: int | None = None, normalize: bool = True) -> "Ranking":
    """Greedy forward ranking, naive: every candidate's distance matrix recomputed from scratch."""
    z, labels = prepare(x, y, normalize, "cpu")
    n, d = z.shape
    k = _check_k(k, d)
    order: list[int] = []
    curve: list[float] = []
    for _ in range(k):
        best, best_count = -1, -1
        for c in range(d):
            if c in order:
                continue
            count = _naive_count(z, labels, order + [c])
            if count > best_count:  # strictly better: ties keep the lower feature index
                best, best_count = c, count
        order.append(best)
        curve.append(best_count / n)
    return Ranking(order, curve)


def incremental_forward_ranking(x, y, k: int | None = None, normalize: bool = True) -> "Ranking":
    """Greedy forward ranking, plain incremental: the selected set's distances kept, one candidate at a time."""
    z, labels = prepare(x, y, normalize, "cpu")
    n, d = z.shape
    k = _check_k(k, d)
    base = torch.zeros(n, n, dtype=torch.float64)
    base.fill_diagonal_(INF)
    order: list[int] = []
    curve: list[float] = []
    for _ in range(k):
        best, best_count, best_dist = -1, -1, None
        for c in range(d):
            if c in order:
                continue
            diff = z[:, c, None] - z[None, :, c]
            dist = base + diff * diff
            count = int((labels[dist.argmin(1)] == labels).sum())
            if count > best_count:
                best, best_count, best_dist = c, count, dist
        base = best_dist
        order.append(best)
        curve.append(best_count / n)
    return Ranking(order, curve)


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


BIG_INDEX = torch.iinfo(torch.long).max
TREE_DIMS = 12  # k-d trees find nearest neighbours fast in few dimensions only
TREE_MIN_ENTRIES = 64  # a tree per candidate pays off from this many entries
TREE_BAND = 1e-9  # relative bound on how far a k-d tree's squared distance may differ from ours


def _nearest_in_group_1d(v: torch.Tensor, group: torch.Tensor, orig: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per column b and row i: the nearest other row of i's group by (v_i - v_j)^2, exactly.

    Sorting each column by (group, value, original index) puts a row's nearest group members
    next to it: its own run of equal values (distance 0), else the closest lower or higher value.
    Returns the squared distance, the neighbour's original index (ties: lowest) and an `ok` flag,
    False where rounding makes a further value tie with the best (rare: then measure directly).
    """
    m, width = v.shape
    dev = v.device
    by_value = torch.sort(v, dim=0, stable=True).indices
    by_group = torch.sort(group[by_value], dim=0, stable=True).indices
    perm = by_value.gather(0, by_group)  # sorted position -> row; stable sorts keep the index order
    sv, sg, so = v.gather(0, perm), group[perm], orig[perm]
    new_run = torch.ones(m, width, dtype=torch.bool, device=dev)
    new_run[1:] = (sg[1:] != sg[:-1]) | (sv[1:] != sv[:-1])
    run = new_run.long().cumsum(0) - 1
    run_id = (run + torch.arange(width, device=dev) * m).flatten()
    runs = m * width
    pos = torch.arange(m, device=dev)[:, None].expand(m, width)
    first = torch.full((runs,), m, dtype=torch.long, device=dev).scatter_reduce(
        0, run_id, pos.flatten(), "amin")
    size = torch.zeros(runs, dtype=torch.long, device=dev).scatter_add(
        0, run_id, torch.ones_like(run_id))
    low1 = torch.full((runs,), BIG_INDEX, dtype=torch.long, device=dev).scatter_reduce(
        0, run_id, so.flatten(), "amin")
    others = torch.where(so.flatten() == low1[run_id], BIG_INDEX, so.flatten())
    low2 = torch.full((runs,), BIG_INDEX, dtype=torch.long, device=dev).scatter_reduce(
        0, run_id, others, "amin")
    run_id = run_id.view(m, width)
    own_size = size[run_id]
    own_low = torch.where(so == low1[run_id], low2[run_id], low1[run_id])

    def side(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Distance and index of the adjacent run on one side, and the distance of the run after it."""
        nb = pos + step
        inside = (nb >= 0) & (nb < m)
        nb = nb.clamp(0, m - 1)
        exists = inside & (sg.gather(0, nb) == sg)
        diff = sv - sv.gather(0, nb)
        dist = torch.where(exists, diff * diff, INF)
        nb_run = (run_id + step).clamp(0, runs - 1)
        index = low1[nb_run]
        beyond = first[nb_run] - 1 if step < 0 else first[nb_run] + size[nb_run]
        inside2 = exists & (beyond >= 0) & (beyond < m)
        beyond = beyond.clamp(0, m - 1)
        exists2 = inside2 & (sg.gather(0, beyond) == sg)
        diff2 = sv - sv.gather(0, beyond)
        dist2 = torch.where(exists2, diff2 * diff2, INF)
        return dist, index, dist2

    d_left, i_left, d_left2 = side(-1)
    d_right, i_right, d_right2 = side(+1)
    best = torch.minimum(d_left, d_right)
    index = torch.where(d_left < d_right, i_left,
                        torch.where(d_right < d_left, i_right, torch.minimum(i_left, i_right)))
    ok = (d_left2 > best) & (d_right2 > best)  # a rounding tie with a further run would be missed
    duplicate = own_size >= 2
    best = torch.where(duplicate, 0.0, best)
    index = torch.where(duplicate, own_low, index)
    ok = ok | duplicate
    out_d, out_i, out_ok = torch.empty_like(best), torch.empty_like(index), torch.empty_like(ok)
    out_d.scatter_(0, perm, best)
    out_i.scatter_(0, perm, index)
    out_ok.scatter_(0, perm, ok)
    return out_d, out_i, out_ok


class _ForwardRanker:
    """State of the fast exact forward ranking (see `forward_ranking`)."""

    def __init__(self, z: torch.Tensor, labels: torch.Tensor, tile: int, list_size: int, block: int,
                 window: int, window_steps: int, chunk: int):
        self.z, self.labels = z, labels
        self.trees = True  # False: never use k-d trees (the tests compare both paths)
        self.zt = z.T.contiguous()  # one row per feature: a candidate's values are read contiguously
        self.n, self.d = z.shape
        self.dev = z.device
        self.tile, self.window, self.window_steps, self.chunk = tile, window, window_steps, chunk
        n = self.n
        self.rows = torch.arange(n, device=self.dev)
        self.stats: dict = {"level1": 0, "level2": 0, "level3": 0, "level4": 0, "settled": 0,
                            "rebuilt_rows": 0, "synced_row_features": 0}
        self.long_lists = None
        self.selected: list[int] = []
        # dist[i, j]: squared distance over the first synced[i] selected features, accumulated in
        # selection order. Rows are brought up to date only when needed (`sync`), several
        # features at a time, which keeps a block of rows in cache.
        self.dist = torch.zeros(n, n, dtype=torch.float64, device=self.dev)
        self.dist.fill_diagonal_(INF)
        self.synced = torch.zeros(n, dtype=torch.long)
        # Each feature's sample order (feature-major), for windows of nearest values along a candidate.
        self.sorted_rows = torch.sort(self.zt, dim=1, stable=True).indices
        self.rank = torch.empty_like(self.sorted_rows)
        self.rank.scatter_(1, self.sorted_rows, self.rows[None, :].expand(self.d, n).contiguous())
        # Samples equal on every selected feature (distance 0) form a group.
        self.group = torch.zeros(n, dtype=torch.long, device=self.dev)
        self.group_size = torch.full((n,), n, dtype=torch.long, device=self.dev)
        # For each sample: its k nearest same-label and other-label samples outside its group,
        # sorted by their current distance, and a radius below which no unlisted sample lies.
        # Distances only grow as features are added, so a radius stays valid until the list is
        # rebuilt.
        self.k = max(1, min(list_size, n - 1))
        self.block = max(1, block)
        self.lists = {kind: self.rows[:, None].repeat(1, self.k) for kind in ("same", "other")}
        self.values = {kind: torch.full((n, self.k), INF, dtype=torch.float64, device=self.dev)
                       for kind in ("same", "other")}
        self.radius = {kind: torch.full((n,), INF, dtype=torch.float64, device=self.dev)
                       for kind in ("same", "other")}
        self.stale = self.rows

    # ------------------------------------------------------------ bookkeeping

    def count(self, key: str, value: int) -> None:
        self.stats[key] = self.stats.get(key, 0) + int(value)

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Accumulate the seconds spent in a phase (stats['seconds_<key>'])."""
        started = time.perf_counter()
        try:
            yield
        finally:
            key = f"seconds_{key}"
            self.stats[key] = self.stats.get(key, 0.0) + time.perf_counter() - started

    def sync(self, rows: torch.Tensor) -> None:
        """Bring dist[rows] up to date: add the pending features' terms in selection order."""
        t = len(self.selected)
        rows = rows.to(self.dev)
        start = self.synced[rows.cpu()]
        rows, start = rows[(start < t).to(self.dev)], start[start < t]
        if not len(rows):
            return
        start, order = start.sort()
        rows = rows[order.to(self.dev)]
        self.count("synced_row_features", int((t - start).sum()))
        for b in range(0, len(rows), 64):
            block, first = rows[b:b + 64], start[b:b + 64].tolist()
            part = self.dist.index_select(0, block)
            ready = 0
            for step in range(first[0], t):
                while ready < len(first) and first[ready] <= step:
                    ready += 1  # rows are sorted by how far they already are
                column = self.zt[self.selected[step]]
                diff = column[block[:ready], None] - column[None, :]
                part[:ready] += diff * diff
            self.dist.index_copy_(0, block, part)
        self.synced[rows.cpu()] = t

    def rebuild(self, rows: torch.Tensor) -> None:
        """Fresh neighbour lists and radii for `rows`."""
        k = self.k
        self.sync(rows)
        self.count("rebuilt_rows", len(rows))
        for start in range(0, len(rows), 256):
            block = rows[start:start + 256]
            d = self.dist.index_select(0, block)
            d.masked_fill_(d == 0, INF)  # group members are handled exactly by the 1-D search
            same = self.labels[block][:, None] == self.labels[None, :]
            for kind, mask in (("same", ~same), ("other", same)):
                values, index = d.masked_fill(mask, INF).topk(k + 1, dim=1, largest=False)  # sorted
                self.radius[kind][block] = values[:, k]
                self.lists[kind][block] = torch.where(values[:, :k] < INF, index[:, :k], block[:, None])
                self.values[kind][block] = values[:, :k]

    def add(self, feature: int) -> None:
        """Select a feature: grow the listed distances, split groups; distance rows catch up lazily."""
        self.selected.append(feature)
        column = self.zt[feature]
        for kind in ("same", "other"):
            diff = column[:, None] - column[self.lists[kind]]
            values, order = (self.values[kind] + diff * diff).sort(1)
            self.values[kind], self.lists[kind] = values, self.lists[kind].gather(1, order)
        if bool((self.group_size >= 2).any()):
            key = torch.stack([self.group, column.view(torch.long)], 1)
            _, self.group = torch.unique(key, dim=0, return_inverse=True)
            size = torch.bincount(self.group, minlength=self.n)[self.group]
            changed = (size != self.group_size).nonzero().flatten()
            self.group_size = size
            self.stale = torch.unique(torch.cat([self.stale, changed]))

    # ------------------------------------------------------------ one step

    def step(self, cand: torch.Tensor) -> tuple[int, int]:
        """Find the candidate whose addition gives the highest SI (lowest index among ties), exactly."""
        if len(self.stale):
            with self.timed("rebuild"):
                self.rebuild(self.stale)
        with self.timed("level1"):
            state, unknown_per_row, g = self._level1(cand)
        feature, best = self._best_first(state, cand, g)
        # Lists that left most candidates undecided are refreshed before the next step.
        self.stale = torch.unique(torch.cat([self.stale, (2 * unknown_per_row > len(cand)).nonzero().flatten()]))
        return feature, best

    def _level1(self, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Every sample and candidate, from each list's nearest entry: 1 right, 0 wrong, 2 unknown."""
        z, labels, n = self.z, self.labels, self.n
        vs, ls, vo, lo = self.values["same"], self.lists["same"], self.values["other"], self.lists["other"]
        s1, a_s, o1, a_o = vs[:, 0], ls[:, 0], vo[:, 0], lo[:, 0]
        # No other same-label (other-label) sample is nearer than sigma (omega).
        sigma = torch.minimum(vs[:, 1], self.radius["same"]) if self.k > 1 else self.radius["same"]
        omega = torch.minimum(vo[:, 1], self.radius["other"]) if self.k > 1 else self.radius["other"]
        s_first = a_s < a_o
        group_rows = (self.group_size >= 2).nonzero().flatten()
        # A row whose listed same-label neighbour stays nearer than any other-label sample can be,
        # for every candidate of a tile, is settled for the tile by one comparison.
        threshold = torch.minimum(o1, omega)
        threshold[group_rows] = -INF
        state = torch.empty(n, len(cand), dtype=torch.int8, device=self.dev)
        unknown_per_row = torch.zeros(n, dtype=torch.long, device=self.dev)
        g = {"rows": group_rows, "pos": torch.full((n,), -1, dtype=torch.long, device=self.dev)}
        g["pos"][group_rows] = torch.arange(len(group_rows), device=self.dev)
        if len(group_rows):
            merged_v = torch.cat([vs[group_rows, :2], vo[group_rows, :2]], 1)
            merged_i = torch.cat([ls[group_rows, :2], lo[group_rows, :2]], 1)
            top, where_ = merged_v.topk(2, dim=1, largest=False)
            g1, g_a = top[:, 0], merged_i.gather(1, where_[:, :1]).squeeze(1)
            radius = torch.minimum(self.radius["same"], self.radius["other"])[group_rows]
            g_cert = torch.minimum(torch.minimum(top[:, 1], radius), torch.minimum(sigma, omega)[group_rows])
            g["index"] = torch.empty(len(group_rows), len(cand), dtype=torch.long, device=self.dev)
            g["ok"] = torch.empty(len(group_rows), len(cand), dtype=torch.bool, device=self.dev)
        for t0 in range(0, len(cand), self.tile):
            cols = cand[t0:t0 + self.tile]
            zt = z[:, cols]
            diff = zt - zt.index_select(0, a_s)
            near_same = s1[:, None] + diff * diff
            st = torch.ones(zt.shape, dtype=torch.int8, device=self.dev)
            rest = (~(near_same < threshold[:, None]).all(1)).nonzero().flatten()
            if len(rest):
                zr, ns = zt.index_select(0, rest), near_same.index_select(0, rest)
                diff = zr - zt.index_select(0, a_o[rest])
                near_other = o1[rest, None] + diff * diff
                decided = self._decide(ns, near_other, sigma[rest, None], omega[rest, None], s_first[rest, None])
                st[rest] = torch.where((decided == 2) & (near_other < ns), 3, decided).to(torch.int8)
            if len(group_rows):
                zg = zt.index_select(0, group_rows)
                best, index, ok = _nearest_in_group_1d(zg, self.group[group_rows], group_rows)
                g["index"][:, t0:t0 + self.tile], g["ok"][:, t0:t0 + self.tile] = index, ok
                diff = zg - zt.index_select(0, g_a)
                listed = g1[:, None] + diff * diff
                take_group = (best < listed) | ((best == listed) & (index < g_a[:, None]))
                near = torch.where(take_group, best, listed)
                who = torch.where(take_group, index, g_a[:, None])
                sure = ok & (near < g_cert[:, None])
                right = labels[who] == labels[group_rows, None]
                st[group_rows] = torch.where(sure, right.to(torch.int8), torch.where(right, 2, 3)).to(torch.int8)
            unknown_per_row += (st >= 2).sum(1)
            state[:, t0:t0 + self.tile] = st
        self.count("level1", n * len(cand))
        return state, unknown_per_row, g

    @staticmethod
    def _decide(near_same: torch.Tensor, near_other: torch.Tensor, sigma: torch.Tensor, omega: torch.Tensor,
                same_first: torch.Tensor) -> torch.Tensor:
        """Right (1), wrong (0) or unknown (2), from the best same-label and other-label distances found
        and lower bounds sigma, omega on every same-label and other-label sample not looked at."""
        right = near_same < torch.minimum(near_other, omega)
        wrong = near_other < torch.minimum(near_same, sigma)
        both = (near_same < sigma) & (near_other < omega)  # both nearest known exactly: a distance tie
        return torch.where(right | (both & same_first & ~wrong), 1, torch.where(wrong | both, 0, 2)).to(torch.int8)

    def _best_first(self, state: torch.Tensor, cand: torch.Tensor, g: dict, batch: int = 64) -> tuple[int, int]:
        """Branch and bound over candidates, on proven bounds of each candidate's count: `right` (samples
        proven right) and `upper` (plus those still unknown). The most promising candidate is settled
        first, which sets the bar; then the candidate with the highest upper bound is refined, level by
        level: 2, its unknown samples that level 1 suggests are wrong (a few proven wrongs often
        suffice to drop a candidate); 3, all its unknown samples, by a scan of the neighbour lists;
        4, a scan of long lists built for the rows concerned; 5, full rows, which settle it. It
        stops when no unsettled candidate can beat, or tie with a lower feature index, the best."""
        count_c = len(cand)
        window = self.window if len(self.selected) < self.window_steps else 0
        right = (state == 1).sum(0).cpu()
        upper = right + (state >= 2).sum(0).cpu()
        settled = 6
        level = torch.where(upper == right, settled, 1)  # the last level applied to each candidate
        position = torch.arange(count_c)
        touched = [torch.empty(0, dtype=torch.long, device=self.dev)]
        self.long_lists = None
        first = int(torch.where(level < settled, right, -1).argmax())  # most samples proven right
        while True:
            counts = torch.where(level == settled, right, -1)
            best_pos = int(counts.argmax())  # first, i.e. lowest feature index, among the best
            best_count = int(counts[best_pos])
            can_win = (level < settled) & (upper >= int(right.max())) & (
                (upper > best_count) | ((upper == best_count) & (position < best_pos)))
            if not bool(can_win.any()):
                break
            pick = first if best_count < 0 and level[first] < settled else int(torch.where(can_win, upper, -1).argmax())
            lvl = int(level[pick])
            if lvl < 4 and best_count >= 0:  # refine a batch of the most promising candidates at this level
                same = can_win & (level == lvl)
                cols = torch.where(same, upper, -1).topk(min(batch, int(same.sum()))).indices.to(self.dev)
            else:
                cols = torch.tensor([pick], device=self.dev)
            sub = state[:, cols]
            ec, ei = ((sub.T == 3) if lvl == 1 else (sub.T >= 2)).nonzero(as_tuple=True)  # by candidate
            self.count(f"level{lvl + 1}", len(ei))
            if lvl == 3 and not self._long_lists_pay(ei):
                lvl = 4  # too few entries per row to amortise long lists: full rows are cheaper
            with self.timed(f"level{lvl + 1}"):
                if lvl < 4:
                    if lvl < 3:
                        list_set, w = (self.lists, self.values, self.radius), window
                        if w:
                            self.sync(torch.unique(ei))
                    else:
                        list_set, w = self._long_lists(ei), 0
                    for start in range(0, len(ei), self.chunk):
                        i, c = ei[start:start + self.chunk], ec[start:start + self.chunk]
                        sub.view(-1)[i * len(cols) + c] = self._scan(i, cols[c], cand, g, w, list_set, self.block)
                else:
                    self.sync(torch.unique(ei))
                    sub.view(-1)[ei * len(cols) + ec] = self._full_rows(ei, cand[cols[ec]])
                    touched.append(ei)
                    self.count("settled", len(cols))
            state[:, cols] = sub
            cols = cols.cpu()
            right[cols] = (sub == 1).sum(0).cpu()
            upper[cols] = right[cols] + (sub >= 2).sum(0).cpu()
            level[cols] = torch.where(upper[cols] == right[cols], settled, lvl + 1)
        self.stale = torch.unique(torch.cat(touched))
        return int(cand[best_pos]), best_count

    def _long_lists_pay(self, rows: torch.Tensor) -> bool:
        """True if building long lists for the new rows costs less than measuring the entries on full rows."""
        built = self.long_lists[3] if self.long_lists is not None else torch.zeros(self.n, dtype=torch.bool,
                                                                                      device=self.dev)
        unique = torch.unique(rows)
        new_rows = int((~built[unique]).sum())
        return 8 * new_rows * self.n + 64 * len(rows) < len(rows) * self.n

    def _long_lists(self, rows: torch.Tensor) -> tuple[dict, dict, dict]:
        """Level-4 lists (8x longer, built this step for the rows that need them; shared by candidates)."""
        n, k = self.n, min(8 * self.k, self.n - 1)
        if self.long_lists is None:
            self.long_lists = ({kind: self.rows[:, None].repeat(1, k) for kind in ("same", "other")},
                               {kind: torch.full((n, k), INF, dtype=torch.float64, device=self.dev)
                                for kind in ("same", "other")},
                               {kind: torch.full((n,), -INF, dtype=torch.float64, device=self.dev)
                                for kind in ("same", "other")},
                               torch.zeros(n, dtype=torch.bool, device=self.dev))
        lists, values, radius, built = self.long_lists
        rows = torch.unique(rows)
        rows = rows[~built[rows]]
        if len(rows):
            self.sync(rows)
            for start in range(0, len(rows), 256):
                block = rows[start:start + 256]
                d = self.dist.index_select(0, block)
                d.masked_fill_(d == 0, INF)
                same = self.labels[block][:, None] == self.labels[None, :]
                for kind, mask in (("same", ~same), ("other", same)):
                    v, index = d.masked_fill(mask, INF).topk(k + 1, dim=1, largest=False)
                    radius[kind][block] = v[:, k]
                    lists[kind][block] = torch.where(v[:, :k] < INF, index[:, :k], block[:, None])
                    values[kind][block] = v[:, :k]
            built[rows] = True
        return lists, values, radius

    def _scan(self, i: torch.Tensor, c: torch.Tensor, cand: torch.Tensor, g: dict, w: int,
              list_set: tuple[dict, dict, dict], block: int = 8) -> torch.Tensor:
        """Levels 2 and 3 for entries (sample i, candidate position c): right 1, wrong 0, unknown 2.

        First the extra samples (a window of w nearest values along the candidate, the group's exact
        best), then each neighbour list, sorted by distance, a block at a time: a listed sample is
        at least as far as its current distance, so once the next listed distance exceeds what
        was found, the rest of the list cannot matter and the entry is decided.
        """
        labels, n = self.labels, self.n
        lists, list_values, radius = list_set
        zt, rank, sorted_rows = self.zt.view(-1), self.rank.view(-1), self.sorted_rows.view(-1)
        feature = cand[c]
        row = feature * n  # entries come sorted by candidate: reads stay in one feature row
        zi = zt.take(row + i)
        found = {"same": [torch.full_like(zi, INF), torch.full_like(i, BIG_INDEX)],
                 "other": [torch.full_like(zi, INF), torch.full_like(i, BIG_INDEX)]}
        own = labels.take(i)

        def merge(kind: str, where: torch.Tensor, values: torch.Tensor, index: torch.Tensor) -> None:
            """Fold candidate neighbours (rows `where` of the entries) into the best found, ties to the lowest index."""
            best, who = found[kind]
            low = values.min(1).values
            low_who = torch.where(values == low[:, None], index, BIG_INDEX).min(1).values
            old, old_who = best[where], who[where]
            best[where] = torch.minimum(old, low)
            who[where] = torch.where(low < old, low_who, torch.where(low == old, torch.minimum(old_who, low_who),
                                                                     old_who))

        # Extra samples, of either label: a window along the candidate and each group's best.
        everyone = torch.arange(len(i), device=self.dev)
        extra, base = [], []
        pos = rank.take(row + i)
        if w:
            offsets = torch.cat([torch.arange(-w, 0, device=self.dev), torch.arange(1, w + 1, device=self.dev)])
            wp = pos[:, None] + offsets[None, :]
            inside = (wp >= 0) & (wp < n)
            wj = torch.where(inside, sorted_rows.take(row[:, None] + wp.clamp(0, n - 1)), i[:, None])
            extra.append(wj)
            base.append(self.dist.view(-1).take(i[:, None] * n + wj))  # rows synced by the caller
        gp = g["pos"].index_select(0, i)
        grouped = gp >= 0
        ok = torch.ones(len(i), dtype=torch.bool, device=self.dev)
        if len(g["rows"]) and bool(grouped.any()):
            flat = gp.clamp(min=0) * g["index"].shape[1] + c
            extra.append(torch.where(grouped, g["index"].view(-1).take(flat), i)[:, None])
            base.append(torch.where(grouped, 0.0, INF)[:, None])  # group members are at distance 0
            ok = torch.where(grouped, g["ok"].view(-1).take(flat), ok)
        if extra:
            cols = torch.cat(extra, 1)
            diff = zi[:, None] - zt.take(row[:, None] + cols)
            values = torch.cat(base, 1) + diff * diff
            same = labels.take(cols) == own[:, None]
            merge("same", everyone, torch.where(same, values, INF), cols)
            merge("other", everyone, torch.where(same, INF, values), cols)
        # Every sample outside the window is at least this far along the candidate feature.
        bound = torch.full((len(i),), INF, dtype=torch.float64, device=self.dev)
        for edge in (pos - w - 1, pos + w + 1):
            valid = (edge >= 0) & (edge < n)
            diff = zi - zt.take(row + sorted_rows.take(row + edge.clamp(0, n - 1)))
            bound = torch.minimum(bound, torch.where(valid, diff * diff, INF))
        unlisted = {kind: radius[kind].index_select(0, i) + bound for kind in ("same", "other")}
        st = torch.full((len(i),), 2, dtype=torch.int8, device=self.dev)
        active = everyone
        k = lists["same"].shape[1]
        start = 0
        while start < k:  # blocks of growing size: early exits are cheap, long scans take few steps
            ia, za, ra = i[active], zi[active], row[active]
            lower = {}
            for kind in ("same", "other"):
                index = lists[kind][:, start:start + block].index_select(0, ia)
                diff = za[:, None] - zt.take(ra[:, None] + index)
                merge(kind, active, list_values[kind][:, start:start + block].index_select(0, ia) + diff * diff, index)
                # no sample left to look at is nearer than this
                rest = unlisted[kind][active]
                if start + block < k:
                    rest = torch.minimum(rest, list_values[kind][:, start + block].index_select(0, ia))
                lower[kind] = rest
            (us, js), (uo, jo) = [(found[kind][0][active], found[kind][1][active]) for kind in ("same", "other")]
            decided = self._decide(us, uo, lower["same"], lower["other"], js < jo)
            # Rows with group members: the exact nearest neighbour decides, once it is proven.
            exact = ok[active] & (torch.minimum(us, uo) < torch.minimum(lower["same"], lower["other"]))
            same_wins = ((us < uo) | ((us == uo) & (js < jo))).to(torch.int8)
            decided = torch.where(grouped[active], torch.where(exact, same_wins, 2).to(torch.int8), decided)
            st[active] = decided
            active = active[decided == 2]
            if not len(active):
                break
            start, block = start + block, 2 * block
        return st

    def _full_rows(self, rows: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Level 5: each entry's nearest neighbour over its whole row (rows must be synced).

        While few features are selected, a k-d tree per candidate (scipy's cKDTree, on the CPU)
        proposes each row's nearest neighbours far faster than a scan of the whole row; its
        proposals are re-measured in the definition's arithmetic and accepted only when no
        other sample can be as near (else the entry falls back to the full row).
        """
        out = torch.full((len(rows),), -1, dtype=torch.int8, device=self.dev)
        if self._trees_apply():
            self._tree_rows(rows, features, out)
        rest = (out < 0).nonzero().flatten()
        if len(rest):
            out[rest] = self._scan_full_rows(rows[rest], features[rest])
        return out

    def _trees_apply(self) -> bool:
        """k-d trees are used on the CPU while a candidate's space has at most TREE_DIMS dimensions."""
        return self.trees and self.dev.type == "cpu" and len(self.selected) + 1 <= TREE_DIMS

    def _tree_rows(self, rows: torch.Tensor, features: torch.Tensor, out: torch.Tensor,
                   neighbours: int = 4) -> None:
        """Entries settled through a k-d tree of (selected features + candidate); others stay -1 in `out`."""
        from scipy.spatial import cKDTree

        selected = self.z[:, self.selected].numpy()
        k = min(neighbours + 1, self.n)
        feature_of, entries = torch.unique(features, return_inverse=True)
        counts = torch.bincount(entries, minlength=len(feature_of))
        for position in (counts >= TREE_MIN_ENTRIES).nonzero().flatten().tolist():
            where = (entries == position).nonzero().flatten()
            r, f = rows[where], int(feature_of[position])
            column = self.zt[f]
            points = np.concatenate([selected, column.numpy()[:, None]], axis=1)
            approx, index = cKDTree(points).query(points[r.numpy()], k=k)
            index = torch.from_numpy(index)
            diff = column[r, None] - column[index]
            exact = self.dist[r[:, None], index] + diff * diff  # self is inf on the diagonal
            best = exact.min(1).values
            nearest = torch.where(exact == best[:, None], index, BIG_INDEX).min(1).values
            # Every unproposed sample's tree distance is at least the last proposal's; the tree's
            # arithmetic differs from ours by far less than TREE_BAND (relative).
            farthest = torch.from_numpy(approx[:, -1]) ** 2
            proven = farthest * (1 - TREE_BAND) > best
            done = where[proven]
            out[done] = (self.labels[nearest[proven]] == self.labels[r[proven]]).to(torch.int8)
            self.count("tree_entries", len(where))
            self.count("tree_proven", int(proven.sum()))

    def _scan_full_rows(self, rows: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Each entry's nearest neighbour by a scan of its whole distance row."""
        out = torch.empty(len(rows), dtype=torch.int8, device=self.dev)
        per_chunk = max(1, (1 << 22) // self.n)
        for start in range(0, len(rows), per_chunk):
            r, f = rows[start:start + per_chunk], features[start:start + per_chunk]
            columns = self.zt.index_select(0, f)
            diff = columns.gather(1, r[:, None]) - columns
            near = (self.dist.index_select(0, r) + diff * diff).argmin(1)  # first index among ties
            out[start:start + per_chunk] = (self.labels[near] == self.labels[r]).to(torch.int8)
        return out


def forward_ranking(x, y, k: int | None = None, *, normalize: bool = True,
                    device: torch.device | str | None = None, tile: int = 64, list_size: int = 24,
                    block: int = 8, window: int = 8, window_steps: int = 3, chunk: int = 1 << 14,
                    progress: bool | None = None) -> Ranking:
    """Greedy forward ranking of features by SI; exact (same order and curve as `naive_forward_ranking`).

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
    candidate. Runs on `device` (CUDA when given). `stats` records counts and seconds per level.
    """
    z, labels = prepare(x, y, normalize, device)
    n, d = z.shape
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


class _Captured(Exception):
    """Raised by the capture hook: the layer's output is stored, the rest of the forward pass is skipped."""


@torch.no_grad()
def layer_output(model: nn.Module, module: nn.Module, images: torch.Tensor, batch_size: int = 256,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Flattened outputs of `module` inside `model` for all `images` (float32, on the CPU), via a forward hook.

    The hook stops the forward pass once the module has run (later layers are not computed), and
    it is always removed, even if the model raises.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    outputs: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        outputs.append(output.detach().flatten(1).to("cpu", torch.float32, copy=True))
        raise _Captured

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        for batch in torch.as_tensor(images).split(batch_size):
            try:
                model(batch.to(device))
            except _Captured:
                pass
            else:
                raise RuntimeError(f"{type(module).__name__} did not run in the model's forward pass")
    finally:
        handle.remove()
        model.train(was_training)
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
