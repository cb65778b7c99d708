"""helpers.reference: the by-definition oracles agree with published libraries and with helpers' own versions."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchattacks  # test-only; installed without its pins (see the Makefile)
from pytorch_metric_learning import losses as pml_losses
from scipy.spatial.distance import cdist
from torch import nn

from helpers import attacks, interpret, losses, models, reference
from helpers.check import grading


def small_vgg(seed: int = 0) -> nn.Module:
    """A small float64 VGG-16 in eval mode, its ReLUs not in-place (pytorch-grad-cam reads activations)."""
    torch.manual_seed(seed)
    model = models.VGG16(width=0.125, hidden=32).double().eval()
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model


# ---------------------------------------------------------------- chapters 2 and 3

def test_inverted_dropout_equals_torch_dropout():
    torch.manual_seed(0)
    h = torch.rand(1000) + 0.5  # no zeros: a zero in the output marks a dropped unit
    out = F.dropout(h, p=0.3, training=True)
    keep = (out != 0).float()
    assert torch.allclose(reference.inverted_dropout(h, keep, 0.3), out, atol=1e-6)
    assert torch.equal(reference.inverted_dropout(h, keep, 0.3, training=False), h)


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.25])
def test_label_smoothing_equals_pytorch(epsilon):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 7, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 7, (16,), generator=g)
    ours = reference.label_smoothing_cross_entropy(logits, target, epsilon)
    theirs = nn.CrossEntropyLoss(label_smoothing=epsilon)(logits, target)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(theirs, logits)[0])


# ---------------------------------------------------------------- chapter 4

@pytest.mark.parametrize("training", [True, False])
def test_fgsm_and_pgd_equal_torchattacks(training):
    model = grading.conv_net().float().train(training)
    x, y = grading.images(8, seed=1)
    x = x.float()
    for eps in (0.0, 0.03, 0.1):
        assert torch.equal(reference.fgsm(model, x, y, eps), torchattacks.FGSM(model, eps=eps)(x, y))
    theirs = torchattacks.PGD(model, eps=0.03, alpha=0.01, steps=5, random_start=False)(x, y)
    assert torch.equal(reference.pgd(model, x, y, 0.03, 0.01, 5), theirs)
    assert torch.equal(reference.pgd(model, x, y, 0.03, 0.01, 5), attacks.pgd(model, x, y, 0.03, 0.01, 5))
    assert model.training == training


# ---------------------------------------------------------------- chapter 5

@pytest.mark.parametrize("m, gamma", [(0.25, 256.0), (0.4, 80.0)])
@pytest.mark.parametrize("seed, n, classes", [(0, 32, 5), (1, 17, 3)])
def test_circle_loss_per_anchor_equals_pytorch_metric_learning(m, gamma, seed, n, classes):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 16, generator=g), torch.randint(0, classes, (n,), generator=g)
    ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = reference.circle_loss(ours_x, y, m, gamma, reduction="anchor")
    theirs = pml_losses.CircleLoss(m=m, gamma=gamma)(theirs_x, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_x.grad, theirs_x.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("reduction", ["batch", "anchor"])
@pytest.mark.parametrize("labels", [[0, 1, 2, 0, 1, 2, 0, 0], [0, 0, 0, 0], [0, 1, 2, 3]])
def test_circle_loss_equals_helpers_in_value_and_gradient(reduction, labels):
    labels = torch.tensor(labels)
    x = torch.randn(len(labels), 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = reference.circle_loss(ours_x, labels, 0.25, 80.0, reduction)
    theirs = losses.circle_loss(theirs_x, labels, 0.25, 80.0, reduction)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert ours.requires_grad  # also a zero loss (no positive or no negative pair) can be backpropagated
    torch.testing.assert_close(torch.autograd.grad(ours, ours_x)[0], torch.autograd.grad(theirs, theirs_x)[0])


# ---------------------------------------------------------------- chapter 6

@pytest.mark.parametrize("seed", [0, 1])
def test_separation_indices_equal_scipy_distances(seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (60,), generator=g)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64) + torch.randn(4, 5, generator=g, dtype=torch.float64)[y]
    z = ((x - x.mean(0)) / (x.std(0) + 1e-10)).numpy()
    d = cdist(z, z, "sqeuclidean")
    np.fill_diagonal(d, np.inf)
    assert reference.separation_index(x, y) == pytest.approx(np.mean(y.numpy()[d.argmin(1)] == y.numpy()))
    classes = np.unique(y.numpy())
    centroids = np.stack([z[y.numpy() == c].mean(0) for c in classes])
    nearest = classes[cdist(z, centroids, "sqeuclidean").argmin(1)]
    assert reference.center_separation_index(x, y) == pytest.approx(np.mean(nearest == y.numpy()))


def test_forward_rankings_agree_and_each_step_is_the_best_si():
    g = torch.Generator().manual_seed(3)
    y = torch.arange(40) % 3
    x = torch.randn(40, 6, generator=g) + torch.randn(3, 6, generator=g)[y]
    naive, incremental = reference.forward_ranking(x, y), reference.incremental_forward_ranking(x, y)
    assert naive.order == incremental.order and naive.si == incremental.si
    for k in range(1, 7):
        assert naive.si[k - 1] == reference.separation_index(x[:, naive.order[:k]], y)
        others = [c for c in range(6) if c not in naive.order[:k - 1]]
        assert naive.si[k - 1] == max(reference.separation_index(x[:, naive.order[:k - 1] + [c]], y) for c in others)


# ---------------------------------------------------------------- chapter 7

def library_grad_cam(model, x, layer, targets):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with GradCAM(model=model, target_layers=[dict(model.named_modules())[layer]]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])


def test_grad_cam_equals_pytorch_grad_cam():
    model = small_vgg(1)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for layer in ("features.29", "features.16", "features.12"):
        ours = reference.grad_cam(model, x, layer, [3, 8]).numpy()
        assert np.abs(ours - library_grad_cam(model, x, layer, [3, 8])).max() < 1e-6, layer


def test_grad_cam_equals_interpret_grad_cam():
    x, y = grading.images(3)
    wide, _ = grading.images(2, seed=2, size=(16, 12))
    for model in (grading.conv_net(inplace=True), grading.conv_net(seed=3)):
        for images, layer, target in [(x, "conv2", y), (x, "pool", None), (wide, "conv2", 3), (x, "conv1", y)]:
            ours = reference.grad_cam(model, images, layer, target)
            assert ours.shape == (len(images), *images.shape[-2:])
            assert (ours.amax((1, 2)) > 0.99).all()  # a real map, not an all-zero one
            assert torch.allclose(ours, interpret.grad_cam(model, images, layer, target), atol=1e-6)
    torch.manual_seed(0)
    resnet = models.ResNet18(width=0.125).double().eval()
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    for layer in ("layer2", "layer3.0.conv1"):
        assert torch.allclose(reference.grad_cam(resnet, images, layer, [1, 4]),
                              interpret.grad_cam(resnet, images, layer, [1, 4]), atol=1e-6)


def test_guided_backprop_equals_pytorch_grad_cam_and_interpret():
    from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel

    model = small_vgg(5)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ours = reference.guided_backprop(model, x, 6)
    theirs = GuidedBackpropReLUModel(copy.deepcopy(model), device="cpu")(x.clone(), target_category=6)
    assert np.abs(ours[0].permute(1, 2, 0).numpy() - theirs).max() < 1e-9 * max(1.0, np.abs(theirs).max())
    x, y = grading.images(3, seed=6)
    for model, target in ((grading.conv_net(inplace=True), y), (grading.shared_relu_net(), None)):
        guided = reference.guided_backprop(model, x, target)
        assert torch.allclose(guided, interpret.guided_backprop(model, x, target), rtol=1e-9, atol=1e-12)
        assert not torch.allclose(guided, reference.input_gradient(model, x, target))  # the rule changed something
        assert not any(m._forward_hooks for m in model.modules()) and model.training


def test_occlusion_equals_interpret_occlusion():
    model = grading.conv_net()
    x, y = grading.images(2, seed=4, size=(13, 11))
    for args in [(x, y, 5, 3, 0.5), (x, None, 4, 4, 0.0), (x[:1], 2, 13 - 2, 2, 0.25)]:
        expected = interpret.occlusion(model, *args[:4], fill=args[4])
        assert torch.allclose(reference.occlusion(model, *args), expected.double(), atol=1e-6)
