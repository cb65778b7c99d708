"""The book's one training loop (`fit`), evaluation, early stopping and resumable checkpoints (written atomically)."""
from __future__ import annotations

import itertools
import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .files import save_torch
from .models import eval_mode
from .profile import persist, progress_enabled, restore
from .settings import REHEARSAL_BATCHES, rehearsing

Adversary = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, nn.Module, "History"], None]
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")


@dataclass
class History:
    """Per-epoch metrics of a `fit` run, plus where the best epoch was and why training stopped."""

    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    diverged: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (what a checkpoint stores)."""
        return {k: v for k, v in self.__dict__.items()}

    def frame(self):
        """The history as a pandas DataFrame, one row per epoch."""
        import pandas as pd

        cols = {"epoch": self.epochs, "lr": self.lr}
        cols.update({m: getattr(self, m) for m in METRICS if len(getattr(self, m)) == len(self.epochs)})
        return pd.DataFrame(cols)

    def best(self, metric: str = "val_acc") -> float:
        """The metric's value at the best epoch (or its last value if no epoch was marked best)."""
        values = getattr(self, metric)
        if not values:
            raise ValueError(f"History holds no {metric!r} values (was a validation loader given?)")
        index = self.epochs.index(self.best_epoch) if self.best_epoch in self.epochs else -1
        return values[index]


@dataclass
class EarlyStopping:
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs; remembers the best."""

    monitor: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    best: float | None = None
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        if self.monitor not in METRICS:
            raise ValueError(f"Cannot monitor {self.monitor!r}; choose one of {', '.join(METRICS)}.")
        if self.patience < 1:
            raise ValueError(f"patience must be at least 1, got {self.patience}")

    @property
    def mode(self) -> str:
        """'min' for losses, 'max' for accuracies."""
        return "min" if self.monitor.endswith("loss") else "max"

    def improved(self, value: float) -> bool:
        """Record one epoch's value; True if it is a new best. The reference moves on *every* improvement."""
        sign = 1 if self.mode == "min" else -1
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.bad_epochs = value, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True once `patience` epochs in a row brought no improvement."""
        return self.bad_epochs >= self.patience


def load_weights(model: nn.Module, path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Load a plain state_dict saved by `fit` (weights_only=True: no code runs on load)."""
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state.get("model", state) if isinstance(state, dict) and "model" in state else state)
    return model


def best_path(checkpoint: str | Path) -> Path:
    """Where `fit` keeps the best weights next to the resumable checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + ".best" + (checkpoint.suffix or ".pt"))


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def _check_labels(outputs: torch.Tensor, y_cpu: torch.Tensor, track_accuracy: bool) -> None:
    """Labels out of range for the model's outputs: a clear error (checked on the CPU copy: no GPU sync)."""
    if track_accuracy and outputs.ndim == 2 and len(y_cpu) and (
            int(y_cpu.min()) < 0 or int(y_cpu.max()) >= outputs.shape[1]):
        raise ValueError(f"labels must lie in 0..{outputs.shape[1] - 1} for a model with "
                         f"{outputs.shape[1]} outputs; found {int(y_cpu.min())}..{int(y_cpu.max())}")


def _grad_scaler() -> Any:
    """A CUDA GradScaler on any torch >= 2.2 (torch.amp.GradScaler('cuda') only exists from 2.3)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                loss_fn: Callable, adversary: Adversary | None = None,
                scaler: Any = None, track_accuracy: bool = True,
                bar: Any = None, max_batches: int | None = None,
                probe: Callable[[], Any] | None = None) -> tuple[float, float]:
    """One pass over `loader`: (optional adversarial replacement), forward, backward, step. Returns loss, acc.

    Sums stay on the device and are read once at the end: reading a GPU number every batch
    would make the CPU wait for the GPU at every step. For the same reason a non-finite loss
    is caught after each batch on the CPU, but only at the end of the epoch on a GPU.
    `max_batches` ends the epoch early (a rehearsal); `probe()` is a context manager around the first step.
    """
    device = _model_device(model)
    check_each_batch = device.type != "cuda"
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    autocast = (torch.autocast("cuda", dtype=torch.float16) if scaler is not None else nullcontext())
    batches = loader if max_batches is None else itertools.islice(loader, max_batches)
    for batch, (x, y_cpu) in enumerate(batches):
        with probe() if probe is not None and batch == 0 else nullcontext():
            x, y = _to_device(x, y_cpu, device)
            if adversary is not None:
                x = adversary(model, x, y)
            with autocast:
                outputs = model(x)
                _check_labels(outputs, y_cpu, track_accuracy)
                loss = loss_fn(outputs, y)
            if check_each_batch and not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
        loss_sum += loss.detach() * len(y)
        seen += len(y)
        if track_accuracy:
            correct += (outputs.detach().argmax(1) == y).sum()
        if bar is not None:
            bar.update(1)
    mean_loss = loss_sum.item() / max(seen, 1)
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"the mean loss of the epoch became {mean_loss}")
    return mean_loss, correct.item() / max(seen, 1)


def evaluate(model: nn.Module, loader: DataLoader, loss_fn: Callable | None = None,
             attack: Adversary | None = None, track_accuracy: bool = True) -> dict[str, float]:
    """Mean loss and accuracy of `model` on `loader`, optionally on inputs perturbed by `attack`."""
    device = _model_device(model)
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    with eval_mode(model):
        for x, y_cpu in loader:
            x, y = _to_device(x, y_cpu, device)
            if attack is not None:
                x = attack(model, x, y).detach()
            with torch.no_grad():
                outputs = model(x)
                _check_labels(outputs, y_cpu, track_accuracy)
                loss_sum += loss_fn(outputs, y).double() * len(y)
                if track_accuracy:
                    correct += (outputs.argmax(1) == y).sum()
            seen += len(y)
    return {"loss": loss_sum.item() / max(seen, 1), "acc": correct.item() / max(seen, 1)}


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """All outputs (on CPU) and labels of `loader` with the model in eval mode."""
    device = _model_device(model)
    outputs, labels = [], []
    with eval_mode(model):
        for x, y in loader:
            outputs.append(model(x.to(device)).float().cpu())
            labels.append(y)
    return torch.cat(outputs), torch.cat(labels)


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None = None, *,
        epochs: int, optimizer: torch.optim.Optimizer, loss_fn: Callable | None = None,
        scheduler: Any = None, early_stopping: EarlyStopping | None = None,
        checkpoint: str | Path | None = None, adversary: Adversary | None = None,
        callbacks: Iterable[Callback] = (), track_accuracy: bool = True, amp: bool = True,
        restore_best: bool = True, desc: str = "fit", progress: bool | None = None) -> History:
    """Train `model` for up to `epochs`, validating each epoch; returns its History.

    Early stopping watches `early_stopping.monitor`; the best weights are kept (and saved next to
    `checkpoint`), and restored at the end if `restore_best`. With `checkpoint`, the full state
    (model, optimizer, scheduler, history) is written atomically after every epoch and a re-run
    resumes where a killed run stopped. `adversary(model, x, y)` may replace each training batch.
    On CUDA, mixed precision (`amp`) and channels-last are used. With $HELPERS_PERSIST_DIR set, both
    files are copied there after every epoch and restored from there when missing locally.
    In a rehearsal (HELPERS_REHEARSAL=1) an epoch stops after REHEARSAL_BATCHES batches, and with
    $HELPERS_WORKLOAD set the run's workload is recorded there (helpers.workload).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if early_stopping is not None and early_stopping.monitor.startswith("val") and val_loader is None:
        raise ValueError(f"early stopping on {early_stopping.monitor!r} needs a val_loader")
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    device = _model_device(model)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    scaler = _grad_scaler() if (amp and device.type == "cuda") else None
    history, start = History(), 1
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    monitored = early_stopping.monitor if early_stopping is not None else (
        "val_loss" if val_loader is not None else "train_loss")
    stopper = early_stopping or EarlyStopping(monitored, patience=10**9)  # still tracks the best epoch

    if checkpoint is not None:
        for file in (checkpoint, best_path(checkpoint)):
            restore(file)
    if checkpoint is not None and Path(checkpoint).exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        history = History(**state["history"])
        stopper.best, stopper.bad_epochs = state["stopper"]
        if best_path(checkpoint).exists():
            best_state = torch.load(best_path(checkpoint), map_location=device, weights_only=True)
        start = (history.epochs[-1] + 1) if history.epochs else 1
        print(f"{desc}: resumed from {Path(checkpoint).name} after epoch {start - 1}")
        if history.stopped_early or start > epochs:
            start = epochs + 1  # finished before: nothing left to do

    generator = getattr(train_loader, "generator", None)
    if generator is not None and start == 1:  # same seed, same data order: runs compare like for like
        generator.manual_seed(generator.initial_seed())
    max_batches = REHEARSAL_BATCHES if rehearsing() else None
    probe = None
    if rehearsing() and start <= epochs:
        from . import workload

        probe = workload.probe(model, optimizer, train_loader, epochs, desc)
    show = progress_enabled() if progress is None else progress
    batches = min(len(train_loader), max_batches or len(train_loader))
    bar = tqdm(total=(epochs - start + 1) * batches, desc=desc, disable=not show, leave=False)
    for epoch in range(start, epochs + 1):
        try:
            train_loss, train_acc = train_epoch(model, train_loader, optimizer, loss_fn, adversary,
                                                scaler, track_accuracy, bar, max_batches,
                                                probe if epoch == start else None)
        except FloatingPointError as error:  # keep what was learnt so far instead of losing the run
            history.diverged = f"{error} in epoch {epoch}"
            print(f"{desc}: training diverged ({history.diverged}); stopped, keeping the best "
                  f"weights so far. Check the loss function and the learning rate.")
            model.load_state_dict(best_state)
            break
        history.epochs.append(epoch)
        history.train_loss.append(train_loss)
        history.train_acc.append(train_acc)
        history.lr.append(optimizer.param_groups[0]["lr"])
        if val_loader is not None:
            val = evaluate(model, val_loader, loss_fn, track_accuracy=track_accuracy)
            history.val_loss.append(val["loss"])
            history.val_acc.append(val["acc"])
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(getattr(history, monitored)[-1])
        elif scheduler is not None:
            scheduler.step()
        if stopper.improved(getattr(history, monitored)[-1]):
            history.best_epoch = epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if checkpoint is not None:
                save_torch(best_state, best_path(checkpoint))
                persist(best_path(checkpoint))
        history.stopped_early = stopper.should_stop
        bar.set_postfix({k: f"{getattr(history, k)[-1]:.3f}" for k in METRICS
                         if len(getattr(history, k)) == len(history.epochs) and
                         (track_accuracy or k.endswith("loss"))})
        if checkpoint is not None:
            save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "history": history.to_dict(),
                        "stopper": [stopper.best, stopper.bad_epochs]},
                       checkpoint)
            persist(checkpoint)
        for callback in callbacks:
            callback(epoch, model, history)
        if history.stopped_early:
            break
    bar.close()
    if restore_best and history.best_epoch is not None:
        model.load_state_dict(best_state)
    return history

