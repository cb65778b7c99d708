import pytest
import torch

import helpers
from helpers.profile import chapter_settings, resolve_data, resolve_profile


def test_auto_profile_follows_environment(monkeypatch):
    monkeypatch.setenv("HELPERS_PROFILE", "cpu")
    assert resolve_profile("auto") == ("cpu", "HELPERS_PROFILE is set")


def test_auto_profile_without_environment_depends_on_gpu(monkeypatch):
    monkeypatch.delenv("HELPERS_PROFILE", raising=False)
    expected = "full" if torch.cuda.is_available() else "smoke"
    assert resolve_profile("auto")[0] == expected


def test_explicit_profile_wins_over_environment(monkeypatch):
    monkeypatch.setenv("HELPERS_PROFILE", "full")
    assert resolve_profile("smoke")[0] == "smoke"


@pytest.mark.parametrize("bad", ["fast", "SMOKEY", ""])
def test_unknown_profile_is_a_clear_error(bad, monkeypatch):
    monkeypatch.setenv("HELPERS_PROFILE", "x")
    with pytest.raises(ValueError, match="Unknown profile"):
        resolve_profile(bad or "auto")


def test_data_source_resolution(tmp_path):
    assert resolve_data("auto", "smoke") == "standin"
    assert resolve_data("auto", "full") == "real"
    assert resolve_data(str(tmp_path), "smoke") == str(tmp_path)
    with pytest.raises(ValueError, match="Unknown data source"):
        resolve_data("imagenet", "smoke")


def test_setup_prints_profile_reason_and_how_to_change(capsys):
    run = helpers.setup("smoke", chapter="01", seed=3)
    out = capsys.readouterr().out
    assert "Profile: smoke" in out and "PROFILE was set" in out and "HELPERS_PROFILE" in out
    assert "Device:" in out and "torch" in out and "seed 3" in out
    assert run.settings.epochs == chapter_settings("01", "smoke").epochs
    assert run.standin and run.checkpoint("x") is None


def test_seed_everything_repeats_random_draws():
    helpers.seed_everything(7)
    a = torch.rand(3)
    helpers.seed_everything(7)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError):
        helpers.seed_everything(-1)


def test_checkpoint_names_change_with_settings_and_data(tmp_path, monkeypatch):
    monkeypatch.setenv("HELPERS_CHECKPOINT_DIR", str(tmp_path))
    run = helpers.setup("cpu", chapter="01", seed=0, data="standin", quiet=True)
    path = run.checkpoint("mlp")
    assert path.startswith(str(tmp_path)) and path == run.checkpoint("mlp")
    run.settings.epochs += 1  # another recipe must not resume from this one's weights
    assert run.checkpoint("mlp") != path
    other_data = helpers.setup("cpu", chapter="01", seed=0, data=str(tmp_path), quiet=True)
    assert other_data.checkpoint("mlp") != path


@pytest.mark.parametrize("profile", ["cpu", "full"])
def test_chapter_7_builds_chapter_6s_vgg_so_its_checkpoint_loads(profile):
    ch6, ch7 = vars(chapter_settings("06", profile)), vars(chapter_settings("07", profile))
    architecture = ("width", "hidden", "dropout", "batchnorm")
    assert {k: ch7[k] for k in architecture} == {k: ch6[k] for k in architecture}


def test_a_chapter_finds_another_chapters_checkpoint(tmp_path, monkeypatch):
    # Chapter 7 loads the VGG-16 that chapter 6 trained: same profile, seed and data, chapter 6's declaration.
    monkeypatch.setenv("HELPERS_CHECKPOINT_DIR", str(tmp_path))
    ch6 = helpers.setup("cpu", chapter="06", seed=3, data="standin", quiet=True)
    ch7 = helpers.setup("cpu", chapter="07", seed=3, data="standin", quiet=True)
    assert ch7.checkpoint("vgg16", chapter="06") == ch6.checkpoint("vgg16") != ch7.checkpoint("vgg16")
    assert helpers.setup("cpu", chapter="07", seed=4, data="standin", quiet=True).checkpoint(
        "vgg16", chapter="06") != ch6.checkpoint("vgg16")


def test_threads_come_from_the_environment_only(monkeypatch):
    from helpers.profile import DEFAULT_THREADS, cpu_threads

    monkeypatch.delenv("HELPERS_THREADS", raising=False)
    assert cpu_threads() == DEFAULT_THREADS
    monkeypatch.setenv("HELPERS_THREADS", "1")
    assert cpu_threads() == 1
    monkeypatch.setenv("HELPERS_THREADS", "two")
    with pytest.raises(ValueError, match="HELPERS_THREADS"):
        cpu_threads()
