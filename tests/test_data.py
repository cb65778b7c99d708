import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from helpers import data


@pytest.mark.parametrize("name,shape", [("mnist", (1, 28, 28)), ("svhn", (3, 32, 32)), ("cifar10", (3, 32, 32))])
def test_standins_have_the_real_datasets_shapes_and_all_classes(name, shape):
    d = data.load(name, "train", source="standin", n=400, seed=0)
    assert d.x.dtype == torch.uint8 and tuple(d.x.shape[1:]) == shape
    assert sorted(d.y.unique().tolist()) == list(range(10))
    assert d.standin and "stand-in" in d.caption and "not the real" in d.caption


@pytest.mark.parametrize("name", data.DATASETS)
def test_standins_are_deterministic_and_seed_dependent(name):
    a = data.load(name, "test", n=50, seed=1, source="standin")
    b = data.load(name, "test", n=50, seed=1, source="standin")
    c = data.load(name, "test", n=50, seed=2, source="standin")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_digit_train_and_test_pools_are_disjoint():
    train_pool, _ = data._digit_pool("train")
    test_pool, _ = data._digit_pool("test")
    train_rows = {row.tobytes() for row in train_pool}
    overlap = sum(row.tobytes() in train_rows for row in test_pool)
    assert overlap <= 5  # load_digits itself holds a few exact duplicates


def test_street_digits_differ_from_digits_domain():
    street = data.load("svhn", "test", n=300, source="standin").x.float()
    digits = data.gray_to_rgb32(data.load("mnist", "test", n=300, source="standin")).x.float()
    assert street.shape == digits.shape == (300, 3, 32, 32)
    # digits are white on black; street digits sit on coloured clutter
    assert street.mean() > digits.mean() + 30
    assert street[:, 0].sub(street[:, 1]).abs().mean() > 5  # colour, not grey


def test_stand_in_classes_are_learnable_by_a_linear_model():
    from sklearn.linear_model import LogisticRegression

    train = data.load("mnist", "train", n=1500, source="standin")
    test = data.load("mnist", "test", n=500, source="standin")
    clf = LogisticRegression(max_iter=300).fit(train.x.flatten(1).numpy() / 255, train.y.numpy())
    assert clf.score(test.x.flatten(1).numpy() / 255, test.y.numpy()) > 0.7


def test_gray_to_rgb32():
    d = data.gray_to_rgb32(data.load("mnist", "test", n=10, source="standin"))
    assert d.x.shape == (10, 3, 32, 32) and d.x.dtype == torch.uint8
    assert torch.equal(d.x[:, 0], d.x[:, 2])


def test_stratified_split_keeps_class_proportions_and_is_seeded():
    y = np.repeat(np.arange(10), [100, 50, 80, 120, 90, 60, 70, 110, 100, 20])
    train, val = data.stratified_split(y, 0.2, seed=0)
    assert len(set(train) & set(val)) == 0 and len(train) + len(val) == len(y)
    assert np.allclose(np.bincount(y[val]) / np.bincount(y), 0.2, atol=0.03)
    assert np.array_equal(val, data.stratified_split(y, 0.2, seed=0)[1])
    with pytest.raises(ValueError, match="val_fraction"):
        data.stratified_split(y, 1.5)


def test_npz_loader_roundtrip_and_errors(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (20, 32, 32, 3), dtype=np.uint8)
    y = np.arange(20) % 10
    y[0] = 10  # SVHN's label for the digit 0 in the .mat format
    np.savez(tmp_path / "svhn_train.npz", x=x, y=y)
    d = data.load("svhn", "train", source=str(tmp_path))
    assert d.x.shape == (20, 3, 32, 32) and d.y[0] == 0 and torch.equal(d.x[1].permute(1, 2, 0), torch.from_numpy(x[1]))
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(ValueError, match="'x' and 'y'"):
        data.load_npz(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="expected an .npz"):
        data.load_npz(tmp_path / "missing.npz")


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'"):
        data.load("imagenet", source="standin")
    with pytest.raises(ValueError, match="Unknown split"):
        data.load("mnist", "validation", source="standin")
    with pytest.raises(ValueError, match="'standin', 'real' or a folder"):
        data.load("mnist", source="/no/such/folder")
    # No default source: a bare call must not silently hand out stand-in data.
    with pytest.raises(TypeError, match="source"):
        data.load("mnist")


def test_labels_out_of_range_and_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        data.ImageSet("mnist", "train", torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 10]),
                      data.DIGIT_CLASSES, "test")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        data.ImageSet("mnist", "train", torch.zeros(2, 28, 28, dtype=torch.uint8), torch.tensor([0, 1]),
                      data.DIGIT_CLASSES, "test")


@pytest.mark.parametrize("name", data.DATASETS)
def test_unreachable_download_names_dataset_root_and_fixes(name, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("HELPERS_DATA_ROOT", str(tmp_path))
    with pytest.raises(data.DatasetUnavailableError) as info:
        data.load(name, "test", source="real")
    message = str(info.value)
    assert data.REAL_NAMES[name] in message and str(tmp_path) in message
    assert "place" in message and "standin" in message


def test_loader_batches_floats_in_unit_range():
    d = data.load("cifar10", "train", n=40, source="standin")
    x, y = next(iter(data.loader(d, batch_size=16, shuffle=True, seed=0, device="cpu")))
    assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32) and 0 <= x.min() and x.max() <= 1


@pytest.mark.parametrize("shuffle", [True, False])
def test_batched_loader_gives_exactly_the_per_sample_loaders_batches(shuffle):
    # The independent reference: a stock DataLoader fetching and collating one image at a time.
    from torch.utils.data import DataLoader

    d = data.load("mnist", "train", n=203, source="standin")
    ours = data.loader(d, batch_size=32, shuffle=shuffle, seed=5, device="cpu")
    reference = DataLoader(d.dataset(), batch_size=32, shuffle=shuffle,
                           generator=torch.Generator().manual_seed(5))
    assert len(ours) == len(reference) == 7
    state = torch.get_rng_state()
    for _ in range(2):  # two epochs: the second permutation must match too
        for (x, y), (x_ref, y_ref) in zip(ours, reference, strict=True):
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref) and x.dtype == x_ref.dtype
    # neither loader draws from the global RNG (dropout masks and initialisations stay reproducible)
    assert torch.equal(state, torch.get_rng_state())


def test_a_transformed_dataset_is_still_loaded_one_image_at_a_time():
    d = data.load("cifar10", "train", n=20, source="standin")
    flips = d.dataset(lambda image: image.flip(-1))
    x, _ = next(iter(data.loader(flips, batch_size=8, device="cpu")))
    assert torch.equal(x, d.x[:8].float().div(255).flip(-1))
    with pytest.raises(TypeError, match="one index at a time"):
        flips[[0, 1]]
    # numpy and tensor scalars are single indices (torch's Subset hands those on)
    from torch.utils.data import DataLoader, Subset

    x_subset, _ = next(iter(DataLoader(Subset(flips, np.arange(8)), batch_size=8)))
    assert torch.equal(x_subset, x) and torch.equal(flips[torch.tensor(3)][0], x[3])


# ---------------------------------------------------------------- the real loaders, on files in the real formats

def _images(n, shape, seed):
    """n random uint8 images of `shape` and balanced labels 0..9 (seeded)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % 10


def _write_mnist(root, split, x, y):
    """MNIST's IDX files (magic 0x0803 for images, 0x0801 for labels; big-endian sizes), as torchvision reads them."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    header = np.array([0x0803, len(x), *x.shape[1:]], dtype=">i4").tobytes()
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + x.tobytes())
    header = np.array([0x0801, len(y)], dtype=">i4").tobytes()
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header + y.astype(np.uint8).tobytes())


def _write_cifar10(root, split, x, y):
    """CIFAR-10's python batches: pickled dicts of 'data' (N, 3072: R, G, B planes) and 'labels'."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # (N, H, W, C) -> channel planes
    if split == "train":  # five batches: the loader concatenates them in order
        parts = np.array_split(np.arange(len(x)), 5)
        for i, part in enumerate(parts, 1):
            (folder / f"data_batch_{i}").write_bytes(pickle.dumps({"data": rows[part], "labels": y[part].tolist()}))
    else:
        (folder / "test_batch").write_bytes(pickle.dumps({"data": rows, "labels": y.tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": data.CIFAR10_CLASSES}))


def _write_svhn(root, split, x, y):
    """SVHN's 'Format 2' .mat: X (32, 32, 3, N) and y (N, 1), the digit 0 labelled 10."""
    from scipy.io import savemat

    (root / "SVHN").mkdir(parents=True, exist_ok=True)
    savemat(root / "SVHN" / f"{split}_32x32.mat",
            {"X": x.transpose(1, 2, 3, 0), "y": np.where(y == 0, 10, y).astype(np.uint8)[:, None]})


FORMATS = {"mnist": (_write_mnist, (28, 28)), "cifar10": (_write_cifar10, (32, 32, 3)),
           "svhn": (_write_svhn, (32, 32, 3))}


@pytest.fixture
def real_files(tmp_path, monkeypatch):
    """Write every dataset's files in its real on-disk format under a temporary HELPERS_DATA_ROOT."""
    import torchvision.datasets as tvd
    import torchvision.datasets.cifar
    import torchvision.datasets.utils

    # The files are ours, so torchvision's md5 checks of the published archives are bypassed (here only;
    # SVHN's download() goes through download_url, which skips the download when the file checks out).
    monkeypatch.setattr(tvd.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tvd.SVHN, "_check_integrity", lambda self: True)
    for module in (torchvision.datasets.cifar, torchvision.datasets.utils):
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)
    monkeypatch.setenv("HELPERS_DATA_ROOT", str(tmp_path))
    written = {}
    for seed, (name, (write, shape)) in enumerate(FORMATS.items()):
        for split, n in (("train", 60), ("test", 30)):
            x, y = _images(n, shape, seed * 2 + (split == "test"))
            write(tmp_path, split, x, y)
            written[name, split] = (x if x.ndim == 4 else x[..., None]).transpose(0, 3, 1, 2), y
    return written


@pytest.mark.parametrize("split", data.SPLITS)
@pytest.mark.parametrize("name", data.DATASETS)
def test_real_loader_returns_exactly_the_arrays_in_the_files(real_files, name, split):
    loaded = data.load(name, split, source="real")
    x, y = real_files[name, split]
    assert loaded.source == "torchvision" and not loaded.standin and loaded.classes == data.class_names(name, False)
    assert loaded.x.dtype == torch.uint8 and torch.equal(loaded.x, torch.from_numpy(x))
    assert torch.equal(loaded.y, torch.from_numpy(y).long())  # SVHN's label 10 is the digit 0 again


def test_real_loader_subsets_are_rows_of_the_files(real_files):
    loaded = data.load("cifar10", "train", source="real", n=20, seed=3)
    x, y = real_files["cifar10", "train"]
    index = data.stratified_subset(y, 20, seed=3)
    assert torch.equal(loaded.x, torch.from_numpy(x[index])) and torch.equal(loaded.y, torch.from_numpy(y[index]))
    assert sorted(loaded.y.tolist()) == sorted(list(range(10)) * 2)


def test_chapter_transforms_on_the_real_loaders_output(real_files):
    import torch.nn.functional as F

    # Chapter 3: MNIST next to SVHN, grey to 3 channels, 28 -> 32.
    mnist = data.gray_to_rgb32(data.load("mnist", "test", source="real"))
    x, _ = real_files["mnist", "test"]
    expected = F.interpolate(torch.from_numpy(x).float().expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear",
                             align_corners=False, antialias=True).round().clamp(0, 255).to(torch.uint8)
    assert mnist.x.shape == (30, 3, 32, 32) and torch.equal(mnist.x, expected)
    # Chapter 3's digit augmentation (SVHN) and chapter 6's CIFAR augmentation, per sample in [0, 1].
    for name, augmentation in (("svhn", data.digit_augmentation()), ("cifar10", data.cifar_augmentation())):
        loaded = data.load(name, "train", source="real")
        x, y = real_files[name, "train"]
        torch.manual_seed(0)
        image, label = loaded.dataset(augmentation)[7]
        torch.manual_seed(0)
        assert torch.equal(image, augmentation(torch.from_numpy(x[7]).float() / 255))
        assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1 and label == y[7]
