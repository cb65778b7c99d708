"""helpers.embedding (chapter 5): embedding network, surrogate head, extraction, k-NN evaluation."""
import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from helpers import attacks, embedding
from helpers.data import loader


def tiny_net(**kwargs):
    torch.manual_seed(0)
    return embedding.EmbeddingNet(embedding_dim=8, width=0.0625, **kwargs)


def toy_images(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.arange(n) % 3


def test_embedding_shapes_and_unit_length():
    net = tiny_net().eval()
    x, _ = toy_images()
    assert net(x).shape == (24, 8)
    torch.testing.assert_close(net.embed(x).norm(dim=1), torch.ones(24))
    assert net.head is None
    assert tiny_net(num_classes=3).head.out_features == 3


def test_extract_embeddings_keeps_order_and_mode():
    net = tiny_net()
    x, y = toy_images()
    emb, labels = embedding.extract_embeddings(net, loader(torch.utils.data.TensorDataset(x, y), 10))
    assert net.training  # mode restored
    assert torch.equal(labels, y)
    with torch.no_grad():
        torch.testing.assert_close(emb, net.eval().embed(x))


def test_surrogate_head_and_attack_through_it():
    net = tiny_net()
    x, y = toy_images()
    data = loader(torch.utils.data.TensorDataset(x, y), 12)
    with pytest.raises(ValueError, match="no classifier head"):
        embedding.extract_embeddings(net, data, attack=attacks.fgsm_with_noise(0.1, 0.0))
    emb, labels = embedding.extract_embeddings(net, data)
    head = embedding.fit_surrogate_head(net, emb, labels, num_classes=4)
    assert head is net.head and head.weight.shape == (4, 8)
    surrogate = embedding.SurrogateClassifier(net).eval()
    with torch.no_grad():
        logits = surrogate(x)
    assert (logits.argmax(1) != 3).all()  # class 3 had no training embedding: never predicted
    # The attack runs on the surrogate, so adversarial embeddings differ from clean ones, and with
    # eps = 0 and no noise they are the clean ones.
    adv, _ = embedding.extract_embeddings(net, data, attack=attacks.fgsm_with_noise(0.1, 0.0))
    same, _ = embedding.extract_embeddings(net, data, attack=attacks.fgsm_with_noise(0.0, 0.0))
    assert not torch.allclose(adv, emb)
    torch.testing.assert_close(same, emb)


def test_knn_matches_a_brute_force_majority_vote():
    rng = np.random.default_rng(0)
    ref, ref_y = rng.normal(size=(60, 5)), rng.integers(0, 4, 60)
    query, query_y = rng.normal(size=(30, 5)), rng.integers(0, 4, 30)
    knn = embedding.knn_classifier(torch.tensor(ref), torch.tensor(ref_y), k=5)
    assert isinstance(knn, KNeighborsClassifier) and knn.n_neighbors == 5
    distances = ((query[:, None] - ref[None]) ** 2).sum(-1)
    votes = ref_y[np.argsort(distances, axis=1, kind="stable")[:, :5]]
    # ties in the vote go to the smallest label, as in scikit-learn (np.argmax of the counts)
    want = np.array([np.bincount(v, minlength=4).argmax() for v in votes])
    assert embedding.knn_accuracy(knn, torch.tensor(query), torch.tensor(query_y)) == pytest.approx(
        (want == query_y).mean())


def test_knn_on_separated_clusters_is_perfect():
    centres = np.eye(3, 4) * 10
    y = np.arange(30) % 3
    x = centres[y] + np.random.default_rng(1).normal(size=(30, 4))
    knn = embedding.knn_classifier(x, y, k=5)
    assert embedding.knn_accuracy(knn, x, y) == 1.0


def test_bad_input_gives_a_clear_error():
    x, y = torch.randn(10, 4), torch.arange(10) % 2
    with pytest.raises(ValueError, match=r"embeddings \(N, D\) and labels \(N,\)"):
        embedding.knn_classifier(x, y[:9])
    with pytest.raises(ValueError, match="k must lie"):
        embedding.knn_classifier(x, y, k=11)
    knn = embedding.knn_classifier(x, y, k=3)
    with pytest.raises(ValueError, match="dimensions"):
        embedding.knn_accuracy(knn, torch.randn(5, 3), y[:5])
    with pytest.raises(ValueError, match="NaN"):
        embedding.knn_classifier(torch.full((10, 4), float("nan")), y)
    with pytest.raises(ValueError, match="at least two classes"):
        embedding.fit_surrogate_head(tiny_net(), x[:, :8].repeat(1, 2), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="embedding_dim"):
        embedding.EmbeddingNet(embedding_dim=1)
