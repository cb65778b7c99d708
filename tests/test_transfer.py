"""Unit tests of helpers.transfer (chapter 3's recipe and few-label transfer) and its label-smoothing loss."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from helpers import data, evaluate, losses, transfer
from helpers.models import ResNet18
from helpers.transfer import Recipe


@pytest.fixture(scope="module")
def tiny_digits():
    """A small stand-in street-digits train/val pair (64 + 32 images)."""
    train = data.load("svhn", "train", n=64, seed=0, source="standin")
    val = data.load("svhn", "test", n=32, seed=0, source="standin")
    return train, val


# ---------------------------------------------------------------- label smoothing vs PyTorch

@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.25, 0.9])
def test_hand_written_label_smoothing_equals_pytorch(epsilon):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=generator) * 3
    target = torch.randint(0, 10, (64,), generator=generator)
    ours = losses.label_smoothing_cross_entropy(logits, target, epsilon)
    theirs = nn.CrossEntropyLoss(label_smoothing=epsilon)(logits, target)
    assert abs(ours.item() - theirs.item()) < 1e-6


def test_label_smoothing_gradients_equal_pytorch():
    logits = torch.randn(16, 7, generator=torch.Generator().manual_seed(1), requires_grad=True)
    target = torch.arange(16) % 7
    grad_ours, = torch.autograd.grad(losses.LabelSmoothingCrossEntropy(0.25)(logits, target), logits)
    grad_theirs, = torch.autograd.grad(nn.CrossEntropyLoss(label_smoothing=0.25)(logits, target), logits)
    assert torch.allclose(grad_ours, grad_theirs, atol=1e-7)


def test_label_smoothing_rejects_bad_input():
    logits = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        losses.label_smoothing_cross_entropy(logits, torch.tensor([0, 1, 2, 3]), 0.1)
    with pytest.raises(ValueError, match="epsilon"):
        losses.label_smoothing_cross_entropy(logits, torch.tensor([0, 1, 2, 0]), 1.0)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        losses.label_smoothing_cross_entropy(torch.zeros(4), torch.tensor([0, 1, 2, 0]), 0.1)


# ---------------------------------------------------------------- Recipe

def test_recipe_describes_itself_and_is_a_value():
    recipe = Recipe()
    assert recipe.describe() == "SGD, BN"
    assert Recipe(label_smoothing=0.25, augment=True, optimizer="adam").describe() == "Adam, BN, LS 0.25, aug"
    assert Recipe(batchnorm=False, pretrained=False).describe() == "SGD, no BN"
    with pytest.raises(Exception):  # frozen: a recipe is a value, variants are built with replace()
        recipe.augment = True


@pytest.mark.parametrize("kwargs, message", [
    (dict(optimizer="rmsprop"), "optimizer must be one of sgd, adam"),
    (dict(label_smoothing=1.0), "label_smoothing must lie in"),
    (dict(label_smoothing=-0.1), "label_smoothing must lie in"),
    (dict(pretrained=True, batchnorm=False), "BatchNorm"),
])
def test_recipe_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**kwargs)


def test_each_ingredient_switches_what_it_says():
    model = transfer.build_model(Recipe(batchnorm=False), width=0.125)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in transfer.build_model(Recipe(), width=0.125).modules())
    assert isinstance(transfer.make_loss(Recipe(label_smoothing=0.25)), losses.LabelSmoothingCrossEntropy)
    assert transfer.make_loss(Recipe(label_smoothing=0.25)).epsilon == 0.25
    assert isinstance(transfer.make_loss(Recipe()), nn.CrossEntropyLoss)
    sgd = transfer.make_optimizer(Recipe(), model)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["lr"] == transfer.DEFAULT_LR["sgd"]
    adam = transfer.make_optimizer(Recipe(optimizer="adam"), model, lr=3e-4)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 3e-4
    # chapter 3 says so in its text: the Adam row is plain Adam, without the SGD rows' weight decay
    assert sgd.defaults["weight_decay"] == 5e-4 and adam.defaults["weight_decay"] == 0
    with pytest.raises(ValueError, match="lr must be positive"):
        transfer.make_optimizer(Recipe(), model, lr=0)


def test_train_recipe_is_seeded_and_starts_fresh(tiny_digits):
    train, val = tiny_digits
    kwargs = dict(epochs=1, width=0.0625, batch_size=32, seed=3, device="cpu")
    model_a, history_a = transfer.train_recipe(Recipe(augment=True), train, val, **kwargs)
    model_b, history_b = transfer.train_recipe(Recipe(augment=True), train, val, **kwargs)
    assert history_a.train_loss == history_b.train_loss and history_a.val_acc == history_b.val_acc
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(a, b)
    model_c, _ = transfer.train_recipe(Recipe(augment=True), train, val, **{**kwargs, "seed": 4})
    assert not torch.equal(model_a.fc.weight, model_c.fc.weight)


def test_augmentation_touches_training_images_only(tiny_digits, monkeypatch):
    train, val = tiny_digits
    seen = []

    def spy_augmentation():
        def transform(image):
            seen.append(image.shape)
            return image
        return transform

    monkeypatch.setattr(transfer, "digit_augmentation", spy_augmentation)
    transfer.train_recipe(Recipe(augment=True), train, val, epochs=1, width=0.0625, batch_size=32, device="cpu")
    assert len(seen) == len(train)  # one epoch: each training image once, no validation image
    seen.clear()
    transfer.train_recipe(Recipe(), train, val, epochs=1, width=0.0625, batch_size=32, device="cpu")
    assert not seen


def test_train_recipe_learns_and_restores_best_epoch(tiny_digits):
    train, val = tiny_digits
    model, history = transfer.train_recipe(Recipe(optimizer="adam"), train, val, epochs=3, width=0.0625,
                                           batch_size=16, device="cpu")
    assert history.train_loss[-1] < history.train_loss[0]
    # train_recipe validates in batches of 2 * batch_size: the same batches give the same arithmetic
    accuracy = evaluate(model, data.loader(val, 2 * 16))["acc"]
    assert accuracy == pytest.approx(max(history.val_acc))


def test_train_recipe_rejects_mismatched_shapes(tiny_digits):
    train, _ = tiny_digits
    gray = data.load("mnist", "test", n=20, seed=0, source="standin")
    with pytest.raises(ValueError, match="gray_to_rgb32"):
        transfer.train_recipe(Recipe(), train, gray, epochs=1, width=0.0625, batch_size=16)
    with pytest.raises(ValueError, match="ImageSet"):
        transfer.train_recipe(Recipe(), train.x, None, epochs=1, width=0.0625, batch_size=16)


# ---------------------------------------------------------------- ImageNet weights

def test_pretrained_available_without_download_never_touches_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache

    def no_network(url, timeout=0):
        raise AssertionError("allow_download=False must not probe the download address")

    monkeypatch.setattr(transfer, "_url_reachable", no_network)
    assert transfer.pretrained_available(allow_download=False) is False
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    open(transfer.pretrained_cache_path(), "wb").close()
    assert transfer.pretrained_available(allow_download=False) is True and transfer.pretrained_cached()


def test_pretrained_available_is_fast_and_honest_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(transfer, "_url_reachable", lambda url, timeout=0: False)
    start = time.perf_counter()
    assert transfer.pretrained_available() is False
    assert time.perf_counter() - start < 1
    with pytest.raises(transfer.PretrainedUnavailableError, match="cannot be reached"):
        transfer.train_recipe(Recipe(pretrained=True), *[data.load("svhn", "test", n=20, source="standin")] * 2,
                              epochs=1, width=1.0, batch_size=16)


def test_pretrained_available_sees_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(transfer, "_url_reachable", lambda url, timeout=0: False)
    cached = transfer.pretrained_cache_path()
    assert cached.startswith(str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    open(cached, "wb").close()
    assert transfer.pretrained_available() is True


def test_unreachable_url_answers_false_quickly():
    start = time.perf_counter()
    assert transfer._url_reachable("http://unreachable.invalid/resnet18.pth", timeout=1) is False
    assert time.perf_counter() - start < 3


def test_pretrained_adaptation_keeps_32x32_resolution():
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    conv1 = net.conv1.weight.detach().clone()
    model = transfer.PretrainedResNet18(net, num_classes=10).eval()
    assert torch.equal(model.stem[0].weight, conv1)  # the (would-be pretrained) stem weights are kept
    assert model.stem[0].stride == (1, 1) and not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    x = torch.rand(2, 3, 32, 32)
    h = model.layer4(model.layer3(model.layer2(model.layer1(model.stem(model.normalize(x))))))
    assert h.shape == (2, 512, 4, 4)
    assert model(x).shape == (2, 10) and model.features(x).shape == (2, 512)
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(transfer.IMAGENET_MEAN))


def test_pretrained_needs_full_width_and_colour():
    with pytest.raises(ValueError, match="width=1.0"):
        transfer.build_model(Recipe(pretrained=True), width=0.25)
    with pytest.raises(ValueError, match="gray_to_rgb32"):
        transfer.build_model(Recipe(pretrained=True), width=1.0, in_channels=1)


# ---------------------------------------------------------------- few-label transfer

def test_fine_tune_head_trains_only_the_classifier(tiny_digits):
    train, val = tiny_digits
    torch.manual_seed(0)
    model = ResNet18(10, 3, width=0.0625)
    model.train()  # a model left in training mode: fine-tuning must not touch its BatchNorm statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted, history = transfer.fine_tune_head(model, train, val, epochs=5, lr=1e-2)
    for key, value in model.state_dict().items():  # the original is untouched
        assert torch.equal(value, before[key])
    for key, value in adapted.state_dict().items():
        changed = not torch.equal(value, before[key])
        assert changed == key.startswith("fc."), key
    assert all(not p.requires_grad for name, p in adapted.named_parameters() if not name.startswith("fc."))
    assert history.train_loss[-1] < history.train_loss[0]
    features = transfer.extract_features(adapted, val)
    assert torch.allclose(adapted.fc(features), adapted.eval()(val.tensors()[0]), atol=1e-5)


def test_extract_features_of_tensors_equals_that_of_the_image_set(tiny_digits):
    _, val = tiny_digits
    torch.manual_seed(0)
    model = ResNet18(10, 3, width=0.0625).train()
    from_set = transfer.extract_features(model, val, batch_size=8)
    from_tensor = transfer.extract_features(model, val.tensors()[0], batch_size=5)
    assert model.training  # each caller's mode comes back
    assert from_set.shape == (len(val), model.feature_dim)
    assert torch.allclose(from_set, from_tensor, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(from_tensor, model.eval().features(val.tensors()[0]), atol=1e-5)
    with pytest.raises(ValueError, match="float"):
        transfer.extract_features(model, val.x)  # uint8 images: convert with .tensors() first
    with pytest.raises(ValueError, match="ImageSet"):
        transfer.extract_features(model, [val.tensors()[0]])


class PixelClassifier(nn.Module):
    """The smallest model with `features` and `fc`: grey pixels into a linear layer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32 * 32, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def test_fine_tune_head_raises_target_accuracy():
    """A classifier fine-tuned on a few labelled target images beats the unadapted one on that target."""
    torch.manual_seed(0)
    model = PixelClassifier()  # an untrained head: chance level on the target
    target_train = data.gray_to_rgb32(data.load("mnist", "train", n=300, seed=0, source="standin"))
    target_test = data.gray_to_rgb32(data.load("mnist", "test", n=300, seed=0, source="standin"))
    adapted, history = transfer.fine_tune_head(model, target_train, epochs=20, lr=1e-2)
    before = evaluate(model, data.loader(target_test, 128))["acc"]
    after = evaluate(adapted, data.loader(target_test, 128))["acc"]
    assert before < 0.3 and after > before + 0.3


def test_fine_tune_head_rejects_models_without_head(tiny_digits):
    train, _ = tiny_digits
    with pytest.raises(ValueError, match="linear classifier `fc`"):
        transfer.fine_tune_head(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)), train, epochs=1)
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        transfer.fine_tune_head(ResNet18(10, 3, width=0.0625), train, epochs=0)


# ---------------------------------------------------------------- AdaBN

def test_adapt_batchnorm_re_estimates_statistics_on_the_target(tiny_digits):
    train, _ = tiny_digits
    torch.manual_seed(0)
    model = ResNet18(10, 3, width=0.0625).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = data.gray_to_rgb32(data.load("mnist", "test", n=64, seed=0, source="standin"))
    adapted = transfer.adapt_batchnorm(model, target, batch_size=256)  # one batch: exact statistics
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # the original is untouched
    with torch.no_grad():
        stem_out = model.stem[0](model.normalize(target.tensors()[0]))
    norm = adapted.stem[1]
    assert torch.allclose(norm.running_mean, stem_out.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(norm.running_var, stem_out.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert norm.momentum == model.stem[1].momentum and not adapted.training
    for key, value in adapted.state_dict().items():  # only BatchNorm buffers change, never a weight
        if not any(key.endswith(s) for s in ("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(value, before[key]), key


def test_adapt_batchnorm_needs_batchnorm(tiny_digits):
    train, _ = tiny_digits
    with pytest.raises(ValueError, match="no BatchNorm"):
        transfer.adapt_batchnorm(ResNet18(10, 3, width=0.0625, batchnorm=False), train)
