"""Interpretability (ch. 7): activations, filter visualisation, occlusion, Grad-CAM, guided backprop, a fit callback.

Every function takes the model, the layer (a name from `model.named_modules()` or the module
itself) and the target class explicitly. Images are float tensors in [0, 1] pixel space, (N, C, H, W)
or one (C, H, W); the models of this book normalise inside, so gradients are w.r.t. pixels.
Hooks are registered in context managers and removed on exit, also when an error is raised;
the model's train/eval mode is restored afterwards. Figures are drawn by helpers.plots
(`plots.overlay`, `plots.explanation_grid`).
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, Union

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import models
from .models import eval_mode  # every module back to its own mode afterwards

Layer = Union[str, nn.Module]
Target = Union[int, Sequence[int], torch.Tensor, None]
EPS = 1e-7  # min-max guard, the same as pytorch-grad-cam's scale_cam_image


# ---------------------------------------------------------------- layers, targets, inputs

def layer_names(model: nn.Module) -> list[str]:
    """Names of all sub-modules, the strings accepted wherever a layer is asked for."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, layer: Layer) -> tuple[str, nn.Module]:
    """(name, module) of `layer`, given by name or as a module; a clear error lists close names."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer and name:
                return name, module
        raise ValueError(f"The {type(layer).__name__} passed as layer is not a sub-module of this "
                         f"{type(model).__name__}; pass a module of this model or one of its names.")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str) or an nn.Module, got {type(layer).__name__}")
    modules = dict(model.named_modules())
    if layer and layer in modules:
        return layer, modules[layer]
    names = layer_names(model)
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    hint = f"Close names: {', '.join(close)}." if close else f"Some names: {', '.join(names[:8])}..."
    raise ValueError(f"No layer named {layer!r} in {type(model).__name__}. {hint} "
                     f"See interpret.layer_names(model) for all {len(names)}.")


def as_batch(x: torch.Tensor) -> torch.Tensor:
    """Images as a float batch (N, C, H, W); one image (C, H, W) becomes a batch of one."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    return x.float() if not x.is_floating_point() else x


def check_targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """One class index per image (None: the predicted class); out-of-range indices raise ValueError."""
    n, k = logits.shape
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {t.dtype}")
    t = t.to(device=logits.device, dtype=torch.long).flatten()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"need one target class per image: {n} images but {t.numel()} targets")
    bad = t[(t < 0) | (t >= k)]
    if bad.numel():
        raise ValueError(f"class index {int(bad[0])} is out of range: the model has {k} outputs, "
                         f"so targets must lie in 0..{k - 1}")
    return t


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map (over its last two dims) to [0, 1]; a constant map (e.g. all zeros) becomes all zeros."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    maps = maps - low
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + EPS)


# ---------------------------------------------------------------- hooks

@contextmanager
def capture(model: nn.Module, layers: Sequence[Layer], keep_graph: bool = False
            ) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the outputs of `layers` in every forward pass inside the block; the hooks go on exit, also on error.

    keep_graph=False stores detached copies; keep_graph=True stores tensors gradients can flow to
    (the hook hands a copy on to the rest of the network, so a later in-place op such as
    ReLU(inplace=True) cannot overwrite the stored output).
    """
    resolved = [get_layer(model, layer) for layer in layers]
    store: dict[str, list[torch.Tensor]] = {name: [] for name, _ in resolved}

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor: pick another layer")
            if keep_graph:
                store[name].append(output)
                return output.clone()  # the network goes on with a copy: an in-place op cannot change `output`
            store[name].append(output.detach().clone())
            return None
        return hook

    handles = []
    try:
        for name, module in resolved:
            handles.append(module.register_forward_hook(make_hook(name)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _one_call(store: dict[str, list[torch.Tensor]], name: str) -> torch.Tensor:
    calls = store[name]
    if len(calls) != 1:
        raise ValueError(f"layer {name!r} ran {len(calls)} times in one forward pass; pick a layer that "
                         f"runs exactly once (a module reused in several places is ambiguous)")
    return calls[0]


@torch.no_grad()
def activations(model: nn.Module, x: torch.Tensor, layers: Sequence[Layer]) -> dict[str, torch.Tensor]:
    """Outputs of `layers` for images x (eval mode), by layer name."""
    x = as_batch(x).to(model_device(model))
    with eval_mode(model), capture(model, layers) as store:
        model(x)
    return {name: _one_call(store, name) for name in store}


def forward_to(model: nn.Module, layer: Layer, x: torch.Tensor) -> torch.Tensor:
    """The output of `layer` for x, without running the rest of the network: the sub-model up to the layer."""
    return models.forward_to(model, get_layer(model, layer)[1], x)


# ---------------------------------------------------------------- filter visualisation

def visualise_filters(model: nn.Module, layer: Layer, filters: Sequence[int], size: int | tuple[int, int] = 32,
                      steps: int = 100, lr: float = 0.05, jitter: int = 2, blur_every: int = 4,
                      blur_sigma: float = 0.5, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Images (F, C, H, W) in [0, 1] that maximise the mean activation of each filter, by gradient ascent from noise.

    Regularisers: `jitter` rolls the image by up to that many pixels each step (no pixel-exact
    adversarial patterns), `blur_every` steps a Gaussian blur of `blur_sigma` smooths away
    high-frequency noise; 0 switches either off.
    """
    from torchvision.transforms.v2.functional import gaussian_blur

    name, module = get_layer(model, layer)
    filters = [int(f) for f in filters]
    if not filters:
        raise ValueError("filters must name at least one filter index")
    height, width = (size, size) if isinstance(size, int) else size
    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.1 * torch.randn(len(filters), channels, height, width, generator=generator)).clamp(0, 1)
    x = x.to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    rows = torch.arange(len(filters), device=device)
    with eval_mode(model), torch.enable_grad():
        for step in range(steps):
            dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist() if jitter else (0, 0))
            out = forward_to(model, module, torch.roll(x, shifts=(dy, dx), dims=(2, 3)))
            if step == 0 and (max(filters) >= out.shape[1] or min(filters) < 0):
                raise ValueError(f"filter indices must lie in 0..{out.shape[1] - 1} for layer {name!r} "
                                 f"({out.shape[1]} channels), got {filters}")
            chosen = out[rows, filters]
            score = chosen.flatten(1).mean(1).sum()  # each image maximises its own filter's mean activation
            # autograd.grad, not backward(): the model's parameter .grad stay untouched
            x.grad, = torch.autograd.grad(-score, x)
            optimizer.step()
            with torch.no_grad():
                if blur_every and (step + 1) % blur_every == 0:
                    x.copy_(gaussian_blur(x, kernel_size=3, sigma=blur_sigma))
                x.clamp_(0, 1)
    return x.detach()


# ---------------------------------------------------------------- occlusion

def occlude(images: torch.Tensor, top: int, left: int, height: int, width: int,
            fill: float | torch.Tensor = 0.5) -> torch.Tensor:
    """A copy of images with the rectangle [top:top+height, left:left+width] replaced by `fill`."""
    images = as_batch(images)
    if min(height, width) < 0:
        raise ValueError(f"patch height and width must be >= 0, got {height} x {width}")
    mask = torch.zeros(images.shape[-2:], dtype=torch.bool, device=images.device)
    mask[max(top, 0):max(top + height, 0), max(left, 0):max(left + width, 0)] = True
    fill = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    return torch.where(mask, fill, images)


def _positions(length: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)  # the last patch touches the border: every pixel gets covered
    return starts


@torch.no_grad()
def occlusion(model: nn.Module, x: torch.Tensor, target: Target = None, patch: int = 8, stride: int = 4,
              fill: float | torch.Tensor = 0.5, batch_size: int = 128) -> torch.Tensor:
    """Occlusion sensitivity (N, H, W): drop in the target-class probability when a patch covers each pixel.

    A patch x patch square of `fill` slides with `stride` (<= patch), plus one last position touching
    the bottom and right borders; each pixel gets the mean drop of the patches that covered it
    (positive: hiding it hurt the class). `fill` is a value, a per-channel
    (C, 1, 1) tensor or an image-shaped tensor. Cost: one forward per position and image.
    """
    x = as_batch(x).to(model_device(model))
    n, _, height, width = x.shape
    if not (isinstance(patch, int) and 1 <= patch <= min(height, width)):
        raise ValueError(f"patch must be an int in 1..{min(height, width)} for {height}x{width} images, got {patch}")
    if not (isinstance(stride, int) and 1 <= stride <= patch):
        raise ValueError(f"stride must be an int in 1..patch (= {patch}), got {stride}: a larger stride "
                         f"leaves pixels between the patches that no patch ever covers")
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    fill = fill.expand_as(x) if fill.ndim < 4 else fill
    if fill.shape != x.shape:
        raise ValueError(f"fill must broadcast to the images' shape {tuple(x.shape)}, got {tuple(fill.shape)}")
    masks = []
    for top in _positions(height, patch, stride):
        for left in _positions(width, patch, stride):
            mask = torch.zeros(height, width, dtype=torch.bool, device=x.device)
            mask[top:top + patch, left:left + patch] = True
            masks.append(mask)
    masks = torch.stack(masks)[:, None]                               # (P, 1, H, W)
    coverage = masks.float().sum(0)[0]                                 # how many patches cover each pixel
    heat = torch.zeros(n, height, width, device=x.device)
    with eval_mode(model):
        logits = model(x)
        targets = check_targets(target, logits)
        base = logits.softmax(1)[torch.arange(n), targets]
        for i in range(n):
            for start in range(0, len(masks), batch_size):
                m = masks[start:start + batch_size]
                probs = model(torch.where(m, fill[i], x[i])).softmax(1)[:, targets[i]]
                drop = base[i] - probs                                 # (B,)
                heat[i] += (drop[:, None, None] * m[:, 0]).sum(0)
    return heat / coverage


# ---------------------------------------------------------------- Grad-CAM

def cam_from(activations: torch.Tensor, gradients: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) in [0, 1] from a layer's activations A and the gradients dy_c/dA (N, K, h, w)."""
    weights = gradients.mean(dim=(2, 3), keepdim=True)       # alpha_k: spatial mean of the gradient, per channel
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True))  # keep only evidence *for* the class
    cam = minmax(cam)                                         # [0, 1] at the layer's resolution
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    return minmax(cam)[:, 0]                                  # again: upsampling moves the extremes


def grad_cam(model: nn.Module, x: torch.Tensor, layer: "str | nn.Module",
             target: "int | list[int] | torch.Tensor | None" = None) -> torch.Tensor:
    """Grad-CAM heatmaps (N, H, W) in [0, 1] for the target class (None: predicted) at `layer`.

    The class score is the raw logit. A map with no positive evidence (all zero after the ReLU)
    is returned as all zeros.
    """
    x = as_batch(x).to(model_device(model)).detach().requires_grad_(True)  # so a frozen model has a graph too
    name, module = get_layer(model, layer)
    with eval_mode(model), capture(model, [module], keep_graph=True) as store, torch.enable_grad():
        logits = model(x)
        acts = _one_call(store, name)
        if acts.ndim != 4:
            raise ValueError(f"Grad-CAM needs a layer with (N, C, H, W) output; {name!r} gives {tuple(acts.shape)}")
        targets = check_targets(target, logits)
        score = logits.gather(1, targets[:, None]).sum()      # images are independent: one backward for all
        grads, = torch.autograd.grad(score, acts)
    return cam_from(acts.detach(), grads, x.shape[-2:]).detach()


# ---------------------------------------------------------------- guided backpropagation

@contextmanager
def guided_relus(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every nn.ReLU of the model passes gradient only where its input and the incoming gradient are > 0.

    A forward hook on each ReLU module puts a clamp(min=0) hook on that call's output tensor; the
    ReLU's own backward then multiplies by (input > 0). No module is replaced, so shared ReLU
    instances and ReLU(inplace=True) work; functional relus (torch.relu in forward) are not guided.
    """
    def clamp_incoming(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if output.requires_grad:
            output.register_hook(lambda grad: grad.clamp(min=0))

    relus = {id(m): m for m in model.modules() if isinstance(m, nn.ReLU)}
    if not relus:
        raise ValueError(f"{type(model).__name__} has no nn.ReLU modules: guided backpropagation has nothing to guide")
    handles = []
    try:
        for module in relus.values():
            handles.append(module.register_forward_hook(clamp_incoming))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Guided backpropagation (N, C, H, W): the gradient of the target logit w.r.t. the input pixels, through guided ReLUs."""
    x = as_batch(x).to(model_device(model)).detach().requires_grad_(True)
    with eval_mode(model), guided_relus(model), torch.enable_grad():
        logits = model(x)
        targets = check_targets(target, logits)
        grad, = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x)
    return grad.detach()


def guided_grad_cam(model: nn.Module, x: torch.Tensor, layer: Layer, target: Target = None) -> torch.Tensor:
    """Guided Grad-CAM (N, C, H, W): guided backprop (fine detail) times the Grad-CAM map (class-discriminative)."""
    x = as_batch(x)
    if target is None:
        with torch.no_grad(), eval_mode(model):
            target = model(x.to(model_device(model))).argmax(1)
    return guided_backprop(model, x, target) * grad_cam(model, x, layer, target)[:, None]


def gradient_image(gradients: torch.Tensor) -> torch.Tensor:
    """Gradients (N, C, H, W) as viewable images in [0, 1]: per image, centre, scale to 0.1 std, shift to 0.5."""
    g = as_batch(gradients).detach().float()
    g = g - g.mean(dim=(1, 2, 3), keepdim=True)
    g = g / (g.std(dim=(1, 2, 3), keepdim=True) + 1e-5) * 0.1
    return (g + 0.5).clamp(0, 1)


# ---------------------------------------------------------------- a sanity check of saliency

@torch.no_grad()
def occlude_peak_and_least(model: nn.Module, x: torch.Tensor, heatmaps: torch.Tensor, target: Target,
                           patch: int = 8, fill: float = 0.5) -> dict[str, list[float]]:
    """Hide the patch x patch window with the highest and with the lowest mean heat; return each drop in the class logit."""
    x = as_batch(x).to(model_device(model))
    heatmaps = heatmaps.to(x.device)
    if heatmaps.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"heatmaps must have shape (N, H, W) = {(x.shape[0], *x.shape[-2:])}, "
                         f"got {tuple(heatmaps.shape)}")
    window = F.avg_pool2d(heatmaps[:, None], patch, stride=1)[:, 0]   # mean heat of every patch position
    flat = window.flatten(1)
    width = window.shape[-1]
    with eval_mode(model):
        logits = model(x)
        targets = check_targets(target, logits)
        base = logits.gather(1, targets[:, None])[:, 0]
        drops = {}
        for key, index in (("peak", flat.argmax(1)), ("least", flat.argmin(1))):
            hidden = torch.cat([occlude(x[i], int(j) // width, int(j) % width, patch, patch, fill)
                                for i, j in enumerate(index)])
            drops[key] = (base - model(hidden).gather(1, targets[:, None])[:, 0]).tolist()
    return drops


# ---------------------------------------------------------------- exploring a model

def explore(model: nn.Module, images: torch.Tensor, labels: Sequence[int] | torch.Tensor, classes: Sequence[str],
            layers: Sequence[Layer], caption: str | None = None, size: float = 1.7) -> None:
    """Grad-CAM by image, class and layer: a static grid (first image: layers x its 3 likeliest classes), then live pickers.

    The pickers (helpers.widgets.interactive) draw the chosen Grad-CAM and guided Grad-CAM only
    when a control changes, so a headless run computes the static grid alone.
    """
    from .plots import _as_image, banner, overlay, show
    from .widgets import interactive

    images = as_batch(images).detach().cpu()
    labels = torch.as_tensor(labels).flatten().tolist()
    names = [get_layer(model, layer)[0] for layer in layers]
    with torch.no_grad(), eval_mode(model):
        probs = model(images.to(model_device(model))).softmax(1).cpu()
    if probs.shape[1] != len(classes):
        raise ValueError(f"the model has {probs.shape[1]} outputs but {len(classes)} class names were given")

    def draw_cam(ax: plt.Axes, index: int, klass: int, layer: str) -> None:
        overlay(ax, images[index], grad_cam(model, images[index], layer, klass)[0])
        ax.set_title(f"{layer}: {classes[klass]} ({probs[index, klass]:.0%})", fontsize=7)
        ax.axis("off")

    top = probs[0].argsort(descending=True)[:3].tolist()
    fig, axes = plt.subplots(len(names), len(top), figsize=(size * len(top), size * len(names)), squeeze=False)
    for r, layer in enumerate(names):
        for c, klass in enumerate(top):
            draw_cam(axes[r, c], 0, klass, layer)
    fig.suptitle(f"image 0 (true: {classes[labels[0]]}): Grad-CAM per layer (rows) and class (columns)", fontsize=9)
    fig.tight_layout()
    show(banner(fig, caption))

    def figure(image: int, klass: int, layer: str) -> plt.Figure:
        fig, axes = plt.subplots(1, 3, figsize=(3 * size * 1.4, size * 1.6))
        overlay(axes[0], images[image])
        axes[0].set_title(f"true: {classes[labels[image]]}", fontsize=8)
        axes[0].axis("off")
        draw_cam(axes[1], image, klass, layer)
        guided = guided_grad_cam(model, images[image], layer, klass)
        axes[2].imshow(_as_image(gradient_image(guided)[0]), vmin=0, vmax=1, interpolation="nearest")
        axes[2].set_title("guided Grad-CAM", fontsize=8)
        axes[2].axis("off")
        return fig

    try:
        import ipywidgets as widgets
    except ImportError:
        return
    interactive(figure, {
        "image": widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="image", continuous_update=False),
        "klass": widgets.Dropdown(options=[(name, i) for i, name in enumerate(classes)], value=top[0],
                                  description="class"),
        "layer": widgets.Dropdown(options=names, value=names[-1], description="layer")}, draw_now=False)


# ---------------------------------------------------------------- monitoring training

class TrainingSnapshots:
    """A `fit` callback: after every epoch, Grad-CAM and mean activation maps of a few fixed images.

    Call it once before training (epoch 0) to see the untrained network too. `timeline()` draws
    the snapshots: rows are images, columns epochs.
    """

    def __init__(self, images: torch.Tensor, labels: Sequence[int] | torch.Tensor, layer: Layer,
                 classes: Sequence[str] | None = None):
        self.images = as_batch(images).detach().cpu().clone()
        self.labels = torch.as_tensor(labels, dtype=torch.long).flatten().cpu()
        if len(self.labels) != len(self.images):
            raise ValueError(f"need one label per image: {len(self.images)} images, {len(self.labels)} labels")
        self.layer = layer
        self.classes = list(classes) if classes is not None else None
        self.snapshots: list[dict[str, Any]] = []

    def __call__(self, epoch: int, model: nn.Module, history: Any = None) -> None:
        x = self.images.to(model_device(model))
        name, _ = get_layer(model, self.layer)
        cams = grad_cam(model, x, name, self.labels)            # evidence for the *true* class
        acts = activations(model, x, [name])[name]
        with torch.no_grad(), eval_mode(model):
            probs = model(x).softmax(1).cpu()
        val_acc = getattr(history, "val_acc", None)
        self.snapshots.append({
            "epoch": int(epoch),
            "cam": cams.cpu(),
            "activation": minmax(acts.abs().mean(1)).cpu(),      # where the layer responds, any channel
            "dead_fraction": float((acts.flatten(2).amax(2) <= 0).all(0).float().mean()),  # silent channels
            "pred": probs.argmax(1).tolist(),
            "prob_true": probs[torch.arange(len(x)), self.labels].tolist(),
            "val_acc": float(val_acc[-1]) if val_acc else None,
        })

    def timeline(self, kind: str = "cam", caption: str | None = None, max_epochs: int = 8,
                 size: float = 1.35) -> plt.Figure:
        """Rows: the fixed images; columns: epochs; each cell the Grad-CAM (or activation) map and the prediction."""
        from .plots import banner, overlay

        if kind not in ("cam", "activation"):
            raise ValueError(f"kind must be 'cam' or 'activation', got {kind!r}")
        if not self.snapshots:
            raise ValueError("no snapshots yet: pass this object in fit(callbacks=[...]) or call it")
        shots = self.snapshots
        if len(shots) > max_epochs:  # evenly spaced, always with the first and the last epoch
            keep = np.unique(np.linspace(0, len(shots) - 1, max_epochs).round().astype(int))
            shots = [shots[i] for i in keep]
        n = len(self.images)
        fig, axes = plt.subplots(n, len(shots), figsize=(size * len(shots) + 0.6, size * n + 0.5), squeeze=False)
        for j, shot in enumerate(shots):
            acc = f"\nval acc {shot['val_acc']:.0%}" if shot["val_acc"] is not None else ""
            axes[0, j].set_title(f"epoch {shot['epoch']}{acc}", fontsize=8)
            for i in range(n):
                ax = axes[i, j]
                if kind == "cam":
                    overlay(ax, self.images[i], shot["cam"][i])
                else:
                    ax.imshow(shot["activation"][i].numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
                pred = shot["pred"][i]
                name = self.classes[pred] if self.classes else str(pred)
                ax.set_xlabel(f"{name} {shot['prob_true'][i]:.0%}", fontsize=7,
                              color="green" if pred == int(self.labels[i]) else "red")
                ax.set_xticks([])
                ax.set_yticks([])
        for i in range(n):
            label = self.classes[int(self.labels[i])] if self.classes else str(int(self.labels[i]))
            axes[i, 0].set_ylabel(f"true: {label}", fontsize=8)
        fig.suptitle(("Grad-CAM for the true class" if kind == "cam" else "mean |activation|")
                     + f" at {get_layer_name(self.layer)}; below each: prediction, p(true class)", fontsize=9)
        fig.tight_layout()
        return banner(fig, caption)


def get_layer_name(layer: Layer) -> str:
    """A printable name for a layer given by name or module."""
    return layer if isinstance(layer, str) else type(layer).__name__
