"""separation.layer_output / layerwise_separation: hooks always removed, modes restored, the right features measured."""
import pytest
import torch
import torchvision
from torch import nn

from helpers import models, reference, separation


def small_vgg(batchnorm: bool = False, seed: int = 0) -> nn.Module:
    """Chapters 6-7's VGG-16 at 1/8 width, torchvision-initialised (its ReLUs are in-place)."""
    torch.manual_seed(seed)
    return models.torchvision_init_(models.VGG16(width=0.125, hidden=16, batchnorm=batchnorm))


def images_and_labels(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = (torch.rand(n, 3, 32, 32, generator=g) * 0.5 + 0.12 * y[:, None, None, None]).clamp(0, 1)
    return x, y


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


def by_hand(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every `features` module's output, flattened, by running the modules one after the other."""
    outputs = []
    with torch.no_grad():
        h = model.normalize(x)
        for module in model.features:
            h = module(h)
            outputs.append(h.flatten(1).clone())  # clone: the next ReLU(inplace=True) overwrites h
    return outputs


# ---------------------------------------------------------------- layer_output

def test_conv_output_before_an_inplace_relu_keeps_its_negative_values():
    model = small_vgg().eval()
    x, _ = images_and_labels(8)
    assert isinstance(model.features[1], nn.ReLU) and model.features[1].inplace
    for index in (0, 2, 28):  # convolutions, each followed by ReLU(inplace=True)
        out = separation.layer_output(model, model.features[index], x, batch_size=3)
        assert (out < 0).any(), f"module {index}: the ReLU after the convolution overwrote the stored output"
        assert torch.equal(out, by_hand(model, x)[index])
    relu = separation.layer_output(model, model.features[1], x)
    assert (relu >= 0).all() and torch.equal(relu, by_hand(model, x)[1])


def test_layer_output_batches_cpu_float32_and_shape():
    model = small_vgg().eval()
    x, _ = images_and_labels(10)
    out = separation.layer_output(model, model.features[23], x, batch_size=4)  # 3 batches: 4 + 4 + 2
    assert out.shape == (10, 64 * 2 * 2) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.allclose(out, by_hand(model, x)[23], atol=1e-6)


def test_hooks_removed_and_train_mode_restored_when_the_model_raises():
    model = small_vgg(batchnorm=True).train()
    too_small = torch.rand(2, 3, 8, 8)  # the fourth max-pool gets a 1x1 map: the forward pass raises
    with pytest.raises(RuntimeError):
        separation.layer_output(model, model.features[29], too_small)
    assert no_hooks_left(model) and model.training
    assert all(m.training for m in model.modules()), "every sub-module back in train mode"
    with pytest.raises(RuntimeError):
        separation.layerwise_separation(model, too_small, torch.tensor([0, 1]))
    assert no_hooks_left(model) and model.training


def test_a_module_that_does_not_run_is_an_error_and_leaves_no_hook():
    model = small_vgg().eval()
    with pytest.raises(ValueError, match="did not run"):
        separation.layer_output(model, nn.ReLU(), torch.rand(2, 3, 32, 32))
    assert no_hooks_left(model) and not model.training


def test_layer_output_does_not_change_batchnorm_statistics():
    model = small_vgg(batchnorm=True).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = images_and_labels(12)
    separation.layerwise_separation(model, x, y, batch_size=5)
    assert model.training  # mode restored ...
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # ... and eval mode used: running stats untouched
    assert no_hooks_left(model)


# ---------------------------------------------------------------- layerwise_separation

@pytest.mark.parametrize("batchnorm", [False, True])
def test_vgg16_gives_the_input_and_all_31_modules(batchnorm):
    model = small_vgg(batchnorm).eval()
    x, y = images_and_labels(16)
    result = separation.layerwise_separation(model, x, y, batch_size=8)
    assert len(result["layer"]) == len(result["si"]) == len(result["csi"]) == 32
    assert result["layer"][0] == "input"
    assert result["layer"][1] == ("0 Conv2d+BatchNorm2d" if batchnorm else "0 Conv2d")
    assert result["layer"][2] == "1 ReLU" and result["layer"][24] == "23 MaxPool2d"
    assert result["layer"][31] == "30 MaxPool2d"
    assert all(0.0 <= v <= 1.0 for v in result["si"] + result["csi"])


def test_values_equal_si_and_csi_of_the_features_extracted_by_hand():
    model = small_vgg(seed=1).eval()
    x, y = images_and_labels(40, seed=1)
    result = separation.layerwise_separation(model, x, y, batch_size=len(x))  # one batch, like `by_hand`
    hand = [x.flatten(1)] + by_hand(model, x)
    for i, features in enumerate(hand):
        assert result["si"][i] == separation.separation_index(features, y), result["layer"][i]
        assert result["csi"][i] == separation.center_separation_index(features, y), result["layer"][i]
    # and an independent check of a few layers against the plain definitions
    for i in (0, 2, 24, 31):
        assert result["si"][i] == reference.separation_index(hand[i], y), result["layer"][i]
        assert result["csi"][i] == reference.center_separation_index(hand[i], y), result["layer"][i]
    # the layers really differ: the measure is taken on each module's own output
    assert len(set(result["si"])) > 3


def test_chosen_modules_and_no_input():
    model = small_vgg().eval()
    x, y = images_and_labels(12)
    result = separation.layerwise_separation(model, x, y, modules=[model.features[4], model.features[9]],
                                             include_input=False)
    assert result["layer"] == ["0 MaxPool2d", "1 MaxPool2d"]
    hand = by_hand(model, x)
    assert result["si"] == [separation.separation_index(hand[4], y), separation.separation_index(hand[9], y)]


def test_bad_input_gets_a_clear_error():
    model = small_vgg().eval()
    x, y = images_and_labels(6)
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        separation.layerwise_separation(model, x, y[:5])
    with pytest.raises(ValueError, match="no `features`"):
        separation.layerwise_separation(nn.Sequential(nn.Flatten(), nn.Linear(3072, 2)), x, y)
    assert no_hooks_left(model)


# ---------------------------------------------------------------- the VGG-16 whose layers are measured

def test_vgg16_with_batchnorm_in_the_conv_slots_matches_torchvision_vgg16_bn():
    with torch.device("meta"):
        plain, with_bn = models.VGG16(10), models.VGG16(10, batchnorm=True)
    assert models.count_parameters(plain) == 134_301_514
    assert models.count_parameters(with_bn) == models.count_parameters(torchvision.models.vgg16_bn(num_classes=10))
    assert len(with_bn.features) == 31
    slots = [m for m in with_bn.features if isinstance(m, nn.Sequential)]
    assert len(slots) == 13 and all(isinstance(s[0], nn.Conv2d) and isinstance(s[1], nn.BatchNorm2d) for s in slots)


def test_torchvision_init_scales():
    model = models.torchvision_init_(models.VGG16(width=0.5, hidden=512, batchnorm=True))
    conv = model.features[28][0]
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() / (2 / fan_out) ** 0.5 - 1) < 0.05
    assert abs(model.classifier[0].weight.std().item() / 0.01 - 1) < 0.05
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert torch.count_nonzero(module.bias) == 0
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))


def test_vgg_optimizer():
    params = [nn.Parameter(torch.zeros(3))]
    sgd = models.vgg_optimizer(params, "sgd", 0.01, 5e-4)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 5e-4
    adam = models.vgg_optimizer(params, "adam", 1e-3)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="Unknown optimiser"):
        models.vgg_optimizer(params, "rmsprop", 0.1)
