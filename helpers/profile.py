"""Profiles (smoke / cpu / full), seeding, device choice and the one set-up call of every chapter."""
from __future__ import annotations

import hashlib
import os
import platform
import random
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

PROFILES = ("smoke", "cpu", "full")
DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice, before setup() changes it
PROFILE_HELP = {
    "smoke": "offline stand-in data, tiny models and epochs: minutes on a 2-core CPU",
    "cpu": "real data, small subsets and widths: a few minutes per chapter on a laptop CPU",
    "full": "the real experiment at the scale of the original coursework: needs a GPU",
}

# One table for everything a profile changes, per chapter. Notebooks read it through `setup`,
# in a cell *after* the papermill parameters cell, so injected parameters take effect.
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "01": {
        "smoke": dict(train_size=4000, test_size=1000, epochs=20, batch_size=128, patience=4,
                      sgd_lr=0.1, adam_lr=1e-3, deep_layers=10),
        "cpu": dict(train_size=12000, test_size=2000, epochs=15, batch_size=128, patience=5,
                    sgd_lr=0.1, adam_lr=1e-3, deep_layers=10),
        "full": dict(train_size=None, test_size=None, epochs=30, batch_size=128, patience=5,
                     sgd_lr=0.1, adam_lr=1e-3, deep_layers=10),
    },
    "02": {
        "smoke": dict(points=300, capacity_hidden=(4, 256, 8_192), capacity_epochs=200,
                      sweep_coefficients=(0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3), sweep_epochs=200,
                      noise_features=(0, 20, 100), digits_train=300, digits_val=500, digits_epochs=60),
        "cpu": dict(points=300, capacity_hidden=(4, 256, 65_536), capacity_epochs=300,
                    sweep_coefficients=(0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3), sweep_epochs=300,
                    noise_features=(0, 20, 100), digits_train=600, digits_val=1000, digits_epochs=80),
        "full": dict(points=300, capacity_hidden=(4, 256, 1_048_576), capacity_epochs=500,
                     sweep_coefficients=(0.0, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3), sweep_epochs=400,
                     noise_features=(0, 20, 100), digits_train=600, digits_val=1000, digits_epochs=100),
    },
    "08": {
        # SimpleNet on CIFAR-10 (full: SGD lr 0.001, batch 64, 5 epochs); smoke: fewer steps, so a larger lr.
        # Recipe on SVHN (ch. 3: ResNet-18, 10 epochs); lr None = ch. 3's defaults. Seeds per variant: n_seeds.
        # Smoke recipe: batch 16 and moderate lrs make the BatchNorm variants learn on every seed in 3 epochs;
        # without BatchNorm the ResNet stays on its initial plateau in any budget that fits the smoke profile.
        "smoke": dict(n_seeds=2, simple_train=1600, simple_test=1000, simple_channels=16, simple_epochs=5,
                      simple_batch=64, simple_lr=0.01, simple_momentum=0.9,
                      recipe_train=900, recipe_val_fraction=0.2, recipe_test=400, recipe_epochs=3,
                      recipe_width=0.0625, recipe_batch=16, recipe_sgd_lr=0.02, recipe_adam_lr=3e-3,
                      label_smoothing=0.25, channel_fractions=(0.25, 0.5, 0.75), eval_batch=256),
        "cpu": dict(n_seeds=2, simple_train=10000, simple_test=2000, simple_channels=64, simple_epochs=5,
                    simple_batch=64, simple_lr=0.001, simple_momentum=0.9,
                    recipe_train=6000, recipe_val_fraction=0.1, recipe_test=2000, recipe_epochs=5,
                    recipe_width=0.25, recipe_batch=128, recipe_sgd_lr=None, recipe_adam_lr=None,
                    label_smoothing=0.25, channel_fractions=(0.25, 0.5, 0.75), eval_batch=512),
        "full": dict(n_seeds=3, simple_train=None, simple_test=None, simple_channels=64, simple_epochs=5,
                     simple_batch=64, simple_lr=0.001, simple_momentum=0.9,
                     recipe_train=None, recipe_val_fraction=0.1, recipe_test=None, recipe_epochs=10,
                     recipe_width=1.0, recipe_batch=128, recipe_sgd_lr=None, recipe_adam_lr=None,
                     label_smoothing=0.25, channel_fractions=(0.25, 0.5, 0.75), eval_batch=1024),
    },
    "05": {
        "smoke": dict(train_size=2000, test_size=500, width=0.125, embedding_dim=64, epochs=8, batch_size=32,
                      lr=1e-3, m=0.25, gamma=2.0, reduction="anchor", k=5, eps=0.1, sigma=0.01,
                      sweep=((0.25, 256.0), (0.25, 80.0), (0.4, 80.0), (0.25, 2.0)), sweep_train_size=1000,
                      sweep_val_fraction=0.2, sweep_epochs=6, projection="pca", plot_points=500),
        "cpu": dict(train_size=5000, test_size=1000, width=0.25, embedding_dim=128, epochs=10, batch_size=64,
                    lr=1e-3, m=0.25, gamma=2.0, reduction="anchor", k=5, eps=0.1, sigma=0.01,
                    sweep=((0.25, 256.0), (0.25, 80.0), (0.4, 80.0), (0.25, 2.0)), sweep_train_size=2000,
                    sweep_val_fraction=0.1, sweep_epochs=6, projection="auto", plot_points=1000),
        "full": dict(train_size=None, test_size=None, width=1.0, embedding_dim=128, epochs=25, batch_size=128,
                     lr=1e-3, m=0.25, gamma=2.0, reduction="anchor", k=5, eps=0.1, sigma=0.01,
                     sweep=((0.25, 256.0), (0.25, 80.0), (0.4, 80.0), (0.25, 2.0)), sweep_train_size=None,
                     sweep_val_fraction=0.1, sweep_epochs=10, projection="auto", plot_points=2000),
    },
    "04": {
        # Full = the original: CIFAR-10 (10% stratified validation), full-width ResNet-18, Adam 1e-3, up to
        # 16 epochs with early stopping on the validation loss; FGSM eps=0.1 + Gaussian noise sigma=0.01;
        # adversarial training replaces each batch by its FGSM version with probability 0.5.
        # Smoke: the tiny network cannot learn to resist eps=0.1 on the stand-in in a few CPU epochs, so
        # it uses eps=0.03 (about the literature's 8/255) for the attack and the adversarial training.
        "smoke": dict(train_size=2000, test_size=500, val_fraction=0.1, width=0.125, batch_size=32, lr=2e-3,
                      epochs=8, patience=3, eps=0.03, sigma=0.01, p_adversarial=0.5,
                      curve_eps=(0.0, 0.01, 0.03, 0.06), curve_size=150, pgd_steps=5, embed_size=200,
                      embedding="pca", slider_eps=(0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2),
                      slider_static=(0.0, 0.01, 0.03, 0.1)),
        "cpu": dict(train_size=5000, test_size=1000, val_fraction=0.1, width=0.25, batch_size=64, lr=1e-3,
                    epochs=12, patience=3, eps=0.1, sigma=0.01, p_adversarial=0.5,
                    curve_eps=(0.0, 2 / 255, 4 / 255, 8 / 255, 0.05, 0.1), curve_size=500, pgd_steps=10,
                    embed_size=1000, embedding="auto", slider_eps=(0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2),
                    slider_static=(0.0, 0.02, 0.05, 0.1)),
        "full": dict(train_size=None, test_size=None, val_fraction=0.1, width=1.0, batch_size=128, lr=1e-3,
                     epochs=16, patience=3, eps=0.1, sigma=0.01, p_adversarial=0.5,
                     curve_eps=(0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 0.05, 0.1), curve_size=2000,
                     pgd_steps=10, embed_size=2000, embedding="auto",
                     slider_eps=(0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2), slider_static=(0.0, 0.02, 0.05, 0.1)),
    },
    "03": {
        # Full = the original: SVHN train (10% stratified validation), SVHN + MNIST test sets, ResNet-18 at
        # full width, 10 epochs, batch 128, SGD lr 0.01 momentum 0.9 (cosine decay) or Adam 1e-3;
        # few-label transfer on 1,000 labelled SVHN images. None = the whole split.
        # Smoke: far fewer steps, so larger learning rates and smaller batches; pretrained_* only apply if the
        # ImageNet weights happen to be cached (they are never downloaded offline).
        "smoke": dict(svhn_train=1000, mnist_train=800, test_size=500, val_fraction=0.15, width=0.125,
                      epochs=5, batch_size=32, sgd_lr=0.03, adam_lr=3e-3, few_label=500, head_epochs=30,
                      head_lr=1e-2, adabn_size=500, pretrained_train=256, pretrained_epochs=1,
                      pretrained_in_best=False),
        "cpu": dict(svhn_train=10000, mnist_train=10000, test_size=2000, val_fraction=0.1, width=0.25,
                    epochs=5, batch_size=128, sgd_lr=0.05, adam_lr=1e-3, few_label=1000, head_epochs=30,
                    head_lr=1e-3, adabn_size=5000, pretrained_train=2000, pretrained_epochs=2,
                    pretrained_in_best=False),
        "full": dict(svhn_train=None, mnist_train=None, test_size=None, val_fraction=0.1, width=1.0,
                     epochs=10, batch_size=128, sgd_lr=0.01, adam_lr=1e-3, few_label=1000, head_epochs=30,
                     head_lr=1e-3, adabn_size=10000, pretrained_train=None, pretrained_epochs=10,
                     pretrained_in_best=True),
    },
    "07": {
        # VGG-16 of ch. 6 (cpu/full: its architecture, so ch. 6's checkpoint loads); smoke/cpu: narrow, BatchNorm in
        # the conv slots, Adam.
        # Grad-CAM at features.15 (8x8 on 32x32 inputs; features.29 is 2x2). failing_*: the too-high-lr demo.
        "smoke": dict(train_size=6000, test_size=500, val_fraction=0.1, width=0.125, hidden=64, dropout=0.0,
                      batchnorm=True, augment=False, optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=32,
                      epochs=6, schedule="cosine", step_size=None, patience=None, monitor_epochs=3,
                      cam_layer="features.15", check_layers=("features.29", "features.22", "features.15"),
                      activation_layers=("features.1", "features.8", "features.15", "features.22", "features.29"),
                      explore_layers=("features.8", "features.15", "features.22", "features.29"),
                      filter_layers=("features.2", "features.28"), n_filters=8, filter_steps=60,
                      occlusion_patches=(4, 8), occlusion_strides=(2, 4), shown_per_kind=4, check_patch=8,
                      check_images=100, eval_batch=100, failing_lr=0.01, failing_epochs=2, failing_train_size=1500,
                      imagenet=False),
        "cpu": dict(train_size=10000, test_size=1000, val_fraction=0.1, width=0.25, hidden=512, dropout=0.5,
                    batchnorm=True, augment=True, optimizer="adam", lr=1e-3, weight_decay=0.0, batch_size=64,
                    epochs=12, schedule="cosine", step_size=None, patience=None, monitor_epochs=3,
                    cam_layer="features.15", check_layers=("features.29", "features.22", "features.15"),
                    activation_layers=("features.1", "features.8", "features.15", "features.22", "features.29"),
                    explore_layers=("features.8", "features.15", "features.22", "features.29"),
                    filter_layers=("features.2", "features.28"), n_filters=8, filter_steps=100,
                    occlusion_patches=(4, 8), occlusion_strides=(2, 4), shown_per_kind=4, check_patch=8,
                    check_images=500, eval_batch=250, failing_lr=0.01, failing_epochs=2, failing_train_size=2000,
                    imagenet=False),
        "full": dict(train_size=None, test_size=None, val_fraction=0.1, width=1.0, hidden=4096, dropout=0.5,
                     batchnorm=False, augment=True, optimizer="sgd", lr=0.01, weight_decay=5e-4, batch_size=128,
                     epochs=200, schedule="step", step_size=50, patience=20, monitor_epochs=5,
                     cam_layer="features.15", check_layers=("features.29", "features.22", "features.15"),
                     activation_layers=("features.1", "features.8", "features.15", "features.22", "features.29"),
                     explore_layers=("features.8", "features.15", "features.22", "features.29"),
                     filter_layers=("features.2", "features.28"), n_filters=8, filter_steps=200,
                     occlusion_patches=(4, 8), occlusion_strides=(2, 4), shown_per_kind=4, check_patch=8,
                     check_images=1000, eval_batch=100, failing_lr=0.01, failing_epochs=3, failing_train_size=10000,
                     imagenet=True),
    },
    "06": {
        # Full = the original: CIFAR-10 (10% stratified validation, seed 42), VGG-16 at full width, SGD lr 0.01
        # momentum 0.9 weight decay 5e-4, batch 128, StepLR(50, 0.1), up to 200 epochs, early stopping after 20
        # epochs without a better validation accuracy; SI on 10% of train (5,000) and test (1,000); cut after
        # module 23; heads of 4,096 with dropout 0.2. The frozen classifier and the heads reuse the recipe.
        # Smoke/cpu: a narrow VGG-16 without normalisation barely leaves chance in a few CPU epochs, so each
        # conv slot also holds a BatchNorm2d (same 31 modules, as in chapter 7) and the optimiser is Adam (no weight
        # decay). single_feature_sample: single features whose SI checks the ranking curve's first point.
        "smoke": dict(train_size=3000, test_size=500, val_fraction=0.1, split_seed=42, batch_size=32,
                      eval_batch=256, width=0.125, hidden=128, dropout=0.0, batchnorm=True, optimizer="adam",
                      lr=1e-3, weight_decay=0.0, step_size=6, epochs=8, patience=20, frozen_epochs=4, si_train=400,
                      si_test=200, cut=23, exact_check_samples=120, exact_check_features=10, head_hidden=128,
                      head_dropout=0.2, head_epochs=6, cache_features=True, single_feature_sample=256),
        "cpu": dict(train_size=10000, test_size=2000, val_fraction=0.1, split_seed=42, batch_size=64,
                    eval_batch=512, width=0.25, hidden=512, dropout=0.5, batchnorm=True, optimizer="adam",
                    lr=1e-3, weight_decay=0.0, step_size=20, epochs=30, patience=8, frozen_epochs=15, si_train=2000,
                    si_test=500, cut=23, exact_check_samples=200, exact_check_features=12, head_hidden=1024,
                    head_dropout=0.2, head_epochs=15, cache_features=True, single_feature_sample=128),
        "full": dict(train_size=None, test_size=None, val_fraction=0.1, split_seed=42, batch_size=128,
                     eval_batch=512, width=1.0, hidden=4096, dropout=0.5, batchnorm=False, optimizer="sgd", lr=0.01,
                     weight_decay=5e-4, step_size=50, epochs=200, patience=20, frozen_epochs=200, si_train=5000,
                     si_test=1000, cut=23, exact_check_samples=200, exact_check_features=12, head_hidden=4096,
                     head_dropout=0.2, head_epochs=200, cache_features=False, single_feature_sample=64),
    },
    # Each chapter adds its own "NN": {"smoke": ..., "cpu": ..., "full": ...} entry above this line.
}


@dataclass
class Setup:
    """What `setup` resolved: profile, why, device, seed, data source and the chapter's settings."""

    profile: str
    reason: str
    device: torch.device
    seed: int
    data: str
    chapter: str | None
    settings: SimpleNamespace = field(default_factory=SimpleNamespace)

    @property
    def standin(self) -> bool:
        """True when the chapter runs on the offline stand-in datasets."""
        return self.data == "standin"

    def checkpoint(self, name: str, chapter: str | None = None) -> str | None:
        """Path of a resumable checkpoint for `name` (None in smoke: those runs take seconds).

        The name ends with a hash of the chapter's settings and the data source, so a run with
        other settings or data never resumes from (or reuses) this one's weights. `chapter` names
        another chapter's checkpoint for the same profile, seed and data (chapter 7 reuses chapter 6's).
        """
        if self.profile == "smoke":
            return None
        chapter = self.chapter if chapter is None else chapter
        settings = self.settings if chapter == self.chapter else chapter_settings(chapter, self.profile)
        key = repr((sorted(vars(settings).items()), self.data))
        tag = hashlib.sha1(key.encode()).hexdigest()[:8]
        return os.path.join(checkpoint_dir(), f"ch{chapter}-{self.profile}-seed{self.seed}-{name}-{tag}.pt")


def checkpoint_dir() -> str:
    """Where checkpoints go: $HELPERS_CHECKPOINT_DIR, else ~/.cache/dl-dissected/checkpoints."""
    return os.path.expanduser(os.environ.get("HELPERS_CHECKPOINT_DIR", "~/.cache/dl-dissected/checkpoints"))


def has_gpu() -> bool:
    """True when CUDA is available."""
    return torch.cuda.is_available()


def resolve_profile(profile: str = "auto") -> tuple[str, str]:
    """Turn "auto" (or a name) into a known profile name and the reason it was chosen."""
    if profile is None or str(profile).lower() == "auto":
        env = os.environ.get("HELPERS_PROFILE", "").strip().lower()
        if env:
            name, reason = env, "HELPERS_PROFILE is set"
        elif has_gpu():
            name, reason = "full", "a GPU was found and HELPERS_PROFILE is not set"
        else:
            name, reason = "smoke", "no GPU was found and HELPERS_PROFILE is not set"
    else:
        name, reason = str(profile).strip().lower(), "PROFILE was set in the parameters cell"
    if name not in PROFILES:
        raise ValueError(f"Unknown profile {name!r} ({reason}). Choose one of {', '.join(PROFILES)} "
                         f"or 'auto', e.g. PROFILE = 'smoke' in the parameters cell or "
                         f"HELPERS_PROFILE=smoke in the environment.")
    return name, reason


def resolve_data(data: str, profile: str) -> str:
    """Turn DATA ("auto", "standin", "real" or a folder of .npz files) into a data source."""
    if data is None or str(data).lower() == "auto":
        return "standin" if profile == "smoke" else "real"
    if str(data).lower() in ("standin", "real"):
        return str(data).lower()
    if os.path.isdir(os.path.expanduser(str(data))):
        return os.path.expanduser(str(data))
    raise ValueError(f"Unknown data source {data!r}: use 'auto', 'standin' (offline, built in), "
                     f"'real' (torchvision downloads) or a folder holding <dataset>_<split>.npz files.")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) so that a run repeats."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on: CUDA when present, else CPU (or `prefer` if given)."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_threads() -> int:
    """CPU threads for torch: $HELPERS_THREADS if set, else torch's own choice (all cores).

    Set HELPERS_THREADS=1 when several kernels share a CPU (a classroom server): oversubscribed
    threads wait on each other and run many times slower. The choice never depends on the load
    of the moment, so that a re-run on the same machine repeats the same arithmetic.
    """
    value = os.environ.get("HELPERS_THREADS")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"HELPERS_THREADS must be a positive integer, got {value!r}")
        return int(value)
    return DEFAULT_THREADS


def progress_enabled() -> bool:
    """Progress bars are on unless HELPERS_PROGRESS=0 (set when recording committed outputs)."""
    return os.environ.get("HELPERS_PROGRESS", "1") != "0"


def chapter_settings(chapter: str, profile: str) -> SimpleNamespace:
    """The settings row of one chapter in one profile, from the SETTINGS table."""
    if chapter not in SETTINGS:
        raise ValueError(f"No settings for chapter {chapter!r}; known chapters: {sorted(SETTINGS)}")
    return SimpleNamespace(**SETTINGS[chapter][profile])


def versions() -> str:
    """One line with the versions that matter for reproducing a run."""
    import torchvision

    from . import __version__

    return (f"python {platform.python_version()}, torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}, numpy {np.__version__}, helpers {__version__}")


def setup(profile: str = "auto", chapter: str | None = None, seed: int = 0,
          data: str = "auto", device: str | None = None, quiet: bool = False) -> Setup:
    """The one set-up call of a chapter: resolve the profile, seed everything, pick the device, print it all."""
    name, reason = resolve_profile(profile)
    source = resolve_data(data, name)
    seed_everything(seed)
    dev = get_device(device)
    threads = cpu_threads()
    torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    settings = chapter_settings(chapter, name) if chapter is not None else SimpleNamespace()
    run = Setup(name, reason, dev, seed, source, chapter, settings)
    if not quiet:
        others = ", ".join(p for p in PROFILES if p != name)
        data_text = {"standin": "offline stand-ins (generated, no download; figures say so)",
                     "real": "real datasets via torchvision (downloaded to the data root)"}.get(
                         source, "local .npz files")
        print(f"Profile: {name} ({reason}) - {PROFILE_HELP[name]}.")
        print(f"  To choose another ({others}): set PROFILE in the parameters cell, "
              f"or HELPERS_PROFILE before starting Jupyter.")
        print(f"Data: {data_text}.")
        print(f"Device: {dev.type} ({threads} CPU thread{'s' * (threads > 1)}) | seed {seed} | {versions()}")
        if "google.colab" in sys.modules and dev.type == "cpu":
            print("Tip: Runtime > Change runtime type > GPU gives the full profile.")
    return run
