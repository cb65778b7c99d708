import pytest
import torch
import torchvision

from helpers import models
from helpers.record import _plain


def test_vgg16_matches_torchvision_layout_and_parameter_count():
    ours, theirs = models.VGG16(num_classes=10), torchvision.models.vgg16(num_classes=10)
    assert models.count_parameters(ours) == models.count_parameters(theirs) == 134_301_514
    assert len(ours.features) == 31
    for a, b in zip(ours.features, theirs.features):
        assert type(a) is type(b)
        if isinstance(a, torch.nn.Conv2d):
            assert a.weight.shape == b.weight.shape
    assert [type(m) for m in ours.classifier] == [type(m) for m in theirs.classifier]
    assert ours.classifier[2].p == 0.5


def test_small_vgg_keeps_31_modules_and_runs():
    net = models.VGG16(width=0.125, hidden=64)
    assert len(net.features) == 31 and net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("batchnorm", [True, False])
def test_resnet18_cifar_style(batchnorm):
    net = models.ResNet18(width=0.25, batchnorm=batchnorm)
    assert isinstance(net.stem[0], torch.nn.Conv2d) and net.stem[0].kernel_size == (3, 3)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == batchnorm
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_full_resnet18_parameter_count():
    # torchvision's resnet18 with a 3x3 stem, no max-pool and 10 classes has 11,173,962 parameters
    assert models.count_parameters(models.ResNet18()) == 11_173_962


def test_normalize_inside_the_model():
    norm = models.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert torch.allclose(norm(torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2))
    assert torch.allclose(norm(torch.zeros(1, 3, 2, 2)), -torch.ones(1, 3, 2, 2))


def test_simplenet_layout():
    net = models.SimpleNet()
    assert net.conv.out_channels == 64 and net.fc.in_features == 64 * 32 * 32
    assert models.count_parameters(net) == 3 * 64 * 9 + 64 + 64 * 32 * 32 * 10 + 10


def test_freeze_keeps_only_the_head_trainable():
    net = models.ResNet18(width=0.25)
    models.freeze(net, trainable=net.fc)
    assert models.count_parameters(net, trainable_only=True) == models.count_parameters(net.fc)


def test_freeze_keep_eval_keeps_the_frozen_part_in_eval_mode_while_its_parent_trains():
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5))
    head = torch.nn.Linear(8, 2)
    model = torch.nn.Sequential(models.freeze(trunk, keep_eval=True), head)
    keys = list(model.state_dict())
    statistics = {k: v.clone() for k, v in trunk.state_dict().items()}
    x = torch.randn(16, 4)
    model.train()  # what fit does every epoch
    out = model(x)
    assert not any(m.training for m in trunk.modules()) and head.training
    assert all(torch.equal(v, trunk.state_dict()[k]) for k, v in statistics.items())  # running stats untouched
    assert torch.equal(out, model(x))  # no dropout: the same output twice
    assert models.count_parameters(model, trainable_only=True) == models.count_parameters(head)
    assert list(model.state_dict()) == keys == ["0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias",
                                                "0.1.running_mean", "0.1.running_var", "0.1.num_batches_tracked",
                                                "1.weight", "1.bias"]  # checkpoints load as before
    plain = models.freeze(torch.nn.Sequential(torch.nn.BatchNorm1d(8)))
    plain.train()
    plain(torch.randn(4, 8))
    assert plain.training  # without keep_eval, train() is obeyed


def test_eval_mode_restores_each_modules_own_mode_even_after_an_error():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(), torch.nn.BatchNorm1d(2)).train()
    model[2].eval()
    with models.eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == [True, True, True, False]
    with pytest.raises(RuntimeError, match="boom"), models.eval_mode(model):
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == [True, True, True, False]


def test_forward_to_stops_after_the_layer_and_always_removes_its_hook():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(inplace=True), torch.nn.Linear(4, 2))
    ran = []
    model[2].register_forward_pre_hook(lambda module, inputs: ran.append(True))
    x = torch.randn(5, 3)
    assert torch.equal(models.forward_to(model, model[0], x), model[0](x))  # before the in-place ReLU
    assert not ran, "the layers after the chosen one must not run"
    with pytest.raises(ValueError, match="did not run"):
        models.forward_to(model, torch.nn.ReLU(), x)
    assert all(not m._forward_hooks for m in model.modules())


def test_record_values_are_plain():
    assert _plain(torch.tensor(0.5)) == 0.5
    assert _plain({"a": torch.tensor([1, 2])}) == {"a": [1, 2]}


def test_recorded_values_read_back_from_a_notebook(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    from helpers.record import read_records

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import helpers\nhelpers.glue('acc', 0.875)\nhelpers.glue('rows', [{'a': 1, 'b': None}])\nhelpers.glue('name', 'x')")])
    NotebookClient(nb, kernel_name="python3").execute()
    nbformat.write(nb, tmp_path / "nb.ipynb")
    assert read_records(tmp_path / "nb.ipynb") == {"acc": 0.875, "rows": [{"a": 1, "b": None}], "name": "x"}
