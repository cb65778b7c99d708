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
