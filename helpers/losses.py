"""Loss functions the chapters write by hand: label-smoothing cross-entropy (ch. 3)."""
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
