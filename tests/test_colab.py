"""Colab as a student uses it: `auto` without a GPU, checkpoints kept on a Drive folder that may drop out, the
release pin that the Colab cell installs, and that install itself (simulated: a venv where torch is preinstalled)."""
import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import helpers
from helpers import data
from helpers.profile import persist_dir, persisted, resolve_profile
from helpers.training import best_path, load_weights

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- PROFILE = "auto" on Colab

@pytest.fixture
def on_colab(monkeypatch):
    """A fake google.colab module, as Colab's kernel has one loaded."""
    google = types.ModuleType("google")
    colab = types.ModuleType("google.colab")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.delenv("HELPERS_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_on_colab_without_a_gpu_is_cpu_and_says_why(on_colab, capsys):
    name, reason = resolve_profile("auto")
    assert name == "cpu" and "Colab without a GPU" in reason
    assert helpers.setup("auto", chapter="01", data="standin").profile == "cpu"
    assert reason in capsys.readouterr().out


def test_auto_on_colab_with_a_gpu_is_full(on_colab, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile("auto")[0] == "full"


def test_auto_elsewhere_without_a_gpu_stays_smoke(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.delenv("HELPERS_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile("auto")[0] == "smoke"


# ---------------------------------------------------------------- checkpoints kept on a persistent folder

def _problem(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def _fit(checkpoint, epochs, callbacks=()):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    history = helpers.fit(model, data.loader(_problem(), 16, shuffle=True), data.loader(_problem(), 64),
                          epochs=epochs, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                          checkpoint=checkpoint, callbacks=callbacks, progress=False)
    return model, history


@pytest.fixture
def drive(tmp_path, monkeypatch):
    """A local checkpoint folder and a 'Drive' folder set as HELPERS_PERSIST_DIR."""
    monkeypatch.delenv("HELPERS_REHEARSAL", raising=False)
    monkeypatch.setenv("HELPERS_CHECKPOINT_DIR", str(tmp_path / "local"))
    monkeypatch.setenv("HELPERS_PERSIST_DIR", str(tmp_path / "drive"))
    (tmp_path / "drive").mkdir()
    return tmp_path


def test_checkpoints_are_copied_after_every_epoch(drive):
    checkpoint = drive / "local" / "ch01-cpu-run.pt"
    copies = []
    _fit(checkpoint, 3, callbacks=[lambda epoch, model, history: copies.append(
        torch.load(persisted(checkpoint), weights_only=True)["history"]["epochs"])])
    assert copies == [[1], [1, 2], [1, 2, 3]]
    for file in (checkpoint, best_path(checkpoint)):
        assert persisted(file).read_bytes() == file.read_bytes()
    assert persisted(checkpoint) == drive / "drive" / "ch01-cpu-run.pt"


def test_a_recycled_runtime_resumes_from_the_persistent_copy(drive, capsys):
    checkpoint = drive / "local" / "ch01-cpu-run.pt"
    _fit(checkpoint, 2)
    shutil.rmtree(drive / "local")  # a new runtime: the local disk is empty
    _, history = _fit(checkpoint, 4)
    out = capsys.readouterr().out
    assert "Restored ch01-cpu-run.pt" in out and "resumed from ch01-cpu-run.pt after epoch 2" in out
    assert history.epochs == [1, 2, 3, 4]


def test_setup_checkpoint_restores_a_checkpoint_another_chapter_loads_directly(drive):
    run = helpers.setup("cpu", chapter="07", seed=0, data="standin", quiet=True)
    path = Path(run.checkpoint("vgg16", chapter="06"))
    assert persist_dir() == drive / "drive"
    persisted(best_path(path)).write_bytes(b"weights")
    assert not best_path(path).exists()
    path = Path(run.checkpoint("vgg16", chapter="06"))  # what chapter 7 does before loading chapter 6's weights
    assert best_path(path).read_bytes() == b"weights"


@pytest.mark.parametrize("drop", ["folder removed", "file in its place"])
def test_a_drive_that_drops_mid_run_warns_and_training_goes_on(drive, drop):
    checkpoint = drive / "local" / "ch01-cpu-run.pt"

    def unmount(epoch, model, history):
        if epoch == 1:
            shutil.rmtree(drive / "drive")
            if drop == "file in its place":
                (drive / "drive").write_text("not a folder")

    with pytest.warns(RuntimeWarning, match="Could not copy .* Training goes on"):
        model, history = _fit(checkpoint, 3, callbacks=[unmount])
    assert history.epochs == [1, 2, 3]
    state = torch.load(checkpoint, weights_only=True)  # the local copy is complete
    assert state["history"]["epochs"] == [1, 2, 3]
    load_weights(torch.nn.Linear(4, 2), best_path(checkpoint))
    if drop == "folder removed":
        assert not (drive / "drive").exists(), "a dropped mount must not be re-created on the local disk"
    else:
        assert (drive / "drive").read_text() == "not a folder"


def test_without_a_persistent_folder_nothing_is_copied(tmp_path, monkeypatch):
    monkeypatch.delenv("HELPERS_PERSIST_DIR", raising=False)
    assert persist_dir() is None and persisted(tmp_path / "x.pt") is None
    _fit(tmp_path / "x.pt", 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.best.pt", "x.pt"]


# ---------------------------------------------------------------- the release the Colab cell pins

def release_drift(repo: Path, version: str) -> str | None:
    """What differs in helpers/ between tag v<version> and the working tree; None if equal or the tag is absent."""
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)

    if git("rev-parse", "--verify", "--quiet", f"refs/tags/v{version}").returncode != 0:
        return None
    diff = git("diff", "--stat", f"v{version}", "--", "helpers")
    changed = git("ls-files", "--others", "--exclude-standard", "--", "helpers").stdout.strip()
    return (diff.stdout + changed).strip() or None


def test_helpers_equal_the_pinned_release_unless_the_version_was_bumped():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    drift = release_drift(ROOT, helpers.__version__)
    assert drift is None, (
        f"helpers/ differs from tag v{helpers.__version__}, which every Colab cell installs while the notebook "
        f"comes from main. Bump __version__ in helpers/__init__.py (and the pin in the notebooks), then tag the "
        f"release (README, 'Releasing'):\n{drift}")


def test_release_drift_guard_catches_a_change_and_accepts_a_bump(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "__init__.py").write_text('__version__ = "0.1.0"\n')
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "release")
    git("tag", "v0.1.0")
    assert release_drift(tmp_path, "0.1.0") is None
    (tmp_path / "helpers" / "new.py").write_text("x = 1\n")
    assert "new.py" in release_drift(tmp_path, "0.1.0")
    (tmp_path / "helpers" / "__init__.py").write_text('__version__ = "0.1.1"\n')
    assert release_drift(tmp_path, "0.1.1") is None  # bumped: no tag yet, the next release will pin it


# ---------------------------------------------------------------- the Colab install, simulated

def _torch_fingerprint() -> str:
    """torch's version, its RECORD and the size and mtime of every file it lists."""
    dist = importlib.metadata.distribution("torch")
    digest = hashlib.sha256(dist.version.encode() + (dist.read_text("RECORD") or "").encode())
    for file in dist.files or ():
        path = Path(dist.locate_file(file))
        stat = path.stat() if path.exists() else None
        digest.update(f"{file}:{stat and (stat.st_size, stat.st_mtime_ns)}".encode())
    return digest.hexdigest()


def test_the_colab_install_keeps_torch_and_gives_a_working_package(tmp_path):
    """A fresh venv that sees this venv's packages (torch preinstalled, as on Colab), then the notebooks' pip line
    with this checkout in place of the tag: torch is untouched and `helpers.setup` runs from the installed copy."""
    cell = next(c for c in __import__("nbformat").read(ROOT / "notebooks" / "01_mlp_backprop.ipynb",
                                                       as_version=4).cells if c.cell_type == "code")
    (line,) = [line for line in cell.source.splitlines() if "pip install" in line]
    requirement = line.split('"')[1]
    assert requirement.startswith("dl-dissected-helpers[umap] @ git+https://"), requirement
    source = tmp_path / "checkout"  # what pip gets from the tag: the package files of the repository
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "helpers", source / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "preinstalled.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    before = _torch_fingerprint()
    # Offline: every dependency must already be satisfied by what is "preinstalled", as torch is on Colab.
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
                              "--no-build-isolation", requirement.split(" @ ")[0] + f" @ {source.as_uri()}"],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    assert "torch" not in " ".join(l for l in install.stdout.splitlines() if "Successfully installed" in l)
    assert _torch_fingerprint() == before
    assert not (purelib / "torch").exists()
    check = subprocess.run([str(python), "-c", "import helpers, torch; helpers.setup('smoke', chapter='01', "
                            "quiet=True); print(helpers.__file__); print(torch.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    installed, torch_file = check.stdout.split()
    assert Path(installed).is_relative_to(purelib) and not Path(torch_file).is_relative_to(venv)
