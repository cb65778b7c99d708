"""Metric learning (ch. 5): an embedding network, embedding extraction, a surrogate classifier head, k-NN evaluation."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .models import ResNet18, eval_mode

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class EmbeddingNet(nn.Module):
    """CIFAR-style ResNet-18 trunk, then a linear projection to `embedding_dim`; an optional linear head on the unit-length embedding."""

    def __init__(self, embedding_dim: int = 128, width: float = 1.0, in_channels: int = 3,
                 num_classes: int | None = None, batchnorm: bool = True,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        if embedding_dim < 2:
            raise ValueError(f"embedding_dim must be at least 2, got {embedding_dim}")
        self.trunk = ResNet18(in_channels=in_channels, width=width, batchnorm=batchnorm, mean=mean, std=std)
        self.trunk.fc = nn.Identity()  # the trunk now ends at the pooled penultimate features
        self.projection = nn.Linear(self.trunk.feature_dim, embedding_dim)
        self.embedding_dim = embedding_dim
        # The cross-entropy surrogate head is fitted *after* metric learning (see fit_surrogate_head).
        self.head = nn.Linear(embedding_dim, num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The raw embedding (circle loss L2-normalises it itself)."""
        return self.projection(self.trunk(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised embedding: what k-NN and the surrogate head see."""
        return F.normalize(self(x), dim=1)


class SurrogateClassifier(nn.Module):
    """logits = head(unit embedding): a differentiable stand-in for the k-NN decision, for gradient attacks."""

    def __init__(self, net: EmbeddingNet):
        super().__init__()
        if net.head is None:
            raise ValueError("this EmbeddingNet has no classifier head: build it with num_classes=... and "
                             "call fit_surrogate_head(net, embeddings, labels) first")
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head(self.net.embed(x))


def extract_embeddings(net: EmbeddingNet, loader: DataLoader, attack: Attack | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-length embeddings (CPU) and labels of every batch; with `attack`, of the attacked images.

    The attack is called as attack(surrogate, x, y) on the cross-entropy surrogate classifier, since
    the k-NN decision itself has no gradient.
    """
    device = next(net.parameters()).device
    surrogate = SurrogateClassifier(net) if attack is not None else None
    embeddings, labels = [], []
    with eval_mode(net):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if surrogate is not None:
                x = attack(surrogate, x, y).detach()
            with torch.no_grad():
                embeddings.append(net.embed(x).float().cpu())
            labels.append(y.cpu())
    return torch.cat(embeddings), torch.cat(labels)


def fit_surrogate_head(net: EmbeddingNet, embeddings: torch.Tensor, labels: torch.Tensor,
                       num_classes: int | None = None, C: float = 1.0, seed: int = 0) -> nn.Linear:
    """Fit a multinomial logistic regression (scikit-learn) on frozen unit embeddings; copy it into net.head."""
    from sklearn.linear_model import LogisticRegression

    x, y = _check_embeddings(embeddings, labels)
    num_classes = num_classes or (net.head.out_features if net.head is not None else int(y.max()) + 1)
    if len(np.unique(y)) < 2:
        raise ValueError("the surrogate head needs embeddings of at least two classes")
    if y.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, found up to {y.max()}")
    model = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(x, y)
    weight = np.zeros((num_classes, x.shape[1]))
    bias = np.full(num_classes, -1e4)  # classes absent from the fit are never predicted
    weight[model.classes_], bias[model.classes_] = model.coef_, model.intercept_
    device = next(net.parameters()).device
    head = nn.Linear(x.shape[1], num_classes).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    net.head = head
    return head


def knn_classifier(embeddings: torch.Tensor, labels: torch.Tensor, k: int = 5):
    """A scikit-learn KNeighborsClassifier (majority vote of the k nearest, Euclidean) fitted on the given embeddings."""
    from sklearn.neighbors import KNeighborsClassifier

    x, y = _check_embeddings(embeddings, labels)
    if not 1 <= k <= len(y):
        raise ValueError(f"k must lie in 1..{len(y)} (the number of reference embeddings), got {k}")
    return KNeighborsClassifier(n_neighbors=k).fit(x, y)


def knn_accuracy(knn, embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of `embeddings` whose k-NN vote equals their label."""
    x, y = _check_embeddings(embeddings, labels)
    if x.shape[1] != knn.n_features_in_:
        raise ValueError(f"embeddings have {x.shape[1]} dimensions but the k-NN was fitted on {knn.n_features_in_}")
    return float((knn.predict(x) == y).mean())


def _check_embeddings(embeddings: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    x = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"need embeddings (N, D) and labels (N,); got {x.shape} and {y.shape}")
    if len(y) == 0:
        raise ValueError("no embeddings given")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or inf (did training diverge?)")
    return x, y
