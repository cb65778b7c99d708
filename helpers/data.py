"""Datasets: real ones through torchvision, offline stand-ins generated from a seed, local .npz files; splits and loaders."""
from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedShuffleSplit
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset

from .settings import Capped, uncapped

DATASETS = ("mnist", "svhn", "cifar10")
SPLITS = ("train", "test")
DIGIT_CLASSES = [str(d) for d in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
SHAPES10_CLASSES = ["disk", "square", "triangle", "ring", "cross",
                    "diamond", "h-stripes", "v-stripes", "checker", "dots"]
STANDIN_NAMES = {"mnist": "digits", "svhn": "street digits", "cifar10": "shapes10"}
REAL_NAMES = {"mnist": "MNIST", "svhn": "SVHN", "cifar10": "CIFAR-10"}
# What torchvision expects under the data root, for the manual-placement hint of a failed download.
MANUAL_FILES = {
    "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte(.gz)",
    "svhn": "train_32x32.mat and test_32x32.mat (from the SVHN website, 'Format 2')",
    "cifar10": "cifar-10-python.tar.gz (or its extracted folder cifar-10-batches-py/)",
}
# Samples per split of the real datasets: what a rehearsal's stand-ins stand for when a profile loads it all.
REAL_SIZES = {("mnist", "train"): 60000, ("mnist", "test"): 10000, ("svhn", "train"): 73257,
              ("svhn", "test"): 26032, ("cifar10", "train"): 50000, ("cifar10", "test"): 10000}


class DatasetUnavailableError(RuntimeError):
    """A real dataset could not be loaded or downloaded."""


@dataclass
class ImageSet:
    """Images as uint8 (N, C, H, W) with int64 labels, and where they came from."""

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    source: str
    represents: int | None = None  # a rehearsal's capped set: how many samples the real run has here

    def __post_init__(self) -> None:
        check_images(self.x, self.y, len(self.classes))
        if self.represents is not None:
            _CAPPED_SETS.append(weakref.ref(self))

    def __len__(self) -> int:
        return len(self.y)

    @property
    def standin(self) -> bool:
        """True for generated offline stand-in data."""
        return self.source.startswith("stand-in")

    @property
    def caption(self) -> str:
        """A caption that says honestly what data this is."""
        if self.standin:
            return (f"Offline stand-in data ('{STANDIN_NAMES[self.name]}', generated) - "
                    f"not the real {REAL_NAMES[self.name]} benchmark")
        return f"{REAL_NAMES[self.name]} {self.split} ({self.source})"

    def subset(self, index: Sequence[int] | np.ndarray | torch.Tensor) -> "ImageSet":
        """A new ImageSet holding only the samples at `index`."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        represents = None if self.represents is None else round(self.represents * len(index) / max(len(self), 1))
        return ImageSet(self.name, self.split, self.x[index], self.y[index], self.classes, self.source, represents)

    def dataset(self, transform: Callable | None = None) -> "ImageDataset":
        """A torch Dataset yielding float images in [0, 1] (after `transform`) and labels."""
        return ImageDataset(self.x, self.y, transform, self.represents)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as float in [0, 1] and the labels."""
        return self.x.float() / 255.0, self.y


class ImageDataset(Dataset):
    """uint8 images converted to float [0, 1] per item, then an optional per-sample transform."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform: Callable | None = None,
                 represents: int | None = None):
        self.x, self.y, self.transform, self.represents = x, y, transform, represents

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # A list of indices (from `loader`'s BatchSampler) fetches a whole batch in one indexing operation;
        # any other index (int, numpy or 0-d tensor) is one sample.
        if isinstance(i, list) and self.transform is not None:
            raise TypeError("a per-sample transform needs one index at a time, not a batch of indices")
        image = self.x[i].float() / 255.0
        if self.transform is not None:
            image = self.transform(image)
        return image, self.y[i]


def check_images(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
    """Raise a clear error unless x is uint8 (N, C, H, W) and y holds N labels in 0..num_classes-1."""
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"images must be uint8 with shape (N, C, H, W); got {x.dtype} {tuple(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"need one label per image: {len(x)} images but labels of shape {tuple(y.shape)}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}; found {int(y.min())}..{int(y.max())}")


def data_root() -> Path:
    """Where real datasets live: $HELPERS_DATA_ROOT, else ~/.cache/dl-dissected/data."""
    return Path(os.environ.get("HELPERS_DATA_ROOT", "~/.cache/dl-dissected/data")).expanduser()


def load(name: str, split: str = "train", *, source: str, n: int | None = None, seed: int = 0) -> ImageSet:
    """Load dataset `name` ('mnist', 'svhn', 'cifar10') from `source`: 'standin', 'real' or a folder of .npz files.

    There is no default source on purpose: a bare call must not silently hand out stand-ins (the
    notebooks pass the profile's `run.data`).
    """
    name, split = name.lower(), split.lower()
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose 'train' or 'test'.")
    if source == "standin":
        data = standin(name, split, n=n, seed=seed)
    elif source == "real":
        data = load_real(name, split)
    elif os.path.isdir(source):
        data = load_npz(Path(source) / f"{name}_{split}.npz", name=name, split=split)
    else:
        raise ValueError(f"Unknown data source {source!r}: 'standin', 'real' or a folder of .npz files.")
    whole = REAL_SIZES[name, split] if source == "standin" else len(data)
    if n is not None and source != "standin" and n < len(data):
        data = data.subset(stratified_subset(data.y, n, seed))
    if isinstance(n, Capped):  # a rehearsal: remember how many samples the real run loads here
        data.represents = min(uncapped(n) or whole, whole)
        _CAPPED_SETS.append(weakref.ref(data))
    return data


_CAPPED_SETS: list[weakref.ref] = []  # a rehearsal's capped sets, to recognise their labels in tensor datasets


def represented(dataset: Dataset) -> int | None:
    """How many samples of the real run a rehearsal's training set stands for (None if it is not a capped set).

    An ImageDataset knows; a TensorDataset (features the chapter computed from a capped set) is
    recognised by its labels, which are those of the capped set it came from.
    """
    if getattr(dataset, "represents", None) is not None:
        return dataset.represents
    if isinstance(dataset, TensorDataset):
        labels = dataset.tensors[-1]
        for ref in _CAPPED_SETS:
            data = ref()
            if data is not None and len(data.y) == len(labels) and torch.equal(data.y, labels.cpu()):
                return data.represents
    return None


def load_real(name: str, split: str, root: Path | None = None) -> ImageSet:
    """Real MNIST / SVHN / CIFAR-10 through torchvision, downloaded into the data root if missing."""
    import torchvision.datasets as tvd

    root = Path(root or data_root())
    train = split == "train"
    try:
        if name == "mnist":
            ds = tvd.MNIST(root, train=train, download=True)
            x, y = ds.data.numpy()[:, None], np.asarray(ds.targets)
        elif name == "svhn":
            ds = tvd.SVHN(root / "SVHN", split=split, download=True)
            x, y = ds.data, np.asarray(ds.labels)
        else:
            ds = tvd.CIFAR10(root, train=train, download=True)
            x, y = ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets)
    except Exception as error:  # torchvision raises URLError, RuntimeError, OSError... for one cause
        raise DatasetUnavailableError(
            f"Could not load or download {REAL_NAMES[name]} ({split}) into {root}: {error}.\n"
            f"Fix: connect to the internet and re-run, or place {MANUAL_FILES[name]} under "
            f"{root if name != 'svhn' else root / 'SVHN'} (set HELPERS_DATA_ROOT to use another folder), "
            f"or pass a folder of {name}_{split}.npz files as DATA, "
            f"or run offline on the stand-ins with PROFILE='smoke' / DATA='standin'."
        ) from error
    y = np.where(y == 10, 0, y)  # some SVHN formats label the digit 0 as 10
    return ImageSet(name, split, torch.from_numpy(np.ascontiguousarray(x)),
                    torch.as_tensor(y, dtype=torch.long), class_names(name, False), "torchvision")


def load_npz(path: str | Path, name: str = "mnist", split: str = "train") -> ImageSet:
    """A local .npz with `x` uint8 (N, H, W[, C]) and `y` int labels (instructors' own subsets)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"No file {path}: expected an .npz with arrays 'x' (uint8 N,H,W[,C]) and 'y'.")
    with np.load(path) as archive:
        if "x" not in archive or "y" not in archive:
            raise ValueError(f"{path} must hold arrays 'x' and 'y'; it holds {list(archive.keys())}")
        x, y = archive["x"], archive["y"]
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise ValueError(f"{path}: 'x' must be uint8 (N,H,W) or (N,H,W,C); got {x.dtype} {x.shape}")
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    y = np.where(y == 10, 0, y) if name == "svhn" else y
    return ImageSet(name, split, torch.from_numpy(np.ascontiguousarray(x)),
                    torch.as_tensor(y, dtype=torch.long), class_names(name, False), f"npz: {path.name}")


def class_names(name: str, standin_data: bool) -> list[str]:
    """Class names of a dataset (the stand-in of CIFAR-10 has its own)."""
    if name == "cifar10":
        return SHAPES10_CLASSES if standin_data else CIFAR10_CLASSES
    return DIGIT_CLASSES


# ---------------------------------------------------------------- splits and loaders

def stratified_split(y: torch.Tensor | np.ndarray, val_fraction: float, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/validation split (scikit-learn StratifiedShuffleSplit)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    y = np.asarray(y)
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(y)), y))
    return np.sort(train_idx), np.sort(val_idx)


def stratified_subset(y: torch.Tensor | np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a class-balanced random subset of size n (seeded)."""
    y = np.asarray(y)
    if n >= len(y):
        return np.arange(len(y))
    _, idx = stratified_split(y, n / len(y), seed)
    return idx


def loader(dataset: Dataset | ImageSet, batch_size: int = 128, shuffle: bool = False,
           seed: int = 0, device: torch.device | str | None = None) -> DataLoader:
    """A DataLoader with seeded shuffling; workers and pinned memory only on CUDA (0 workers on CPU)."""
    if isinstance(dataset, ImageSet):
        dataset = dataset.dataset()
    cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    workers = min(4, os.cpu_count() or 1) if cuda else 0
    generator = torch.Generator().manual_seed(seed)
    common = dict(generator=generator, num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0)
    if isinstance(dataset, ImageDataset) and dataset.transform is None:
        # Without a per-sample transform, fetch each batch by one indexing operation: the same batches in
        # the same order as the per-sample loader (same samplers, same generator), several times faster.
        order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        return DataLoader(dataset, batch_size=None, sampler=BatchSampler(order, batch_size, drop_last=False),
                          **common)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, **common)


def gray_to_rgb32(data: ImageSet) -> ImageSet:
    """MNIST-like 1x28x28 images as 3x32x32 (channel copy, bilinear resize) to sit next to SVHN."""
    x = data.x.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    x = x.round().clamp(0, 255).to(torch.uint8)
    return ImageSet(data.name, data.split, x, data.y, data.classes, data.source, data.represents)


# ---------------------------------------------------------------- offline stand-ins

def standin(name: str, split: str, n: int | None = None, seed: int = 0) -> ImageSet:
    """A generated stand-in for `name`: 'digits' (MNIST), 'street digits' (SVHN), 'shapes10' (CIFAR-10)."""
    n = n if n is not None else (3000 if split == "train" else 1000)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    # Train and test come from different generator streams (and, for digits, different writers' samples).
    rng = np.random.default_rng([seed, SPLITS.index(split), DATASETS.index(name)])
    if name == "mnist":
        x, y = digits_images(split, n, rng)
    elif name == "svhn":
        x, y = street_digits_images(split, n, rng)
    else:
        x, y = shapes10_images(n, rng)
    return ImageSet(name, split, torch.from_numpy(x), torch.from_numpy(y),
                    class_names(name, True), f"stand-in: {STANDIN_NAMES[name]}")


def _digit_pool(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8x8 digits, split 70/30 (stratified, fixed) into train and test pools."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    train_idx, test_idx = stratified_split(digits.target, 0.3, seed=0)
    idx = train_idx if split == "train" else test_idx
    return digits.images[idx].astype(np.float32) / 16.0, digits.target[idx].astype(np.int64)


def _jitter(images: torch.Tensor, rng: np.random.Generator, rotate: float, shift: float,
            scale: tuple[float, float]) -> torch.Tensor:
    """Random affine jitter of a batch (N, C, H, W), parameters drawn from `rng`."""
    n = images.shape[0]
    angle = np.deg2rad(rng.uniform(-rotate, rotate, n))
    s = rng.uniform(*scale, n)
    tx, ty = rng.uniform(-shift, shift, (2, n))
    cos, sin = np.cos(angle) / s, np.sin(angle) / s
    theta = np.stack([np.stack([cos, -sin, tx], 1), np.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(torch.tensor(theta, dtype=torch.float32), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _render_digits(split: str, n: int, rng: np.random.Generator, box: int, size: int,
                   rotate: float = 10.0, shift: float = 0.08) -> tuple[torch.Tensor, np.ndarray]:
    """n jittered real digits from the split's pool, upsampled into a `box` inside a size x size canvas."""
    pool, labels = _digit_pool(split)
    pick = rng.integers(0, len(pool), n)
    digits = torch.from_numpy(pool[pick])[:, None]
    digits = F.interpolate(digits, size=(box, box), mode="bicubic", align_corners=False).clamp(0, 1)
    pad = (size - box) // 2
    canvas = F.pad(digits, (pad, size - box - pad, pad, size - box - pad))
    # Thicken some strokes a little, as pens differ.
    thick = torch.from_numpy(rng.random(n) < 0.4)
    canvas[thick] = torch.maximum(canvas[thick], F.max_pool2d(canvas[thick], 3, 1, 1) * 0.8)
    canvas = _jitter(canvas, rng, rotate, shift, (0.9, 1.1))
    return canvas.clamp(0, 1), labels[pick]


def digits_images(split: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """'digits': real scikit-learn handwritten digits resampled to MNIST's 28x28 grayscale, jittered."""
    canvas, labels = _render_digits(split, n, rng, box=20, size=28)
    return (canvas * 255).round().to(torch.uint8).numpy(), labels


def _backgrounds(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Cluttered coloured backgrounds: a colour gradient, soft blobs and pixel noise, (N, 3, S, S) in [0,1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(0, 1, (2, n, 3, 1, 1)).astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi, n)[:, None, None, None]
    ramp = (np.cos(direction) * xx + np.sin(direction) * yy + 1) / 2
    bg = c0 * (1 - ramp) + c1 * ramp
    for _ in range(3):  # soft coloured blobs
        cx, cy = rng.uniform(0, 1, (2, n, 1, 1, 1))
        radius = rng.uniform(0.1, 0.35, (n, 1, 1, 1))
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius ** 2))
        colour = rng.uniform(0, 1, (n, 3, 1, 1))
        bg = bg * (1 - 0.5 * blob) + 0.5 * blob * colour
    bg = bg + rng.normal(0, 0.04, bg.shape)
    return np.clip(bg, 0, 1).astype(np.float32)


def street_digits_images(split: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """'street digits': the same real digits in colour at 32x32 on clutter, with distractor digits at the sides."""
    size = 32
    centre, labels = _render_digits(split, n, rng, box=22, size=size, rotate=6, shift=0.05)
    # House numbers have neighbours: a partial digit on the left and/or right of the centred one.
    left, _ = _render_digits(split, n, rng, box=22, size=size, rotate=6, shift=0.05)
    right, _ = _render_digits(split, n, rng, box=22, size=size, rotate=6, shift=0.05)
    offset = int(rng.integers(19, 23))
    side = torch.zeros_like(centre)
    side[..., : size - offset] = left[..., offset:]
    side[..., offset:] = torch.maximum(side[..., offset:], right[..., : size - offset])
    keep = torch.from_numpy(rng.random((n, 1, 1, 1)) < 0.8).float()
    mask = torch.maximum(centre, side * keep).numpy()
    bg = _backgrounds(n, size, rng)
    # Ink colour contrasts with the background's mean brightness (dark on light or light on dark).
    light_bg = bg.mean(axis=(1, 2, 3)) > 0.5
    ink = np.where(light_bg[:, None], rng.uniform(0.0, 0.35, (n, 3)), rng.uniform(0.65, 1.0, (n, 3)))
    ink = ink[:, :, None, None].astype(np.float32)
    image = bg * (1 - mask) + ink * mask
    image = F.avg_pool2d(torch.from_numpy(image), 3, 1, 1, count_include_pad=False).numpy() * 0.5 + image * 0.5
    image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)
    return (image * 255).round().astype(np.uint8), labels


def shapes10_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """'shapes10': 10 classes of coloured shapes and textures at 32x32 with varied position, scale, background."""
    size = 32
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cx, cy = rng.uniform(11, 21, (2, n, 1, 1))
    r = rng.uniform(6, 10.5, (n, 1, 1))
    angle = rng.uniform(-0.35, 0.35, (n, 1, 1))
    dx, dy = xx - cx, yy - cy
    u = np.cos(angle) * dx + np.sin(angle) * dy  # coordinates rotated by a small random angle
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    dist = np.sqrt(dx ** 2 + dy ** 2)
    period = rng.uniform(3.0, 5.0, (n, 1, 1))
    blob = (u / (r * 1.1)) ** 2 + (v / (r * 0.9)) ** 2 <= 1  # textures fill an ellipse
    masks = {
        0: dist <= r,
        1: (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85),
        2: (v <= r * 0.7) & (v >= -r * 0.9 + 1.8 * np.abs(u)),
        3: (dist <= r) & (dist >= r * 0.55),
        4: ((np.abs(u) <= r * 0.28) | (np.abs(v) <= r * 0.28)) & (np.abs(u) <= r) & (np.abs(v) <= r),
        5: np.abs(u) + np.abs(v) <= r,
        6: blob & (np.mod(v, period) < period / 2),
        7: blob & (np.mod(u, period) < period / 2),
        8: blob & ((np.floor(u / period) + np.floor(v / period)) % 2 == 0),
        9: blob & ((np.mod(u, period) - period / 2) ** 2 + (np.mod(v, period) - period / 2) ** 2
                   <= (period * 0.3) ** 2),
    }
    mask = np.zeros((n, size, size), dtype=np.float32)
    for label, m in masks.items():
        mask[labels == label] = m[labels == label]
    bg = _backgrounds(n, size, rng)
    colour = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    too_close = np.abs(colour.mean(1) - bg.mean(axis=(1, 2, 3))) < 0.25  # keep the shape visible
    colour[too_close] = 1 - colour[too_close]
    image = bg * (1 - mask[:, None]) + colour[:, :, None, None] * mask[:, None]
    image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)
    return (image * 255).round().astype(np.uint8), labels.astype(np.int64)


def digit_augmentation():
    """Chapter 3's augmentation: RandomAffine(5 degrees, 5% shift, scale 0.95-1.05); no flips (6 vs 9)."""
    from torchvision.transforms import v2

    return v2.RandomAffine(degrees=5, translate=(0.05, 0.05), scale=(0.95, 1.05))


def cifar_augmentation():
    """CIFAR training augmentation: random crop with 4-pixel padding and horizontal flip."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
