"""Chapter 3's training recipe (ResNet-18 on digits, one switch per ingredient) and few-label transfer."""
from __future__ import annotations

import copy
import os
import threading
import urllib.request
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .data import ImageSet, digit_augmentation, loader
from .losses import LabelSmoothingCrossEntropy
from .models import Normalize, ResNet18, ResNetBase, eval_mode, freeze
from .profile import get_device, seed_everything
from .training import EarlyStopping, History, fit

OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3}
SGD_MOMENTUM = 0.9
SGD_WEIGHT_DECAY = 5e-4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROBE_SECONDS = 4.0


class PretrainedUnavailableError(RuntimeError):
    """The ImageNet ResNet-18 weights are neither cached nor downloadable."""


@dataclass(frozen=True)
class Recipe:
    """One setting of chapter 3's ablation: each field switches one ingredient of the training recipe."""

    batchnorm: bool = True
    label_smoothing: float = 0.0  # 0 -> plain cross-entropy
    augment: bool = False
    optimizer: str = "sgd"  # "sgd" (momentum 0.9) or "adam"
    pretrained: bool = False  # ImageNet ResNet-18 weights (torchvision); needs a download

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Recipe.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"Recipe.label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.pretrained and not self.batchnorm:
            raise ValueError("Recipe(pretrained=True, batchnorm=False) is impossible: the ImageNet "
                             "ResNet-18 weights include its BatchNorm layers. Drop one of the two changes.")

    def describe(self) -> str:
        """A short human-readable name, e.g. 'SGD, BN, LS 0.25, aug'."""
        parts = [self.optimizer.upper() if self.optimizer == "sgd" else "Adam",
                 "BN" if self.batchnorm else "no BN"]
        if self.label_smoothing:
            parts.append(f"LS {self.label_smoothing:g}")
        if self.augment:
            parts.append("aug")
        if self.pretrained:
            parts.append("ImageNet init")
        return ", ".join(parts)


# ---------------------------------------------------------------- ImageNet-pretrained ResNet-18

def _weights():
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1


def pretrained_cache_path() -> str:
    """Where torch hub keeps the ImageNet ResNet-18 weights once downloaded."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(_weights().url))


def _url_reachable(url: str, timeout: float = PROBE_SECONDS) -> bool:
    """True if a HEAD request to `url` answers within `timeout` s (run in a thread: DNS may ignore timeouts)."""
    answer: list[bool] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as reply:
                answer.append(reply.status < 400)
        except Exception:  # offline, DNS failure, proxy refusal, HTTP error: all mean "not downloadable"
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return bool(answer and answer[0])


def pretrained_cached() -> bool:
    """True iff the ImageNet ResNet-18 weights are already in torch hub's local cache (no network)."""
    return os.path.isfile(pretrained_cache_path())


def pretrained_available(allow_download: bool = True) -> bool:
    """True iff the ImageNet ResNet-18 weights are cached or (if allow_download) their URL answers within seconds.

    With allow_download=False only the local cache is looked at: the smoke profile never touches the network.
    """
    return pretrained_cached() or (allow_download and _url_reachable(_weights().url))


class PretrainedResNet18(ResNetBase):
    """torchvision's ImageNet ResNet-18 adapted to 32x32 digits, with ImageNet's Normalize inside.

    Adaptation: every pretrained weight is kept, but the 7x7 stem convolution runs with stride 1
    and the max-pool is removed, so a 32x32 image keeps its resolution into `layer1` (as in the
    CIFAR-style ResNet-18; with the ImageNet stem it would be 8x8 there and 1x1 at the end).
    The 1000-way ImageNet classifier is replaced by a new, randomly initialised `fc` (512 -> classes).
    """

    def __init__(self, net: nn.Module, num_classes: int = 10):
        super().__init__()
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        net.conv1.stride = (1, 1)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)  # net.maxpool dropped on purpose
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(net.fc.in_features, num_classes)
        self.feature_dim = net.fc.in_features


def pretrained_resnet18(num_classes: int = 10) -> PretrainedResNet18:
    """The ImageNet ResNet-18 (torchvision IMAGENET1K_V1) adapted to 32x32; a clear error if it cannot be fetched."""
    from torchvision.models import resnet18

    if not pretrained_available():
        raise PretrainedUnavailableError(
            f"The ImageNet ResNet-18 weights are not cached at {pretrained_cache_path()} and "
            f"{_weights().url} cannot be reached (offline?). Fix: connect to the internet once, or "
            f"download that file by hand into {os.path.dirname(pretrained_cache_path())} "
            f"(set TORCH_HOME to use another folder), or train without pretrained=True.")
    try:
        net = resnet18(weights=_weights(), progress=False)
    except Exception as error:  # the download can still fail half-way
        raise PretrainedUnavailableError(f"Could not load the ImageNet ResNet-18 weights: {error}") from error
    return PretrainedResNet18(net, num_classes)


# ---------------------------------------------------------------- the recipe

def build_model(recipe: Recipe, width: float, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """A fresh model for `recipe`: the CIFAR-style ResNet-18, or the adapted ImageNet one if pretrained."""
    if recipe.pretrained:
        if width != 1.0:
            raise ValueError(f"The ImageNet weights exist only at full width: pass width=1.0 with "
                             f"pretrained=True (got width={width}).")
        if in_channels != 3:
            raise ValueError("The ImageNet ResNet-18 needs 3-channel images: convert grayscale ones "
                             "with helpers.data.gray_to_rgb32 first.")
        return pretrained_resnet18(num_classes)
    return ResNet18(num_classes, in_channels=in_channels, width=width, batchnorm=recipe.batchnorm)


def make_optimizer(recipe: Recipe, model: nn.Module, lr: float | None = None) -> torch.optim.Optimizer:
    """SGD (momentum 0.9, weight decay 5e-4) or Adam (no weight decay) on the trainable parameters."""
    lr = DEFAULT_LR[recipe.optimizer] if lr is None else lr
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=SGD_WEIGHT_DECAY)
    return torch.optim.Adam(params, lr=lr)


def make_loss(recipe: Recipe) -> nn.Module:
    """The hand-written label-smoothing cross-entropy if label_smoothing > 0, else plain cross-entropy."""
    if recipe.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(recipe.label_smoothing)
    return nn.CrossEntropyLoss()


def _check_sets(train: ImageSet, val: ImageSet | None) -> None:
    if not isinstance(train, ImageSet):
        raise ValueError(f"train must be a helpers.data.ImageSet, got {type(train).__name__}")
    if val is not None and val.x.shape[1:] != train.x.shape[1:]:
        raise ValueError(f"train and val images differ in shape: {tuple(train.x.shape[1:])} vs "
                         f"{tuple(val.x.shape[1:])} (use helpers.data.gray_to_rgb32 for MNIST next to SVHN)")


def train_recipe(recipe: Recipe, train: ImageSet, val: ImageSet | None, *, epochs: int, width: float,
                 batch_size: int, lr: float | None = None, seed: int = 0, device=None,
                 checkpoint: str | None = None) -> tuple[nn.Module, History]:
    """Train a fresh ResNet-18 (seeded with `seed`) on `train` following `recipe`; returns (model, history).

    The same everything else for every recipe: cosine learning-rate decay over `epochs`, batches of
    `batch_size`, augmentation (if any) on the training images only, and the weights of the epoch
    with the best validation accuracy restored at the end (selection on the source domain only).
    """
    _check_sets(train, val)
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe must be a helpers.transfer.Recipe, got {type(recipe).__name__}")
    device = torch.device(device) if device is not None else get_device()
    seed_everything(seed)
    model = build_model(recipe, width, num_classes=len(train.classes), in_channels=train.x.shape[1]).to(device)
    transform = digit_augmentation() if recipe.augment else None
    train_loader = loader(train.dataset(transform), batch_size, shuffle=True, seed=seed, device=device)
    val_loader = loader(val, 2 * batch_size, device=device) if val is not None else None
    optimizer = make_optimizer(recipe, model, lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    # patience=epochs never stops early: it only remembers the best epoch (restored by fit).
    stopper = EarlyStopping("val_acc" if val is not None else "train_loss", patience=epochs)
    history = fit(model, train_loader, val_loader, epochs=epochs, optimizer=optimizer,
                  loss_fn=make_loss(recipe), scheduler=scheduler, early_stopping=stopper,
                  checkpoint=checkpoint, desc=recipe.describe())
    return model, history


# ---------------------------------------------------------------- adapting to the target domain

@torch.no_grad()
def adapt_batchnorm(model: nn.Module, data: ImageSet, batch_size: int = 256) -> nn.Module:
    """A copy of `model` whose BatchNorm statistics are re-estimated on `data` (unlabelled target images: AdaBN)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("the model has no BatchNorm layers: there are no statistics to re-estimate")
    _check_sets(data, None)
    adapted = copy.deepcopy(model)
    device = next(adapted.parameters()).device
    adapted.train()
    for norm in (m for m in adapted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        norm.reset_running_stats()
        norm.momentum = None  # None = a plain average over all batches, not an exponential one
    for x, _ in loader(data, batch_size, device=device):
        adapted(x.to(device))  # labels are never used
    for norm, original in zip((m for m in adapted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)), norms):
        norm.momentum = original.momentum
    return adapted.eval()


# ---------------------------------------------------------------- few-label transfer

@torch.no_grad()
def extract_features(model: nn.Module, data: ImageSet | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """`model.features` of every image of `data` (eval mode, batched, on the model's device), returned on CPU.

    `data` is an ImageSet or a float tensor of images (N, C, H, W) in [0, 1], e.g. adversarial ones.
    """
    if not hasattr(model, "features") or not callable(model.features):
        raise ValueError("the model needs a `features(x)` method returning penultimate features")
    device = next(model.parameters()).device
    if isinstance(data, torch.Tensor):
        if data.ndim != 4 or not data.is_floating_point():
            raise ValueError(f"image tensors must be float (N, C, H, W) in [0, 1], got {data.dtype} "
                             f"of shape {tuple(data.shape)}")
        batches = data.split(batch_size)
    elif isinstance(data, ImageSet):
        batches = (x for x, _ in loader(data, batch_size, device=device))
    else:
        raise ValueError(f"data must be a helpers.data.ImageSet or a float image tensor, got {type(data).__name__}")
    with eval_mode(model):
        out = [model.features(x.to(device)).float().cpu() for x in batches]
    return torch.cat(out)


def fine_tune_head(model: nn.Module, train: ImageSet, val: ImageSet | None = None, *, epochs: int,
                   batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                   loss_fn: Callable | None = None) -> tuple[nn.Module, History]:
    """Few-label transfer: freeze everything but `model.fc` and train that classifier on `train` (Adam).

    Returns a fine-tuned copy (the original model is left untouched) and the head's history. The
    frozen part stays in eval mode, so its BatchNorm statistics remain those of the source domain;
    its features are then fixed, so they are computed once and only the linear layer is trained.
    """
    _check_sets(train, val)
    if not isinstance(getattr(model, "fc", None), nn.Linear):
        raise ValueError("the model needs a linear classifier `fc` on top of `features(x)` to fine-tune")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    adapted = copy.deepcopy(model)
    freeze(adapted, trainable=adapted.fc)
    device = next(adapted.parameters()).device
    train_features = TensorDataset(extract_features(adapted, train), train.y)
    val_loader = None
    if val is not None:
        val_loader = loader(TensorDataset(extract_features(adapted, val), val.y), 512, device=device)
    seed_everything(seed)
    history = fit(adapted.fc, loader(train_features, batch_size, shuffle=True, seed=seed, device=device),
                  val_loader, epochs=epochs, optimizer=torch.optim.Adam(adapted.fc.parameters(), lr=lr),
                  loss_fn=loss_fn, desc="fine-tune fc")
    return adapted, history
