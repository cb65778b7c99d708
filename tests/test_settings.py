"""Per-chapter settings modules (helpers/settings/chNN.py) and the checkpoint names they define."""
import hashlib
import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import helpers
import helpers.settings as settings_package
from helpers.profile import PROFILES
from helpers.settings import chapter_module, chapter_settings, chapters, checkpoint_keys, flat, setting
from helpers.training import best_path

CHAPTERS = chapters()


def test_every_chapter_notebook_has_a_settings_module():
    notebooks = sorted(p.name[:2] for p in Path(__file__).parents[1].glob("notebooks/[0-9][0-9]_*.ipynb"))
    assert CHAPTERS == notebooks


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_profile_resolves_to_the_same_keys(chapter):
    module = chapter_module(chapter)
    assert set(module.OVERRIDES) == set(PROFILES)
    rows = {profile: set(flat(chapter_settings(chapter, profile))) for profile in PROFILES}
    assert rows["smoke"] == rows["cpu"] == rows["full"]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_checkpoint_declarations_name_existing_settings(chapter):
    for pattern, keys in chapter_module(chapter).CHECKPOINTS.items():
        assert keys and len(set(keys)) == len(keys), pattern
        for profile in PROFILES:
            row = chapter_settings(chapter, profile)
            for key in keys:
                setting(row, key)  # raises AttributeError for a misspelt key


def test_groups_are_namespaces_and_a_profile_overrides_only_the_keys_it_names():
    smoke = chapter_settings("08", "smoke")
    assert (smoke.simple.train, smoke.simple.lr, smoke.simple.momentum) == (1600, 0.01, 0.9)
    assert smoke.recipe.epochs == 3 and setting(smoke, "recipe.batch") == 16
    assert chapter_settings("07", "full").failing == SimpleNamespace(lr=0.01, epochs=3, train_size=10000)
    assert flat(smoke)["recipe_epochs"] == 3 and "recipe" not in flat(smoke)
    chapter_settings("08", "smoke").simple.train = 0  # each call is a fresh row: the module stays as written
    assert chapter_settings("08", "smoke").simple.train == 1600


def test_unknown_chapter_lists_the_chapter_modules():
    with pytest.raises(ValueError, match=r"ch42\.py.*01, 02"):
        chapter_settings("42", "smoke")
    with pytest.raises(ValueError, match="Unknown profile|no settings for profile"):
        chapter_settings("01", "fast")


def test_a_new_chapter_is_one_new_module(tmp_path, monkeypatch):
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "ch09.py").write_text('COMMON = dict(lr=0.1, group=dict(a=1))\n'
                                    'OVERRIDES = {"smoke": dict(epochs=1), "cpu": dict(epochs=5), '
                                    '"full": dict(epochs=50, group=dict(a=2))}\n'
                                    'CHECKPOINTS = {"net": ("lr", "epochs", "group.a")}\n')
    monkeypatch.setattr(settings_package, "__path__", [*settings_package.__path__, str(folder)])
    monkeypatch.setenv("HELPERS_CHECKPOINT_DIR", str(tmp_path))
    try:
        assert "09" in chapters()
        run = helpers.setup("full", chapter="09", seed=0, data="real", quiet=True)
        assert (run.settings.epochs, run.settings.group.a, run.settings.lr) == (50, 2, 0.1)
        assert Path(run.checkpoint("net")).name.startswith("ch09-full-seed0-net-")
    finally:
        sys.modules.pop("helpers.settings.ch09", None)
        importlib.invalidate_caches()


def checkpoint_after(chapter: str, name: str, key: str, value) -> str:
    """The checkpoint path of `name` after setting `key` (may be "group.key") to `value`."""
    run = helpers.setup("cpu", chapter=chapter, seed=0, data="real", quiet=True)
    *group, last = key.split(".")
    setattr(setting(run.settings, ".".join(group)) if group else run.settings, last, value)
    return run.checkpoint(name)


@pytest.mark.parametrize("chapter, name, display, training", [
    ("01", "ReLU-cross-entropy-SGD", "deep_layers", "epochs"),
    ("03", "baseline", "few_label", "svhn_train"),
    ("04", "baseline", "curve_size", "lr"),
    ("04", "advtrained", "slider_eps", "eps"),
    ("05", "circle-m0.25-g2", "plot_points", "embedding_dim"),
    ("05", "sweepval-m0.4-g80", "projection", "sweep_epochs"),
    ("06", "vgg16", "single_feature_sample", "epochs"),
    ("06", "vgg16", "head_epochs", "weight_decay"),  # the heads are trained after, on top of the VGG-16
    ("06", "compressed-linear-k12", "exact_check_samples", "head_epochs"),
    ("07", "vgg16", "cam_layer", "lr"),
    ("07", "vgg16", "failing.epochs", "batch_size"),
    ("08", "recipe-0123abcd", "simple.channels", "recipe.epochs"),
])
def test_display_settings_keep_the_checkpoint_and_training_settings_change_it(
        chapter, name, display, training, tmp_path, monkeypatch):
    monkeypatch.setenv("HELPERS_CHECKPOINT_DIR", str(tmp_path))
    original = helpers.setup("cpu", chapter=chapter, seed=0, data="real", quiet=True).checkpoint(name)
    assert checkpoint_after(chapter, name, display, "changed") == original
    assert checkpoint_after(chapter, name, training, 12345) != original


def test_chapter_7_follows_chapter_6s_declaration_not_its_own_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPERS_CHECKPOINT_DIR", str(tmp_path))
    ch6 = helpers.setup("full", chapter="06", seed=0, data="real", quiet=True)
    ch7 = helpers.setup("full", chapter="07", seed=0, data="real", quiet=True)
    written = ch6.checkpoint("vgg16")
    ch6.settings.single_feature_sample = 1  # a display change in chapter 6 still names the same weights
    assert ch7.checkpoint("vgg16", chapter="06") == written == ch6.checkpoint("vgg16")
    ch7.settings.epochs = 1  # chapter 7's own recipe does not enter chapter 6's name
    assert ch7.checkpoint("vgg16", chapter="06") == written


def test_an_undeclared_checkpoint_is_a_clear_error_in_every_profile():
    for profile in PROFILES:
        run = helpers.setup(profile, chapter="06", seed=0, data="standin", quiet=True)
        with pytest.raises(ValueError, match=r"declares no checkpoint 'resnet'.*vgg16.*ch06\.py"):
            run.checkpoint("resnet")
    with pytest.raises(ValueError, match="declares no checkpoint"):
        checkpoint_keys("02", "anything")


def legacy_name(run, chapter: str, name: str) -> str:
    """The name the previous version gave: a hash of the whole flat settings row and the data source."""
    row = flat(chapter_settings(chapter, run.profile))
    tag = hashlib.sha1(repr((sorted(row.items()), run.data)).encode()).hexdigest()[:8]
    return f"ch{chapter}-{run.profile}-seed{run.seed}-{name}-{tag}.pt"


@pytest.mark.parametrize("chapter, name", [("06", "vgg16"), ("08", "recipe-0123abcd")])
def test_checkpoints_of_the_previous_version_are_renamed_once(chapter, name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HELPERS_CHECKPOINT_DIR", str(tmp_path))
    run = helpers.setup("full", chapter=chapter, seed=1, data="real", quiet=True)
    legacy = tmp_path / legacy_name(run, chapter, name)
    legacy.write_bytes(b"state")
    best_path(legacy).write_bytes(b"best")
    path = Path(run.checkpoint(name))
    assert path.name != legacy.name and path.read_bytes() == b"state" and best_path(path).read_bytes() == b"best"
    assert not legacy.exists() and not best_path(legacy).exists()
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and legacy.name in out and path.name in out
    legacy.write_bytes(b"older")  # a new-named checkpoint is never overwritten by a legacy one
    assert run.checkpoint(name) == str(path) and path.read_bytes() == b"state" and legacy.exists()
    assert capsys.readouterr().out == ""
