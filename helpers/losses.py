"""Loss functions the chapters write by hand: label-smoothing cross-entropy (ch. 3), circle loss (ch. 5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def label_smoothing_cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy against (1 - eps) * one_hot + eps / K: the target spreads eps over all K classes."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K), got shape {tuple(logits.shape)}")
    if not 0 <= epsilon < 1:
        raise ValueError(f"epsilon must lie in [0, 1), got {epsilon}")
    num_classes = logits.shape[1]
    if target.ndim != 1 or len(target) != len(logits):
        raise ValueError(f"need one integer label per row of logits; got labels of shape {tuple(target.shape)}")
    if len(target) and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, found {int(target.min())}..{int(target.max())}")
    log_probs = F.log_softmax(logits, dim=1)
    smooth = torch.full_like(log_probs, epsilon / num_classes)
    smooth.scatter_(1, target[:, None], 1 - epsilon + epsilon / num_classes)
    return -(smooth * log_probs).sum(dim=1).mean()


class LabelSmoothingCrossEntropy(nn.Module):
    """Module form of `label_smoothing_cross_entropy`, for `fit(loss_fn=...)`."""

    def __init__(self, epsilon: float = 0.1):
        super().__init__()
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return label_smoothing_cross_entropy(logits, target, self.epsilon)


# ---------------------------------------------------------------- circle loss (ch. 5)

def _check_embeddings(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise a clear error unless embeddings is (N, D) float and labels holds N integers."""
    if not isinstance(embeddings, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError("embeddings and labels must be torch tensors")
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), one row per sample; got shape {tuple(embeddings.shape)} "
                         f"(flatten them, e.g. embeddings.flatten(1))")
    if not embeddings.is_floating_point():
        raise ValueError(f"embeddings must be floating point, got {embeddings.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), one integer per embedding; got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if len(labels) != len(embeddings):
        raise ValueError(f"need one label per embedding: {len(embeddings)} embeddings but {len(labels)} labels")


def cosine_similarities(embeddings: torch.Tensor) -> torch.Tensor:
    """(N, N) matrix of cosine similarities s_ij = <e_i, e_j> / (|e_i| |e_j|), all in [-1, 1]."""
    unit = F.normalize(embeddings, p=2, dim=1)  # L2-normalise: every embedding on the unit sphere
    return unit @ unit.T


def pair_similarities(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarities of every pair i < j of the batch: (s_p of same-label pairs, s_n of different-label pairs)."""
    _check_embeddings(embeddings, labels)
    sim = cosine_similarities(embeddings)
    i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)  # i < j: each pair once
    same = labels[i] == labels[j]
    pairs = sim[i, j]
    return pairs[same], pairs[~same]


def circle_logits(s_p: torch.Tensor, s_n: torch.Tensor, m: float, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Circle loss's scaled, self-paced logits of positive and negative similarities."""
    # Optima O_p = 1 + m, O_n = -m; margins Delta_p = 1 - m, Delta_n = m. The weights alpha are
    # constants for the gradient (detached), as in the paper: a pair far from its optimum gets a larger
    # step, a pair already past it (alpha = 0) gets none.
    alpha_p = torch.relu(1 + m - s_p.detach())
    alpha_n = torch.relu(s_n.detach() + m)
    return -gamma * alpha_p * (s_p - (1 - m)), gamma * alpha_n * (s_n - m)


def circle_loss_from_pairs(s_p: torch.Tensor, s_n: torch.Tensor, m: float = 0.25, gamma: float = 80.0) -> torch.Tensor:
    """Pooled circle loss: softplus(logsumexp(logit_n) + logsumexp(logit_p)) over all pairs given (0 if a side is empty)."""
    _check_margin(m, gamma)
    if s_p.numel() == 0 or s_n.numel() == 0:
        # Nothing to pull together or nothing to push apart: no signal. A zero that keeps the graph.
        return (s_p.sum() + s_n.sum()) * 0.0
    logit_p, logit_n = circle_logits(s_p, s_n, m, gamma)
    # log(1 + sum_n exp(logit_n) * sum_p exp(logit_p)), computed stably with logsumexp and softplus
    return F.softplus(torch.logsumexp(logit_n, dim=0) + torch.logsumexp(logit_p, dim=0))


def circle_loss_per_anchor(embeddings: torch.Tensor, labels: torch.Tensor, m: float = 0.25,
                           gamma: float = 80.0) -> torch.Tensor:
    """One circle-loss term per anchor over its ordered pairs (no self-pair); 0 for anchors lacking a positive or negative."""
    _check_embeddings(embeddings, labels)
    _check_margin(m, gamma)
    sim = cosine_similarities(embeddings)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)  # an anchor is not its own positive
    neg = ~same
    logit_p, logit_n = circle_logits(sim, sim, m, gamma)
    very_negative = torch.finfo(sim.dtype).min  # masked entries: exp(.) = 0, yet no -inf to poison the gradient
    lse_p = torch.logsumexp(logit_p.masked_fill(~pos, very_negative), dim=1)
    lse_n = torch.logsumexp(logit_n.masked_fill(~neg, very_negative), dim=1)
    valid = pos.any(dim=1) & neg.any(dim=1)
    return torch.where(valid, F.softplus(lse_p + lse_n), torch.zeros_like(lse_p))


def circle_loss(embeddings: torch.Tensor, labels: torch.Tensor, m: float = 0.25, gamma: float = 80.0,
                reduction: str = "batch") -> torch.Tensor:
    """Circle loss of a batch: 'batch' pools every pair i < j into one term; 'anchor' averages the non-zero per-anchor terms."""
    if reduction == "batch":
        return circle_loss_from_pairs(*pair_similarities(embeddings, labels), m=m, gamma=gamma)
    if reduction == "anchor":
        losses = circle_loss_per_anchor(embeddings, labels, m, gamma)
        nonzero = losses > 0  # pytorch-metric-learning's AvgNonZeroReducer
        return losses[nonzero].mean() if nonzero.any() else embeddings.sum() * 0.0
    raise ValueError(f"Unknown reduction {reduction!r}: use 'batch' (one term pooling all pairs, the original "
                     f"coursework) or 'anchor' (mean of per-anchor terms, pytorch-metric-learning)")


def _check_margin(m: float, gamma: float) -> None:
    if not 0 <= m < 1:
        raise ValueError(f"the relaxation margin m must lie in [0, 1), got {m} (the paper uses 0.25 or 0.4)")
    if not gamma > 0:
        raise ValueError(f"the scale gamma must be positive, got {gamma} (the paper uses 80 to 256)")


class CircleLoss(nn.Module):
    """Module form of `circle_loss` (embeddings, labels) -> loss, for `fit(loss_fn=..., track_accuracy=False)`."""

    def __init__(self, m: float = 0.25, gamma: float = 80.0, reduction: str = "batch"):
        super().__init__()
        _check_margin(m, gamma)
        if reduction not in ("batch", "anchor"):
            raise ValueError(f"Unknown reduction {reduction!r}: use 'batch' or 'anchor'")
        self.m, self.gamma, self.reduction = m, gamma, reduction

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # In float32 even under mixed precision: exp(gamma * ...) and the masking constants need its range.
        with torch.autocast(embeddings.device.type, enabled=False):
            return circle_loss(embeddings.float(), labels, self.m, self.gamma, self.reduction)

    def extra_repr(self) -> str:
        return f"m={self.m}, gamma={self.gamma}, reduction={self.reduction!r}"
