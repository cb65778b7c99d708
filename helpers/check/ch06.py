"""Chapter 6's self-checks: separation index (SI) and centre SI (CSI), on data built to catch the edge cases."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from .. import reference, separation
from .grading import Case, Mistake, compare

__all__ = ["separation_index", "center_separation_index"]


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
    """Check separation_index(x, y) -> float against the brute-force definition (reference.separation_index).

    Cases: random blobs, exact distance ties on an integer grid and between duplicated rows (the lowest
    index wins), one feature in units 1000 times larger (z-scoring), a constant feature (std + 1e-10).
    """
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
    variants = [(partial(reference.separation_index, normalize=False), ZSCORE_HINT),
                (partial(reference.separation_index, ties="highest"), TIE_HINT),
                (partial(reference.separation_index, exclude="none"),
                 "a sample is not its own nearest neighbour: leave the sample itself out"),
                (partial(reference.separation_index, exclude="zero"),
                 "only the sample itself is left out; an identical copy (distance 0) is a real neighbour"),
                (partial(reference.separation_index, count=True), FRACTION_HINT)]
    return compare(fn, reference.separation_index, cases, "separation_index",
                   "z-score each feature, find each sample's nearest other sample, count how often its label "
                   "is the same", atol=1e-9, kind="number", diagnose=variants, nan_hint=CONSTANT_HINT)


def center_separation_index(fn: Callable) -> bool:
    """Check center_separation_index(x, y) -> float (CSI) against reference.center_separation_index.

    CSI is the fraction of samples whose nearest class centroid is their own class. Features are
    z-scored first, (x - mean) / (std + 1e-10) with the unbiased std, in float64; a class's centroid is
    the mean of its z-scored samples; a distance tie between centroids goes to the lowest label. Labels
    may be any integers (e.g. 0, 2, 5): the classes are the labels that occur.
    Cases: random blobs, labels 0, 2, 5, two classes with exactly equal centroids (the tie rule), one
    feature in units 1000 times larger (z-scoring), a constant feature.
    """
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
    variants = [(partial(reference.center_separation_index, normalize=False), ZSCORE_HINT),
                (partial(reference.center_separation_index, ties="highest"),
                 "when several centroids are exactly equally close, the class with the lowest label wins "
                 "(yours takes the highest)"),
                (partial(reference.center_separation_index, count=True), FRACTION_HINT)]
    return compare(fn, reference.center_separation_index, cases, "center_separation_index",
                   "z-score the features, compute each class's centroid, count the samples whose nearest "
                   "centroid is their own class", atol=1e-9, kind="number", diagnose=variants,
                   nan_hint=CONSTANT_HINT)


SOLUTIONS = {"separation_index": [lambda x, y: separation.separation_index(x, y), reference.separation_index],
             "center_separation_index": [lambda x, y: separation.center_separation_index(x, y),
                                         reference.center_separation_index]}
MISTAKES = [Mistake("separation_index", partial(reference.separation_index, ties="highest"), "lowest index"),
            Mistake("separation_index", partial(reference.separation_index, normalize=False), "z-score"),
            Mistake("separation_index", partial(reference.separation_index, eps=0.0), "std + 1e-10"),
            Mistake("separation_index", partial(reference.separation_index, exclude="none"), "itself"),
            Mistake("separation_index", partial(reference.separation_index, exclude="zero"), "identical copy"),
            Mistake("separation_index", lambda x, y: [reference.separation_index(x, y)], "single number"),
            Mistake("separation_index", lambda x, y: None, "single number"),
            Mistake("center_separation_index", partial(reference.center_separation_index, ties="highest"),
                    "lowest label"),
            Mistake("center_separation_index", partial(reference.center_separation_index, normalize=False), "z-score"),
            Mistake("center_separation_index", partial(reference.center_separation_index, eps=0.0), "std + 1e-10"),
            Mistake("center_separation_index", partial(reference.center_separation_index, count=True), "fraction"),
            Mistake("center_separation_index", partial(reference.center_separation_index, classes="range"),
                    "labels 0, 2, 5"),
            Mistake("center_separation_index", lambda x, y: [reference.center_separation_index(x, y)],
                    "single number"),
            Mistake("center_separation_index", lambda x, y: None, "single number"),
            Mistake("center_separation_index", lambda x, y: torch.tensor([0.5, 0.5]), "single number")]
