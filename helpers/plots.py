"""Plots: learning curves, image grids, heatmap overlays, per-layer curves, 2-D embeddings, tables; stand-in banners."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .training import History


def banner(fig: plt.Figure, caption: str | None) -> plt.Figure:
    """Write `caption` under the figure (used to say 'offline stand-in data' on every such figure)."""
    if caption:
        fig.text(0.5, -0.02, caption, ha="center", va="top", fontsize=9, style="italic",
                 color="#a0361c", wrap=True)
    return fig


def learning_curves(histories: History | Mapping[str, History], metrics: Sequence[str] = ("loss", "acc"),
                    caption: str | None = None, title: str | None = None) -> plt.Figure:
    """Train (dashed) and validation (solid) curves per metric, one colour per run."""
    if isinstance(histories, History):
        histories = {"model": histories}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, (name, h) in enumerate(histories.items()):
            colour = f"C{i % 10}"
            ax.plot(h.epochs, getattr(h, f"train_{metric}"), "--", color=colour, alpha=0.8)
            if getattr(h, f"val_{metric}"):
                ax.plot(h.epochs, getattr(h, f"val_{metric}"), "-", color=colour, label=name)
                if h.best_epoch is not None:
                    ax.axvline(h.best_epoch, color=colour, lw=0.6, alpha=0.5)
            else:
                ax.lines[-1].set_label(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: train (dashed) vs validation (solid)", fontsize=10)
        ax.grid(alpha=0.3)
    if len(histories) <= 12:
        axes[0][-1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return banner(fig, caption)


def _as_image(x: torch.Tensor | np.ndarray) -> np.ndarray:
    x = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)
    if x.ndim == 3 and x.shape[0] in (1, 3):
        x = x.transpose(1, 2, 0)
    if x.dtype != np.uint8 and x.max() > 1.0 + 1e-6:
        x = x / 255.0
    return x.squeeze()


def image_grid(images: torch.Tensor, titles: Sequence[str] | None = None, ncols: int = 8,
               caption: str | None = None, title: str | None = None, size: float = 1.4,
               title_colors: Sequence[str] | None = None) -> plt.Figure:
    """A grid of images (N, C, H, W) in [0, 1] or uint8, with optional per-image titles."""
    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = _as_image(images[i])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8, color=title_colors[i] if title_colors else "black")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return banner(fig, caption)


def overlay(ax: plt.Axes, image: torch.Tensor | np.ndarray, heatmap: torch.Tensor | np.ndarray | None = None,
            alpha: float = 0.5, cmap: str = "jet") -> None:
    """Draw an image in [0, 1] on `ax` and, if given, a heatmap in [0, 1] over it (the book's one overlay)."""
    img = _as_image(image)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    if heatmap is not None:
        heat = heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) else heatmap
        ax.imshow(np.squeeze(heat), cmap=cmap, alpha=alpha, vmin=0, vmax=1, interpolation="nearest")


def explanation_grid(images: torch.Tensor, rows: Mapping[str, torch.Tensor], titles: Sequence[str] | None = None,
                     caption: str | None = None, alpha: float = 0.5, size: float = 1.5) -> plt.Figure:
    """One column per image: the image, then one row per explanation ((N, H, W) maps overlaid, (N, C, H, W) shown)."""
    images = images[None] if images.ndim == 3 else images
    n = len(images)
    fig, axes = plt.subplots(1 + len(rows), n, figsize=(size * n + 1.2, size * (1 + len(rows))), squeeze=False)
    for i in range(n):
        overlay(axes[0, i], images[i])
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=7)
        for r, maps in enumerate(rows.values(), start=1):
            m = maps[i].detach().float().cpu()
            if m.ndim == 2:
                overlay(axes[r, i], images[i], m, alpha)
            else:
                axes[r, i].imshow(_as_image(m), vmin=0, vmax=1, interpolation="nearest")
    for r, label in enumerate(["image", *rows]):
        axes[r, 0].text(-0.08, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center",
                        fontsize=8, rotation=90)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return banner(fig, caption)


def per_layer(curves: Mapping[str, Sequence[float]], xlabels: Sequence[str] | None = None,
              ylabel: str = "", caption: str | None = None, title: str | None = None,
              logy: bool = False) -> plt.Figure:
    """One line per named curve over layers (e.g. SI and CSI per module, gradient norm per layer)."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, values in curves.items():
        ax.plot(range(len(values)), values, marker="o", ms=3, label=name)
    if xlabels is not None:
        ax.set_xticks(range(len(xlabels)))
        ax.set_xticklabels(xlabels, rotation=90, fontsize=7)
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return banner(fig, caption)


def embedding_2d(features: torch.Tensor | np.ndarray, labels: Sequence[int], classes: Sequence[str],
                 method: str = "auto", title: str = "", caption: str | None = None,
                 ax: plt.Axes | None = None, seed: int = 0) -> tuple[plt.Figure, str]:
    """Scatter of a 2-D projection (UMAP if requested/installed, else PCA); returns the figure and method used."""
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    used = method
    if method in ("auto", "umap"):
        try:
            import umap  # noqa: F401  (imported only here: the import and first fit are slow)
            used = "umap"
        except ImportError:
            if method == "umap":
                raise ImportError("umap-learn is not installed: pip install umap-learn, or use method='pca'")
            used = "pca"
    if used == "umap":
        import umap
        points = umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    elif used == "pca":
        from sklearn.decomposition import PCA
        points = PCA(n_components=2, random_state=seed).fit_transform(x)
    else:
        raise ValueError(f"Unknown projection {method!r}; use 'auto', 'umap' or 'pca'")
    fig = ax.figure if ax is not None else plt.figure(figsize=(5, 4.5))
    ax = ax if ax is not None else fig.add_subplot(111)
    labels = np.asarray(labels)
    for c, name in enumerate(classes):
        sel = labels == c
        ax.scatter(points[sel, 0], points[sel, 1], s=4, color=plt.cm.tab10(c % 10), label=name)
    ax.set_title(f"{title} ({used.upper()})", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=7, loc="best")
    return banner(fig, caption), used


def confusion(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str],
              caption: str | None = None, title: str = "Confusion matrix") -> plt.Figure:
    """Confusion matrix (scikit-learn) with counts."""
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ConfusionMatrixDisplay.from_predictions(np.asarray(y_true), np.asarray(y_pred),
                                            display_labels=list(classes), ax=ax, colorbar=False)
    ax.set_title(title)
    fig.tight_layout()
    return banner(fig, caption)


def results_table(rows: Sequence[Mapping[str, Any]], percent: Sequence[str] = (), index: str | None = None,
                  caption: str | None = None):
    """A styled pandas table of result rows; columns in `percent` are shown as percentages.

    `caption` (e.g. a dataset's caption, which says when the data are stand-ins) is shown above it.
    Its HTML id is derived from the table's labels and its plain-text form is the table itself,
    so a stored notebook output does not change between runs (pandas would use a random id and
    an object address).
    """
    import hashlib

    import pandas as pd
    from pandas.io.formats.style import Styler

    class ResultsTable(Styler):
        def __repr__(self) -> str:
            return self.data.to_string()

    frame = pd.DataFrame(list(rows))
    if index is not None:
        frame = frame.set_index(index)
    labels = "|".join(map(str, [*frame.columns, *frame.index, *frame.iloc[:, 0].astype(str)]))
    uuid = "results-" + hashlib.sha1(labels.encode()).hexdigest()[:8]
    table = ResultsTable(frame, uuid=uuid, caption=caption)
    return table.format({c: "{:.2%}" for c in percent if c in frame.columns}, na_rep="-")


def show(fig: plt.Figure) -> None:
    """Display a figure once as a PNG and close it (no duplicate image, no '<Figure size ...>' repr).

    The PNG is rendered here rather than by the notebook's matplotlib backend, so that headless
    runs (papermill with MPLBACKEND=Agg) store the same image as an interactive session.
    """
    import io

    from IPython.display import Image, display

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    display(Image(data=buffer.getvalue(), format="png"))
