"""helpers.separation: SI, CSI and forward ranking are identical to the brute-force definitions (helpers.reference)."""
import numpy as np
import pytest
import torch

from helpers import _ranking, reference, separation as sep


def dataset(kind: str, n: int, d: int, seed: int, classes: int = 3):
    """Small inputs chosen to provoke ties: integers, duplicated samples/features, ReLU zeros."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    if kind == "random":
        x = torch.randn(n, d, generator=g)
    elif kind == "integers":  # few distinct values: many exactly equal distances
        x = torch.randint(0, 3, (n, d), generator=g).float()
    elif kind == "relu":  # class-structured, sparse like CNN features after ReLU
        x = (torch.randn(n, d, generator=g) + torch.randn(classes, d, generator=g)[y]).clamp(min=0)
    elif kind == "duplicates":
        x = torch.randn(n, d, generator=g)
        x[:, 3] = x[:, 1]  # a duplicated feature
        x[:, 5] = 2 * x[:, 0] + 1  # the same feature after z-scoring
        x[6], x[9], x[12] = x[2], x[2], x[2]  # duplicated samples, with different labels
        y[9], y[12] = (y[2] + 1) % classes, y[2]
    elif kind == "classes":  # well separated clusters: the SI curve saturates
        x = 0.6 * torch.randn(n, d, generator=g) + torch.randn(classes, d, generator=g)[y]
    else:
        raise ValueError(kind)
    return x, y


KINDS = ["random", "integers", "relu", "duplicates", "classes"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_si_and_csi_equal_naive(kind, seed):
    x, y = dataset(kind, 45, 9, seed)
    assert sep.separation_index(x, y) == reference.separation_index(x, y)
    assert sep.center_separation_index(x, y) == reference.center_separation_index(x, y)
    # small chunks exercise the blockwise path
    assert sep.separation_index(x, y, chunk=7) == reference.separation_index(x, y)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forward_ranking_equals_naive_references(kind, seed):
    x, y = dataset(kind, 40, 8, seed)
    naive = reference.forward_ranking(x, y)
    incremental = reference.incremental_forward_ranking(x, y)
    assert incremental.order == naive.order and incremental.si == naive.si
    # tiny lists, windows, tiles and chunks push most decisions to the deeper levels
    for kwargs in ({}, dict(list_size=1, window=0, tile=3, chunk=5, block=1), dict(list_size=2, window=1, block=1),
                   dict(list_size=5, block=2, window_steps=100)):
        fast = sep.forward_ranking(x, y, progress=False, **kwargs)
        assert fast.order == naive.order, kwargs
        assert fast.si == naive.si, kwargs


@pytest.mark.parametrize("kind", KINDS)
def test_k_d_tree_path_is_exact(kind, monkeypatch):
    monkeypatch.setattr(_ranking, "TREE_MIN_ENTRIES", 1)  # trees for every candidate that reaches full rows
    x, y = dataset(kind, 60, 8, 5)
    naive = reference.forward_ranking(x, y)
    fast = sep.forward_ranking(x, y, progress=False, list_size=1, window=0, block=1)
    assert fast.stats.get("tree_entries", 0) > 0, "the k-d tree path was not exercised"
    assert fast.order == naive.order and fast.si == naive.si


@pytest.mark.parametrize("seed", range(4))
def test_forward_ranking_exact_on_larger_class_structured_data(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(300) % 5
    x = (torch.randn(300, 24, generator=g) + 1.2 * torch.randn(5, 24, generator=g)[y]).clamp(min=0)
    x[:, 7] = x[:, 2]  # exact ties between candidates: the lower index must win
    x = torch.round(x * 4) / 4  # quantised values: ties between distances
    fast = sep.forward_ranking(x, y, progress=False)
    expected = reference.incremental_forward_ranking(x, y)
    assert fast.order == expected.order
    assert fast.si == expected.si
    assert 7 not in fast.order[:fast.order.index(2)]  # duplicate never beats its lower-index twin


def test_ranking_is_a_permutation_and_matches_si_of_prefixes():
    x, y = dataset("classes", 60, 10, 3)
    ranking = sep.forward_ranking(x, y, progress=False)
    assert sorted(ranking.order) == list(range(10))
    for k in (1, 4, 10):
        assert ranking.si[k - 1] == sep.separation_index(x[:, ranking.order[:k]], y)
    assert 1 <= ranking.best_k <= 10 and ranking.si[ranking.best_k - 1] == max(ranking.si)
    partial = sep.forward_ranking(x, y, k=4, progress=False)
    assert partial.order == ranking.order[:4] and partial.si == ranking.si[:4]


def test_greedy_first_step_is_the_best_single_feature():
    x, y = dataset("relu", 50, 7, 0)
    singles = [sep.separation_index(x[:, [c]], y) for c in range(7)]
    ranking = sep.forward_ranking(x, y, k=1, progress=False)
    assert ranking.order[0] == int(np.argmax(singles)) and ranking.si[0] == max(singles)


def test_zscore_matches_numpy():
    x = torch.randn(30, 5, dtype=torch.float64) * torch.tensor([1.0, 10, 0.1, 3, 1e-3]) + 4
    expected = (x.numpy() - x.numpy().mean(0)) / (x.numpy().std(0, ddof=1) + 1e-10)
    np.testing.assert_allclose(sep.zscore(x).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_si_is_invariant_to_feature_scale_and_label_values():
    x, y = dataset("classes", 50, 6, 1)
    base = sep.separation_index(x, y)
    scaled = x * torch.tensor([1.0, 100.0, 0.01, 5.0, 1.0, 3.0]) + 7
    assert sep.separation_index(scaled, y) == pytest.approx(base)
    assert sep.separation_index(x, y * 10 + 3) == base  # labels need not be 0..K-1


def test_tie_rules_on_hand_made_examples():
    # 1-D points 0, 1, 2 with labels a, b, a: sample 1 is equidistant from 0 and 2 (tie -> lowest
    # index 0, label a != b); samples 0 and 2 have sample 1 as nearest (label b): SI = 0.
    x = torch.tensor([[0.0], [1.0], [2.0]])
    assert sep.separation_index(x, torch.tensor([0, 1, 0])) == 0.0
    # Centroids: class 0 = {0, 2} -> 1, class 1 = {1} -> 1: every sample ties; the lower label wins.
    assert sep.center_separation_index(x, torch.tensor([0, 1, 0])) == pytest.approx(2 / 3)
    assert sep.center_separation_index(x, torch.tensor([1, 0, 1])) == pytest.approx(1 / 3)


def test_si_of_separated_clusters_is_one_and_of_noise_is_low():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    far = torch.randn(200, 4, generator=g) + 20 * y[:, None]
    assert sep.separation_index(far, y) == 1.0 and sep.center_separation_index(far, y) == 1.0
    noise = torch.randn(200, 4, generator=g)
    assert sep.separation_index(noise, y) < 0.65


@pytest.mark.parametrize("fn", [sep.separation_index, sep.center_separation_index,
                                lambda x, y: sep.forward_ranking(x, y, progress=False)])
def test_clear_errors(fn):
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match="at least two classes"):
        fn(x, torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="10 samples but y has 9 labels"):
        fn(x, torch.arange(9) % 2)
    bad = x.clone()
    bad[4, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        fn(bad, torch.arange(10) % 2)
    bad[4, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        fn(bad, torch.arange(10) % 2)
    with pytest.raises(ValueError, match="one row of features per sample"):
        fn(torch.randn(10), torch.arange(10) % 2)
    with pytest.raises(ValueError, match="labels must be integers"):
        fn(x, torch.rand(10))


def test_ranking_k_out_of_range():
    x, y = dataset("random", 20, 4, 0)
    with pytest.raises(ValueError, match="k must lie between 1 and the number of features"):
        sep.forward_ranking(x, y, k=5, progress=False)


def test_accepts_images_and_numpy():
    x = np.random.default_rng(0).random((40, 2, 3, 3)).astype(np.float32)
    y = np.arange(40) % 4
    assert sep.separation_index(x, y) == reference.separation_index(x.reshape(40, -1), y)


@pytest.mark.parametrize("seed", [0, 1])
def test_si_with_many_identical_samples(seed):
    # e.g. a ReLU layer where many images give all-zero outputs: ties at distance 0 everywhere
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (120,), generator=g)
    x = torch.randn(120, 6, generator=g).clamp(min=0)
    x[torch.rand(120, generator=g) < 0.4] = 0.0
    x[50:60] = x[3]
    assert sep.separation_index(x, y) == reference.separation_index(x, y)
    assert sep.center_separation_index(x, y) == reference.center_separation_index(x, y)
    same_centroids = torch.cat([x[:60], x[:60]]), torch.cat([torch.zeros(60), torch.ones(60)]).long()
    assert sep.center_separation_index(*same_centroids) == 0.5  # identical centroids: label 0 wins
    assert sep.separation_index(x, y) == reference.separation_index(x, y)


def test_forward_ranking_given_a_cuda_device_runs_on_the_cpu_and_says_so(monkeypatch, capsys):
    """On a GPU the branch and bound would be thousands of tiny launches and syncs: it runs on the CPU."""
    seen, prepare = [], sep.prepare
    monkeypatch.setattr(sep, "prepare", lambda x, y, normalize, device: seen.append(device) or prepare(x, y, normalize))
    x, y = torch.randn(40, 6, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 3
    ranking = sep.forward_ranking(x, y, 3, device="cuda", progress=False)
    assert seen == ["cpu"] and "on the CPU" in capsys.readouterr().out
    assert ranking.order == sep.forward_ranking(x, y, 3, progress=False).order
