"""Rehearsal mode: the caps (one naming rule in helpers/settings), `fit`'s batch cap, the workload records, and
the rehearsal of every chapter in the cpu and full profiles (marked `rehearsal`; `make rehearse` runs them too)."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import helpers
from helpers import data, models
from helpers.profile import PROFILES, checkpoint_dir
from helpers.settings import (NOT_COUNTS, REHEARSAL_BATCHES, REHEARSAL_SAMPLES, REHEARSAL_TRAIN, Capped,
                              chapter_module, chapter_settings, chapters, flat, rehearsal_cap, uncapped)

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("rehearse", ROOT / "benchmarks" / "rehearse.py")
rehearse = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rehearse)


def _rows(chapter):
    """Every profile's row of a chapter as (profile, dotted key, value), groups spelt `group.key`."""
    module = chapter_module(chapter)
    for profile in PROFILES:
        row = dict(module.COMMON)
        for key, value in module.OVERRIDES[profile].items():
            row[key] = {**row.get(key, {}), **value} if isinstance(value, dict) else value
        for key, value in row.items():
            for inner, v in (value.items() if isinstance(value, dict) else [(None, value)]):
                yield profile, key if inner is None else f"{key}.{inner}", v


def _integer(value):
    ints = value if isinstance(value, (tuple, list)) else (value,)
    return bool(ints) and all(isinstance(v, int) and not isinstance(v, bool) for v in ints)


@pytest.mark.parametrize("chapter", chapters())
def test_every_integer_setting_is_capped_or_declared_not_a_count(chapter):
    undeclared = sorted({key for _, key, value in _rows(chapter) if _integer(value)
                         and rehearsal_cap(key) is None and key.rsplit(".", 1)[-1] not in NOT_COUNTS})
    assert not undeclared, (
        f"chapter {chapter}: {undeclared} hold integers that the rehearsal neither caps nor keeps. Name a count so "
        f"that the rule in helpers/settings/__init__.py caps it (*epochs, *_steps, *_size, *_train, ...), or add "
        f"the name to NOT_COUNTS if it is a width, a batch size or a method parameter.")
    tuples = {key for _, key, value in _rows(chapter) if isinstance(value, (tuple, list)) and _integer(value)}
    assert all(rehearsal_cap(key) is None for key in tuples), "a tuple of integers is never a count to cap"


def test_not_counts_names_only_existing_settings():
    names = {key.rsplit(".", 1)[-1] for chapter in chapters() for _, key, _ in _rows(chapter)}
    assert NOT_COUNTS <= names, f"stale names in NOT_COUNTS: {sorted(NOT_COUNTS - names)}"


@pytest.mark.parametrize("chapter", chapters())
@pytest.mark.parametrize("profile", ["cpu", "full"])
def test_rehearsal_caps_the_counts_and_keeps_everything_else(chapter, profile, monkeypatch):
    real = flat(chapter_settings(chapter, profile))
    monkeypatch.setenv("HELPERS_REHEARSAL", "1")
    capped = flat(chapter_settings(chapter, profile))
    assert capped.keys() == real.keys()
    for key, value in capped.items():
        if isinstance(value, Capped):
            assert value <= REHEARSAL_TRAIN and uncapped(value) == real[key] and value != real[key], key
        else:
            assert value == real[key] and type(value) is type(real[key]), key
    counts = [key for key in capped if key.endswith("epochs")]
    assert counts and all(capped[key] == 1 for key in counts)
    assert all(capped[key] <= REHEARSAL_TRAIN for key in capped if "train" in key)
    assert all(capped[key] <= REHEARSAL_SAMPLES for key in capped if key.endswith(("test_size", "_test")))


def test_capped_counts_add_up_and_remember_the_profile_value():
    total = Capped(256, 600) + Capped(256, 1000)
    assert total == 512 and uncapped(total) == 1600
    assert uncapped(Capped(256, None) + 3) is None and uncapped(7) == 7
    assert Capped(1, 200) + 0.5 == 1.5 and range(Capped(1, 200) + 1) == range(2)


def test_rehearsal_keeps_its_checkpoints_apart(monkeypatch, tmp_path):
    monkeypatch.setenv("HELPERS_CHECKPOINT_DIR", str(tmp_path))
    assert checkpoint_dir() == str(tmp_path)
    monkeypatch.setenv("HELPERS_REHEARSAL", "1")
    assert checkpoint_dir() == str(tmp_path / "rehearsal")
    run = helpers.setup("full", chapter="06", data="standin", quiet=True)
    assert Path(run.checkpoint("vgg16")).parent == tmp_path / "rehearsal"


def test_setup_says_it_is_a_rehearsal(monkeypatch, capsys):
    monkeypatch.setenv("HELPERS_REHEARSAL", "1")
    helpers.setup("cpu", chapter="01", data="standin")
    assert "Rehearsal" in capsys.readouterr().out
    monkeypatch.setenv("HELPERS_REHEARSAL", "0")
    helpers.setup("cpu", chapter="01", data="standin")
    assert "Rehearsal" not in capsys.readouterr().out


def _counting_loader(dataset, batch_size, seen):
    loader = data.loader(dataset, batch_size, shuffle=True)

    class Counting:
        def __iter__(self):
            for batch in loader:
                seen.append(len(batch[1]))
                yield batch

        def __len__(self):
            return len(loader)

        def __getattr__(self, name):
            return getattr(loader, name)

    return Counting()


def test_fit_stops_each_epoch_after_the_rehearsal_batches_and_records_the_real_workload(monkeypatch, tmp_path):
    monkeypatch.setenv("HELPERS_REHEARSAL", "1")
    monkeypatch.setenv("HELPERS_WORKLOAD", str(tmp_path / "workload.jsonl"))
    settings = chapter_settings("01", "full")
    train = data.load("mnist", "train", source="standin", n=settings.train_size)
    assert (len(train), train.represents) == (REHEARSAL_TRAIN, 60000)
    train = train.subset(range(200))  # a fraction of a capped set stands for the same fraction of the real one
    assert train.represents == round(60000 * 200 / 256)
    seen = []
    model = models.MLP((784, 100, 50, 10), "relu")
    helpers.fit(model, _counting_loader(train, 32, seen), epochs=settings.epochs,
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)
    assert seen == [32] * REHEARSAL_BATCHES  # 1 epoch (the capped setting), 2 batches of the real size
    (record,) = [json.loads(line) for line in (tmp_path / "workload.jsonl").read_text().splitlines()]
    assert record["epochs"] == 30 and record["images_per_epoch"] == train.represents
    assert record["batch_size"] == 32 and record["sized_by"] == "profile" and record["memory"] == "counted"
    macs = 784 * 100 + 100 * 50 + 50 * 10
    # Forward, weight gradients, and input gradients of every layer but the first (the images need none).
    assert record["flops_per_image"] == 2 * macs + 2 * macs + 2 * (100 * 50 + 50 * 10)
    parameters = sum(p.numel() for p in model.parameters())
    assert record["memory_bytes"] >= 2 * 4 * parameters + 4 * 32 * 784  # weights, gradients, the input batch


def test_a_step_with_an_adversary_is_measured_and_counts_the_attack(monkeypatch):
    """The adversary's torch.autograd.grad runs inside the measured step (torch's FlopCounterMode broke it)."""
    from helpers import attacks
    from helpers.workload import measure_step

    torch.manual_seed(0)
    model = models.ResNet18(width=0.0625)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    flops = {}
    for adversary in (None, lambda m, x, y: attacks.fgsm(m, x, y, eps=0.1)):
        with measure_step(model, optimizer) as step:
            inputs = x if adversary is None else adversary(model, x, y)
            torch.nn.functional.cross_entropy(model(inputs), y).backward()
            optimizer.step()
        flops[adversary is None] = step["flops"]
    assert flops[False] > 1.5 * flops[True]  # FGSM adds a forward and a backward pass to the step


def test_features_of_a_capped_set_are_recognised_by_their_labels(monkeypatch):
    monkeypatch.setenv("HELPERS_REHEARSAL", "1")
    train = data.load("cifar10", "train", source="standin", n=chapter_settings("06", "cpu").train_size)
    features = TensorDataset(torch.randn(len(train), 8), train.y.clone())
    assert data.represented(features) == 10000 == data.represented(train.dataset())
    assert data.represented(TensorDataset(torch.randn(5, 2), torch.arange(5))) is None


def test_without_rehearsal_fit_runs_every_batch(monkeypatch):
    monkeypatch.delenv("HELPERS_REHEARSAL", raising=False)
    seen = []
    x, y = torch.randn(100, 4), torch.randint(0, 2, (100,))
    model = torch.nn.Linear(4, 2)
    helpers.fit(model, _counting_loader(TensorDataset(x, y), 10, seen), epochs=2,
                optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)
    assert len(seen) == 20


# ---------------------------------------------------------------- the workload table on the set-up page

def test_workload_json_was_recorded_with_the_current_settings():
    workload = json.loads(rehearse.WORKLOAD_JSON.read_text())
    stale = [f"chapter {chapter} {profile}" for chapter in chapters() for profile in rehearse.PROFILES
             if workload.get(chapter, {}).get(profile, {}).get("settings") != rehearse.settings_hash(chapter, profile)]
    assert not stale, f"{stale}: settings changed since benchmarks/workload.json was recorded; run `make rehearse`"


def test_setup_page_shows_the_workload_table_of_the_json():
    page = (ROOT / "book" / "setup.md").read_text()
    table = rehearse.table(json.loads(rehearse.WORKLOAD_JSON.read_text()))
    assert rehearse.section(page) == table, "book/setup.md's workload table differs: run `make rehearse`"


# ---------------------------------------------------------------- every chapter, cpu and full, rehearsed

@pytest.fixture(scope="session")
def rehearsal_dirs(tmp_path_factory):
    """One folder per profile, shared by its chapters (chapter 7 loads chapter 6's checkpoint, as for a reader)."""
    import shutil

    folders = {profile: tmp_path_factory.mktemp(f"rehearsal-{profile}") for profile in rehearse.PROFILES}
    yield folders
    for folder in folders.values():  # full-width checkpoints take gigabytes; pytest keeps its temp folders
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)


@pytest.mark.rehearsal
@pytest.mark.parametrize("profile", rehearse.PROFILES)
@pytest.mark.parametrize("chapter", chapters())
def test_chapter_rehearses_green(chapter, profile, rehearsal_dirs):
    result = rehearse.rehearse(chapter, profile, rehearsal_dirs[profile], device="cpu")
    assert result["phases"], f"chapter {chapter} ({profile}) trained nothing through fit: no workload was recorded"
    sizes = {v for k, v in flat(chapter_settings(chapter, profile)).items() if k.endswith(("batch_size", "batch"))}
    ran = {phase["batch_size"] for phase in result["phases"]}
    assert not sizes or ran & sizes, f"no training step ran at the profile's batch size {sizes}: {ran}"


def test_a_failed_rehearsal_names_the_chapter_the_profile_and_the_cell(tmp_path, monkeypatch):
    import nbformat

    broken = tmp_path / "99_broken.ipynb"
    cells = [nbformat.v4.new_markdown_cell("# 99. Broken"),
             nbformat.v4.new_code_cell('PROFILE = "auto"\nDATA = "auto"', metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("import helpers\nrun = helpers.setup(PROFILE, data=DATA)"),
             nbformat.v4.new_code_cell("raise ValueError('a shape mismatch after an hour')")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), broken)
    monkeypatch.setattr(rehearse, "notebook_of", lambda chapter: broken)
    with pytest.raises(rehearse.RehearsalFailed, match=r"chapter 99 in the full profile failed in cell \[3\]") as info:
        rehearse.rehearse("99", "full", tmp_path / "work", device="cpu")
    assert "a shape mismatch after an hour" in str(info.value)
