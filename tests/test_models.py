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
