"""The machinery of `helpers.separation.forward_ranking`: exact greedy forward ranking, fast.

Private: `separation.forward_ranking` is the public entry point and its docstring explains the
method. This module holds the state it keeps between steps (`_ForwardRanker`): neighbour lists
and radii, lazily updated distance rows, groups of samples equal on the selected features, and
the branch and bound over candidates. Every comparison uses the definition's arithmetic
(float64, features added in selection order), so the result is bit for bit the naive one.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

INF = float("inf")
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
