"""Circle loss (chapter 5): both reductions, cross-checked against pytorch-metric-learning and brute force."""
import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses

from helpers import losses


SETTINGS = [(0.25, 256.0), (0.25, 80.0), (0.4, 80.0)]


def random_batch(n=32, dim=16, classes=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


def brute_force_pairs(embeddings, labels):
    """Pair similarities with plain loops: positives and negatives over i < j."""
    unit = embeddings / embeddings.norm(dim=1, keepdim=True)
    s_p, s_n = [], []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            (s_p if labels[i] == labels[j] else s_n).append(float(unit[i] @ unit[j]))
    return s_p, s_n


def brute_force_pooled(s_p, s_n, m, gamma):
    """The batch-pooled formula, term by term in plain Python floats."""
    logit_p = [-gamma * max(1 + m - s, 0.0) * (s - (1 - m)) for s in s_p]
    logit_n = [gamma * max(s + m, 0.0) * (s - m) for s in s_n]
    # log(1 + sum exp(logit_n) * sum exp(logit_p)) with the max factored out for stability
    top_p, top_n = max(logit_p), max(logit_n)
    lse = (top_p + math.log(sum(math.exp(v - top_p) for v in logit_p))
           + top_n + math.log(sum(math.exp(v - top_n) for v in logit_n)))
    return max(lse, 0) + math.log1p(math.exp(-abs(lse)))


def test_pair_similarities_match_brute_force():
    x, y = random_batch(n=12, classes=3)
    s_p, s_n = losses.pair_similarities(x, y)
    want_p, want_n = brute_force_pairs(x, y)
    assert len(s_p) + len(s_n) == 12 * 11 // 2
    torch.testing.assert_close(s_p, torch.tensor(want_p, dtype=x.dtype))
    torch.testing.assert_close(s_n, torch.tensor(want_n, dtype=x.dtype))
    assert s_p.abs().max() <= 1 + 1e-12 and s_n.abs().max() <= 1 + 1e-12


def test_similarities_ignore_embedding_length():
    x, y = random_batch(n=10)
    scaled = x * torch.linspace(0.1, 10, 10, dtype=x.dtype)[:, None]
    for a, b in zip(losses.pair_similarities(x, y), losses.pair_similarities(scaled, y)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("m, gamma", SETTINGS)
def test_batch_reduction_matches_the_pooled_formula(m, gamma):
    x, y = random_batch(n=20, classes=4, seed=1)
    want = brute_force_pooled(*brute_force_pairs(x, y), m, gamma)
    got = losses.circle_loss(x, y, m, gamma, reduction="batch")
    assert got.item() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("m, gamma", SETTINGS)
@pytest.mark.parametrize("seed, n, classes", [(0, 32, 5), (1, 64, 10), (2, 17, 3), (3, 8, 6)])
def test_anchor_reduction_equals_pytorch_metric_learning(m, gamma, seed, n, classes):
    x, y = random_batch(n=n, classes=classes, seed=seed, dtype=torch.float32)
    reference = pml_losses.CircleLoss(m=m, gamma=gamma)
    ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = losses.circle_loss(ours_x, y, m, gamma, reduction="anchor")
    theirs = reference(theirs_x, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_x.grad, theirs_x.grad, rtol=1e-4, atol=1e-6)


def test_module_form_equals_the_function():
    x, y = random_batch(n=24, classes=4, dtype=torch.float32)
    for reduction in ("anchor", "batch"):
        module = losses.CircleLoss(m=0.4, gamma=80, reduction=reduction)
        assert module(x, y) == losses.circle_loss(x, y, 0.4, 80, reduction)
    torch.testing.assert_close(losses.CircleLoss(0.4, 80, reduction="anchor")(x, y), pml_losses.CircleLoss(m=0.4, gamma=80)(x, y))


@pytest.mark.parametrize("m, gamma", SETTINGS)
def test_for_a_single_anchor_the_two_reductions_agree(m, gamma):
    # One anchor (row 0) against a set of references holding positives and negatives: the only pairs
    # are (anchor, reference). pytorch-metric-learning's per-anchor loss with a reference set, our
    # per-anchor term of that anchor, and our batch-pooled term over exactly those pairs must be one number.
    x, y = random_batch(n=15, classes=3, seed=4)
    anchor, refs, anchor_label, ref_labels = x[:1], x[1:], y[:1], y[1:]
    assert (ref_labels == anchor_label).any() and (ref_labels != anchor_label).any()
    sims = F.cosine_similarity(anchor, refs, dim=1)
    pooled = losses.circle_loss_from_pairs(sims[ref_labels == anchor_label], sims[ref_labels != anchor_label],
                                           m, gamma)
    per_anchor = losses.circle_loss_per_anchor(x, y, m, gamma)[0]
    pml = pml_losses.CircleLoss(m=m, gamma=gamma)(anchor.float(), anchor_label, ref_emb=refs.float(),
                                                  ref_labels=ref_labels)
    torch.testing.assert_close(pooled, per_anchor)
    assert pooled.item() == pytest.approx(pml.item(), rel=1e-5)


def test_labels_001_pool_three_pairs_but_average_two_anchors():
    # Inside one batch, pairs among the other samples always join the pooled term: labels [0, 0, 1] pool
    # (0,1)+, (0,2)- and (1,2)- into one term, while the per-anchor form averages anchors 0 and 1
    # (anchor 2 has no positive and contributes 0). So the single-anchor agreement needs the
    # anchor-versus-references construction of the test above.
    x, _ = random_batch(n=3, seed=5)
    y = torch.tensor([0, 0, 1])
    pooled = losses.circle_loss(x, y, 0.25, 80, reduction="batch")
    terms = losses.circle_loss_per_anchor(x, y, 0.25, 80)
    assert terms[2] == 0 and terms[0] > 0 and terms[1] > 0
    assert losses.circle_loss(x, y, 0.25, 80, reduction="anchor") == terms[:2].mean()
    assert not torch.isclose(pooled, terms[:2].mean())


def test_the_two_reductions_differ_on_a_batch():
    x, y = random_batch(n=32, classes=5, seed=6)
    batch = losses.circle_loss(x, y, 0.25, 80, reduction="batch")
    anchor = losses.circle_loss(x, y, 0.25, 80, reduction="anchor")
    assert abs(batch.item() - anchor.item()) > 1e-3


@pytest.mark.parametrize("reduction", ["batch", "anchor"])
@pytest.mark.parametrize("labels", [[3, 3, 3, 3], [0, 1, 2, 3], [7]], ids=["no-negative", "no-positive", "one"])
def test_batches_without_positives_or_negatives_give_zero(reduction, labels):
    x = torch.randn(len(labels), 8, requires_grad=True)
    loss = losses.circle_loss(x, torch.tensor(labels), reduction=reduction)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()  # still part of the graph: a training loop can call backward on it
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()
    if reduction == "anchor":
        assert pml_losses.CircleLoss()(x, torch.tensor(labels)).item() == 0.0


@pytest.mark.parametrize("reduction", ["batch", "anchor"])
def test_gradients_stay_finite_for_identical_embeddings(reduction):
    # Collapsed embeddings (all equal, as at a bad start) and a zero vector must not produce NaN.
    x = torch.ones(6, 4).index_fill_(0, torch.tensor([5]), 0.0).requires_grad_()
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = losses.circle_loss(x, y, reduction=reduction)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_loss_rewards_separated_classes():
    # Embeddings clustered by class (positives close, negatives far) give a lower loss than random ones.
    y = torch.arange(40) % 4
    centres = torch.eye(4, 16, dtype=torch.float64) * 5
    g = torch.Generator().manual_seed(7)
    clustered = centres[y] + 0.1 * torch.randn(40, 16, generator=g, dtype=torch.float64)
    scattered = torch.randn(40, 16, generator=g, dtype=torch.float64)
    for reduction in ("batch", "anchor"):
        assert losses.circle_loss(clustered, y, reduction=reduction) < losses.circle_loss(scattered, y, reduction=reduction)


def test_alpha_weights_are_not_differentiated():
    # The self-paced weights alpha are constants for the gradient: d logit_p / d s_p = -gamma * alpha_p.
    s_p = torch.tensor([0.3], requires_grad=True)
    s_n = torch.tensor([0.1], requires_grad=True)
    logit_p, logit_n = losses.circle_logits(s_p, s_n, m=0.25, gamma=80)
    (logit_p + logit_n).sum().backward()
    assert s_p.grad.item() == pytest.approx(-80 * (1.25 - 0.3))
    assert s_n.grad.item() == pytest.approx(80 * (0.1 + 0.25))


@pytest.mark.parametrize("embeddings, labels, match", [
    (torch.randn(5, 3), torch.zeros(4, dtype=torch.long), "one label per embedding"),
    (torch.randn(5, 3, 2), torch.zeros(5, dtype=torch.long), r"\(N, D\)"),
    (torch.randn(5), torch.zeros(5, dtype=torch.long), r"\(N, D\)"),
    (torch.randn(5, 3), torch.zeros(5, 1, dtype=torch.long), "1-D"),
    (torch.randn(5, 3), torch.zeros(5), "integers"),
    (torch.zeros(5, 3, dtype=torch.long), torch.zeros(5, dtype=torch.long), "floating point"),
])
def test_bad_input_gives_a_clear_error(embeddings, labels, match):
    for reduction in ("batch", "anchor"):
        with pytest.raises(ValueError, match=match):
            losses.circle_loss(embeddings, labels, reduction=reduction)


def test_default_is_the_pooled_form_of_the_original_coursework():
    x, y = random_batch(n=12, classes=3, dtype=torch.float32)
    assert losses.circle_loss(x, y) == losses.circle_loss(x, y, 0.25, 80.0, reduction="batch")
    assert losses.CircleLoss()(x, y) == losses.circle_loss(x, y)


def test_bad_hyper_parameters_give_a_clear_error():
    x, y = random_batch(n=6)
    with pytest.raises(ValueError, match="margin m"):
        losses.circle_loss(x, y, m=1.5)
    with pytest.raises(ValueError, match="gamma"):
        losses.CircleLoss(gamma=0)
    with pytest.raises(ValueError, match="reduction"):
        losses.circle_loss(x, y, reduction="sum")
