"""Models of the book (MLP, CIFAR-style ResNet-18, VGG-16, SimpleNet, input normalisation) and tools for any model:
parameter counts, eval mode for a block, freezing, the output of one layer."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class Normalize(nn.Module):
    """(x - mean) / std per channel, inside the model so that attacks and plots work in [0, 1] pixels."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def activation(name: str) -> nn.Module:
    """An activation module by name: relu, leakyrelu, sigmoid, tanh."""
    key = name.lower().replace("_", "").replace("-", "")
    if key not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[key]()


class MLP(nn.Module):
    """Flatten, then Linear-activation(-dropout) blocks and a final Linear producing logits."""

    def __init__(self, sizes: Sequence[int] = (784, 100, 50, 10), act: str = "relu", dropout: float = 0.0):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"sizes needs at least an input and an output size, got {list(sizes)}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.in_features = sizes[0]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
            layers += [nn.Linear(fan_in, fan_out), activation(act)]
            if dropout:
                layers.append(nn.Dropout(dropout))  # used in forward: it is part of the Sequential
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x[0].numel() != self.in_features:
            raise ValueError(f"MLP expects inputs with {self.in_features} values per sample, "
                             f"got shape {tuple(x.shape)}")
        return self.net(x)


# ---------------------------------------------------------------- ResNet-18, CIFAR style

class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, batchnorm: bool):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if batchnorm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=not batchnorm)
        self.bn1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=not batchnorm)
        self.bn2 = norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=not batchnorm), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetBase(nn.Module):
    """What every ResNet of the book computes: normalize, stem, four stages, global average pool, fc."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (after global average pooling)."""
        x = self.stem(self.normalize(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.flatten(self.pool(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class ResNet18(ResNetBase):
    """ResNet-18 for 32x32 inputs: 3x3 stem, no max-pool, 4 stages of 2 blocks; `width` scales channels."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 batchnorm: bool = True, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        channels = [max(4, int(round(c * width))) for c in (64, 128, 256, 512)]
        mean = mean if mean is not None else [0.5] * in_channels
        std = std if std is not None else [0.5] * in_channels
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=not batchnorm),
            nn.BatchNorm2d(channels[0]) if batchnorm else nn.Identity(), nn.ReLU(inplace=True))
        stages, cin = [], channels[0]
        for i, cout in enumerate(channels):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride, batchnorm),
                                        BasicBlock(cout, cout, 1, batchnorm)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels[-1], num_classes)
        self.feature_dim = channels[-1]



# ---------------------------------------------------------------- VGG-16, torchvision layout

VGG16_CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(nn.Module):
    """VGG-16 in torchvision's exact layout (31 `features` modules, AdaptiveAvgPool2d(7), 25088-4096-4096-C).

    `width` scales the convolution channels and `hidden` the classifier for fast smoke runs;
    width=1, hidden=4096 gives torchvision's model (134,301,514 parameters for 10 classes).
    batchnorm=True puts a BatchNorm2d after each convolution *inside the convolution's slot*
    (features[i] = Sequential(conv, bn)), so the 31 modules and their indices stay VGG-16's.
    Weights keep PyTorch's default initialisation; `torchvision_init_` applies torchvision's.
    """

    def __init__(self, num_classes: int = 10, width: float = 1.0, hidden: int = 4096,
                 dropout: float = 0.5, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5), batchnorm: bool = False):
        super().__init__()
        if width <= 0 or hidden < 1:
            raise ValueError(f"width must be > 0 and hidden >= 1, got width={width}, hidden={hidden}")
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = []
        cin = 3
        for item in VGG16_CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                cout = max(4, int(round(item * width)))
                conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
                layers += [nn.Sequential(conv, nn.BatchNorm2d(cout)) if batchnorm else conv, nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = vgg_classifier(cin * 7 * 7, hidden, dropout, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.normalize(x))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def vgg_classifier(in_features: int = 512 * 7 * 7, hidden: int = 4096, dropout: float = 0.5,
                   num_classes: int = 10) -> nn.Sequential:
    """VGG-16's classifier: Linear-ReLU-Dropout twice, then Linear to the classes (torchvision's layout)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(True), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(dropout),
        nn.Linear(hidden, num_classes))


def torchvision_init_(model: nn.Module) -> nn.Module:
    """torchvision's VGG initialisation, in place: He-normal (fan-out) convolutions, N(0, 0.01) linear layers, zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)
    return model


def vgg_optimizer(parameters, name: str, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The VGG recipe's optimiser: "sgd" (momentum 0.9, the original) or "adam" (short smoke runs), with L2 weight decay."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimiser {name!r}; choose 'sgd' or 'adam'.")


class SimpleNet(nn.Module):
    """Chapter 8's SimpleNet: conv 3->64 (3x3, same padding), ReLU, linear 64*32*32 -> 10."""

    def __init__(self, num_classes: int = 10, channels: int = 64, size: int = 32):
        super().__init__()
        self.normalize = Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.conv = nn.Conv2d(3, channels, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(channels * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.relu(self.conv(self.normalize(x))), 1))


# ---------------------------------------------------------------- tools for any model

@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode, then restore each module's own mode (even after an error)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def freeze(module: nn.Module, trainable: nn.Module | None = None, keep_eval: bool = False) -> nn.Module:
    """Freeze every parameter of `module` except those of `trainable` (e.g. the head to fine-tune).

    keep_eval=True also keeps `module` in eval mode whenever it runs, even after its parent's
    `train()` (as `fit` calls every epoch): BatchNorm keeps its running statistics and dropout
    stays off. A forward pre-hook switches it back to eval mode before each forward pass; the
    parameters and the state_dict are those of the plain module.
    """
    for p in module.parameters():
        p.requires_grad_(False)
    if trainable is not None:
        for p in trainable.parameters():
            p.requires_grad_(True)
    if keep_eval:
        module.eval()
        module.register_forward_pre_hook(_run_in_eval)
    return module


def _run_in_eval(module: nn.Module, inputs: Any) -> None:
    """Forward pre-hook of freeze(keep_eval=True): a parent's train() never makes this module train."""
    if module.training:
        module.eval()


class _Stop(Exception):
    """Raised by forward_to's hook: the layer's output is kept, the rest of the forward pass skipped."""


def forward_to(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output of `module` (a sub-module of `model`) for x, without running the layers after it.

    A forward hook keeps the output and stops the forward pass; it is always removed, even if the model raises.
    """
    kept: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        kept.append(output)
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        return kept[0]
    finally:
        handle.remove()
    raise ValueError(f"{type(module).__name__} did not run in the model's forward pass")
