"""helpers.interpret: Grad-CAM vs pytorch-grad-cam, guided backprop, occlusion, hooks always removed, clear errors."""
import copy

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from helpers import data, fit, interpret, models, plots, reference

matplotlib.use("Agg")


def vgg(seed: int = 0, double: bool = False) -> nn.Module:
    """A small VGG-16 (torchvision layout, ReLU(inplace=True)) with He init, so signals keep their scale."""
    torch.manual_seed(seed)
    model = models.VGG16(width=0.125, hidden=32)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    model = model.eval()
    return model.double() if double else model


def without_inplace(model: nn.Module) -> nn.Module:
    """A copy whose ReLUs are not in-place (pytorch-grad-cam reads activations that an in-place ReLU overwrote)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
               for m in model.modules())


def reference_grad_cam(model, x, layer, targets):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = dict(model.named_modules())[layer]
    with GradCAM(model=model, target_layers=[module]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])


# Layers whose output no in-place op modifies (ReLU and pooling outputs), and convolutions
# followed by ReLU(inplace=True).
UNTOUCHED = ["features.29", "features.23", "features.16", "features.9", "features.3"]
BEFORE_INPLACE = ["features.28", "features.12", "features.0"]


@pytest.mark.parametrize("seed", [0, 1])
def test_grad_cam_equals_pytorch_grad_cam_in_float64(seed):
    # Computed in float64 on both sides, the two independent implementations agree to < 1e-6
    # (pytorch-grad-cam resizes in float32: that is the remaining ~1e-7).
    model = without_inplace(vgg(seed, double=True))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    targets = [3, 1, 9]
    for layer in UNTOUCHED + BEFORE_INPLACE:
        ours = interpret.grad_cam(model, x, layer, targets).numpy()
        ref = reference_grad_cam(model, x, layer, targets)
        assert ours.shape == ref.shape == (3, 32, 32)
        assert np.abs(ours - ref).max() < 1e-6, layer


def test_grad_cam_equals_pytorch_grad_cam_in_float32():
    # In float32 both carry rounding error of the weighted channel sum: tolerance 5e-6.
    model = vgg(3)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    for layer in UNTOUCHED:
        ours = interpret.grad_cam(model, x, layer, [0, 5, 2, 7]).numpy()
        ref = reference_grad_cam(model, x, layer, [0, 5, 2, 7])
        assert np.abs(ours - ref).max() < 5e-6, layer


def test_grad_cam_on_layer_before_inplace_relu_uses_the_layers_own_output():
    # A convolution followed by ReLU(inplace=True): we keep its pre-ReLU output, so we match the
    # reference run on an otherwise identical model without in-place ReLUs ...
    model = vgg(4, double=True)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for layer in BEFORE_INPLACE:
        ours = interpret.grad_cam(model, x, layer, [1, 2]).numpy()
        ref = reference_grad_cam(without_inplace(model), x, layer, [1, 2])
        assert np.abs(ours - ref).max() < 1e-6, layer
    # ... while the reference on the in-place model reads activations the ReLU overwrote (on CPU).
    stale = reference_grad_cam(model, x, "features.28", [1, 2])
    assert np.abs(interpret.grad_cam(model, x, "features.28", [1, 2]).numpy() - stale).max() > 1e-3


def test_grad_cam_shape_range_default_target_and_mode():
    model = vgg().train()
    x = torch.rand(3, 32, 32)
    cam = interpret.grad_cam(model, x, "features.29")
    assert cam.shape == (1, 32, 32)
    assert float(cam.min()) >= 0 and float(cam.max()) <= 1
    assert float(cam.max()) > 0.99  # min-max normalised
    predicted = int(model.eval()(x[None]).argmax())
    model.train()
    same = interpret.grad_cam(model, x, "features.29", predicted)
    assert torch.equal(cam, same)
    assert model.training, "the model's train mode must be restored"
    assert all(p.grad is None for p in model.parameters()), "parameter gradients must stay untouched"


def test_grad_cam_all_zero_map_is_zeros():
    model = vgg()
    # A 1x1 map (after the last pooling) is constant: defined as all zeros, not NaN.
    cam = interpret.grad_cam(model, torch.rand(2, 3, 32, 32), "features.30", [0, 1])
    assert torch.equal(cam, torch.zeros(2, 32, 32))
    # A layer that outputs zeros everywhere (all ReLUs off) gives all zeros too.
    with torch.no_grad():
        model.features[28].bias.fill_(-1e4)
    cam = interpret.grad_cam(model, torch.rand(2, 3, 32, 32), "features.29", [0, 1])
    assert torch.isfinite(cam).all() and torch.equal(cam, torch.zeros(2, 32, 32))


# ---------------------------------------------------------------- guided backpropagation

class SharedReLUNet(nn.Module):
    """One ReLU(inplace=True) instance used three times (module swapping would break it)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc1 = nn.Linear(6 * 8 * 8, 16)
        self.fc2 = nn.Linear(16, 5)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x, act=None):
        act = act or self.relu
        x = act(self.conv1(x))
        x = act(self.conv2(x))
        return self.fc2(act(self.fc1(x.flatten(1))))


def test_guided_backprop_shared_inplace_relu_matches_definition():
    torch.manual_seed(0)
    model = SharedReLUNet().eval()
    x = torch.rand(3, 3, 8, 8)
    ours = interpret.guided_backprop(model, x, [0, 3, 4])
    xr = x.clone().requires_grad_(True)
    logits = model(xr, act=reference.GuidedReLU.apply)
    ref, = torch.autograd.grad(logits.gather(1, torch.tensor([[0], [3], [4]])).sum(), xr)
    assert torch.allclose(ours, ref, atol=1e-7, rtol=0)
    assert torch.allclose(reference.guided_backprop(model, x, [0, 3, 4]), ref, atol=1e-7, rtol=0)
    # and it is not plain backprop: the rule changed something
    assert not torch.allclose(ours, reference.input_gradient(model, x, [0, 3, 4]))


def test_guided_backprop_equals_pytorch_grad_cam():
    from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel

    model = vgg(5)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ours = interpret.guided_backprop(model, x, 6)[0].permute(1, 2, 0).numpy()
    ref = GuidedBackpropReLUModel(copy.deepcopy(model), device="cpu")(x.clone(), target_category=6)
    assert np.abs(ours - ref).max() < 1e-6 * max(1.0, np.abs(ref).max())


def test_guided_backprop_leaves_relu_behaviour_unchanged():
    torch.manual_seed(1)
    for model in (SharedReLUNet().eval(), vgg(6)):
        size = 8 if isinstance(model, SharedReLUNet) else 32
        x = torch.rand(2, 3, size, size)
        relus_before = [(id(m), m.inplace) for m in model.modules() if isinstance(m, nn.ReLU)]

        def normal_backward():
            model.zero_grad()
            xr = x.clone().requires_grad_(True)
            model(xr)[:, 1].sum().backward()
            return xr.grad.clone(), [p.grad.clone() for p in model.parameters()]

        before = normal_backward()
        interpret.guided_backprop(model, x, 1)
        interpret.guided_grad_cam(model, x, "conv2" if size == 8 else "features.29", 1)
        after = normal_backward()
        assert torch.equal(before[0], after[0])
        assert all(torch.equal(a, b) for a, b in zip(before[1], after[1]))
        assert [(id(m), m.inplace) for m in model.modules() if isinstance(m, nn.ReLU)] == relus_before
        assert no_hooks_left(model)


def test_guided_grad_cam_is_product():
    model = vgg(7)
    x = torch.rand(2, 3, 32, 32)
    gg = interpret.guided_grad_cam(model, x, "features.29", [2, 8])
    expected = interpret.guided_backprop(model, x, [2, 8]) * interpret.grad_cam(model, x, "features.29", [2, 8])[:, None]
    assert gg.shape == (2, 3, 32, 32) and torch.equal(gg, expected)
    image = interpret.gradient_image(gg)
    assert image.shape == gg.shape and float(image.min()) >= 0 and float(image.max()) <= 1


# ---------------------------------------------------------------- hooks and errors

def test_hooks_removed_even_on_error():
    model = vgg()
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(RuntimeError, match="boom"):
        with interpret.capture(model, ["features.3", "features.29"], keep_graph=True):
            model(x)
            raise RuntimeError("boom")
    assert no_hooks_left(model)
    with pytest.raises(RuntimeError, match="boom"):
        with interpret.guided_relus(model):
            raise RuntimeError("boom")
    assert no_hooks_left(model)
    with pytest.raises(ValueError, match="out of range"):  # raised after the forward pass, inside the hooks
        interpret.grad_cam(model, x, "features.29", 10)
    with pytest.raises(ValueError, match="out of range"):
        interpret.guided_backprop(model, x, -1)
    with pytest.raises(ValueError, match="filter indices"):
        interpret.visualise_filters(model, "features.2", [0, 99], steps=2)
    with pytest.raises(RuntimeError):  # an error inside the model itself, with hooks registered
        interpret.grad_cam(model, torch.rand(2, 3, 8, 8), "features.29")  # too small for 5 poolings
    assert no_hooks_left(model)


def test_bad_layer_name_lists_close_names():
    model = vgg()
    with pytest.raises(ValueError, match=r"No layer named 'feature\.29'.*features\.29"):
        interpret.grad_cam(model, torch.rand(1, 3, 32, 32), "feature.29")
    with pytest.raises(ValueError, match="not a sub-module"):
        interpret.grad_cam(model, torch.rand(1, 3, 32, 32), nn.Conv2d(3, 3, 3))
    with pytest.raises(ValueError, match="No layer named"):
        interpret.activations(model, torch.rand(1, 3, 32, 32), ["classifier.99"])
    with pytest.raises(TypeError, match="module name"):
        interpret.get_layer(model, 29)
    assert interpret.get_layer(model, model.features[29]) == ("features.29", model.features[29])


def test_bad_targets_and_inputs():
    model = vgg()
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"out of range.*10 outputs.*0\.\.9"):
        interpret.grad_cam(model, x, "features.29", [1, 10])
    with pytest.raises(ValueError, match="one target class per image"):
        interpret.grad_cam(model, x, "features.29", [1, 2, 3])
    with pytest.raises(ValueError, match="integer class indices"):
        interpret.occlusion(model, x, 1.5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        interpret.grad_cam(model, torch.rand(32, 32), "features.29")
    with pytest.raises(ValueError, match="Grad-CAM needs a layer"):
        interpret.grad_cam(model, x, "classifier.0")
    with pytest.raises(ValueError, match="patch"):
        interpret.occlusion(model, x, 0, patch=40)
    with pytest.raises(ValueError, match="no patch ever covers"):  # pixels between the patches would get 0/0
        interpret.occlusion(model, x, 0, patch=4, stride=5)


# ---------------------------------------------------------------- activations, filters, occlusion

def test_activations_and_forward_to():
    model = vgg()
    x = torch.rand(2, 3, 32, 32)
    acts = interpret.activations(model, x, ["features.0", "features.29", "classifier.6"])
    assert acts["features.0"].shape == (2, 8, 32, 32)  # 64 channels at width 1/8
    assert acts["features.29"].shape == (2, 64, 2, 2) and acts["classifier.6"].shape == (2, 10)
    assert (acts["features.0"] < 0).any(), "a conv output before ReLU(inplace=True) keeps its negative values"
    assert torch.allclose(acts["classifier.6"], model(x))
    assert torch.equal(interpret.forward_to(model, "features.4", x), model.features[:5](model.normalize(x)))
    assert no_hooks_left(model)


def test_visualise_filters_raises_the_filter_activation():
    model = vgg()
    images = interpret.visualise_filters(model, "features.2", [0, 3], steps=25, seed=0)
    assert images.shape == (2, 3, 32, 32)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    noise = (0.5 + 0.1 * torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        for i, f in enumerate([0, 3]):
            start = interpret.forward_to(model, "features.2", noise[i:i + 1])[0, f].mean()
            end = interpret.forward_to(model, "features.2", images[i:i + 1])[0, f].mean()
            assert end > start + 0.1
    assert all(p.grad is None for p in model.parameters())
    assert no_hooks_left(model)


def test_occlusion_with_a_patch_covering_nothing_changes_nothing():
    model = vgg()
    x = torch.rand(2, 3, 32, 32)
    # fill equal to the image: every "occluded" input is the image itself
    assert torch.equal(interpret.occlusion(model, x, [1, 2], patch=8, stride=4, fill=x), torch.zeros(2, 32, 32))
    # a zero-size region leaves the image unchanged
    assert torch.equal(interpret.occlude(x, 5, 5, 0, 8, fill=0.0), x)
    assert torch.equal(interpret.occlude(x, 5, 5, 8, 0, fill=0.0), x)
    hidden = interpret.occlude(x, 4, 8, 2, 3, fill=0.25)
    assert (hidden[:, :, 4:6, 8:11] == 0.25).all() and (hidden != x).sum() <= 2 * 3 * 2 * 3


def test_occlusion_matches_the_plain_loop_of_helpers_reference():
    model = vgg()
    x = torch.rand(2, 3, 32, 32)
    heat = interpret.occlusion(model, x, [4, 7], patch=8, stride=8, fill=0.5, batch_size=5)
    assert heat.shape == (2, 32, 32)
    assert torch.allclose(heat.double(), reference.occlusion(model, x, [4, 7], 8, 8, 0.5), atol=1e-6)
    # overlapping patches: every pixel is covered (the last patch touches the border), no NaN
    heat = interpret.occlusion(model, x[:1], 4, patch=7, stride=5)
    assert torch.isfinite(heat).all() and heat.abs().sum() > 0
    assert torch.allclose(heat.double(), reference.occlusion(model, x[:1], 4, 7, 5, 0.5), atol=1e-6)


def test_occlude_peak_and_least_on_a_model_that_only_sees_one_corner():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0].view(3, 16, 16)[:, :4, :4] = 1.0
    x = torch.ones(2, 3, 16, 16)
    heat = torch.zeros(2, 16, 16)
    heat[:, :4, :4] = 1.0
    drops = interpret.occlude_peak_and_least(model, x, heat, 0, patch=4, fill=0.0)
    assert drops["peak"] == [48.0, 48.0] and drops["least"] == [0.0, 0.0]


# ---------------------------------------------------------------- the fit callback

def test_training_snapshots_callback_in_fit():
    train = data.load("cifar10", "train", n=40, seed=0, source="standin")
    x, y = train.tensors()
    model = models.VGG16(width=0.125, hidden=16)
    snapshots = interpret.TrainingSnapshots(x[:3], y[:3], "features.29", classes=train.classes)
    snapshots(0, model, None)
    fit(model, data.loader(train, 20, shuffle=True), epochs=2,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01), callbacks=[snapshots], progress=False)
    assert [s["epoch"] for s in snapshots.snapshots] == [0, 1, 2]
    for shot in snapshots.snapshots:
        assert shot["cam"].shape == (3, 32, 32) and float(shot["cam"].min()) >= 0 and float(shot["cam"].max()) <= 1
        assert shot["activation"].shape[0] == 3 and len(shot["pred"]) == 3 and 0 <= shot["dead_fraction"] <= 1
    for kind in ("cam", "activation"):
        fig = snapshots.timeline(kind, caption=train.caption)
        assert len(fig.axes) == 3 * 3
        matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="kind"):
        snapshots.timeline("gradients")
    assert no_hooks_left(model)


def test_explore_draws_static_panels_and_checks_class_names():
    model = vgg()
    x = torch.rand(2, 3, 32, 32)
    names = [f"class {i}" for i in range(10)]
    interpret.explore(model, x, [0, 1], names, ["features.8", "features.15"])
    assert no_hooks_left(model)
    fig = plots.explanation_grid(x, {"Grad-CAM": interpret.grad_cam(model, x, "features.15")}, ["a", "b"])
    assert len(fig.axes) == 4
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="10 outputs but 3 class names"):
        interpret.explore(model, x, [0, 1], names[:3], ["features.8"])


def test_explore_live_view_is_drawn_only_on_demand(monkeypatch):
    from helpers import widgets

    seen = {}
    monkeypatch.setattr(widgets, "interactive",
                        lambda figure, controls, draw_now=True: seen.update(figure=figure, controls=controls,
                                                                            draw_now=draw_now))
    model = vgg()
    x = torch.rand(2, 3, 32, 32)
    interpret.explore(model, x, [0, 1], [f"class {i}" for i in range(10)], ["features.8", "features.15"])
    assert seen["draw_now"] is False, "a headless run must not compute the live view"
    assert set(seen["controls"]) == {"image", "klass", "layer"} and seen["controls"]["layer"].value == "features.15"
    fig = seen["figure"](image=1, klass=3, layer="features.8")  # what a change of the controls draws
    assert len(fig.axes) == 3
    matplotlib.pyplot.close(fig)
    assert no_hooks_left(model)


def test_widgets_interactive_draws_lazily_then_on_every_change():
    import ipywidgets

    from helpers import widgets

    calls = []

    def figure(value):
        calls.append(value)
        return matplotlib.pyplot.figure()

    control = ipywidgets.IntSlider(value=1, min=0, max=5)
    widgets.interactive(figure, {"value": control}, draw_now=False)
    assert calls == []
    control.value = 4
    assert calls == [4]
    widgets.interactive(figure, {"value": ipywidgets.IntSlider(value=2)})
    assert calls == [4, 2]
