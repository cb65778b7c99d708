"""What a training phase of the real run costs, recorded by a rehearsal: images, FLOPs per image, memory of a step.

A rehearsal (HELPERS_REHEARSAL=1) with $HELPERS_WORKLOAD set appends one JSON line per `fit` call to that
file. The counts are those of the profile it rehearses, not the capped ones: the uncapped epochs, and the
number of samples the real run's training set holds (`data.represented`).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader
from torch.utils.flop_counter import flop_registry

from .data import represented
from .settings import uncapped


def recording() -> Path | None:
    """The file that rehearsals append workload records to: $HELPERS_WORKLOAD, else None."""
    path = os.environ.get("HELPERS_WORKLOAD", "").strip()
    return Path(path) if path else None


def batch_size(loader: DataLoader) -> int | None:
    """The batch size of `loader`, also when its sampler yields whole batches (helpers.data.loader)."""
    for sampler in (loader.batch_sampler, loader.sampler):
        if getattr(sampler, "batch_size", None):
            return sampler.batch_size
    return loader.batch_size


def _storage_bytes(tensors: Iterator[torch.Tensor], seen: dict[int, int]) -> None:
    """Add each tensor's storage to `seen` (pointer -> bytes), so that shared storage counts once."""
    for tensor in tensors:
        if tensor is not None and tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()


class FlopCount(TorchDispatchMode):
    """FLOPs of every operation run inside (backward included), by torch.utils.flop_counter's formulas.

    torch's FlopCounterMode also attributes FLOPs to modules through backward hooks, which break
    torch.autograd.grad inside the counted step (chapter 4's adversary computes input gradients there).
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


@contextmanager
def measure_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[dict[str, Any]]:
    """FLOPs (forward + backward, torch.utils.flop_counter) and memory of the training step run inside.

    Memory on CUDA: torch.cuda.max_memory_allocated during the step, measured. On the CPU, which keeps
    no such statistic: the bytes of the weights, buffers, gradients, optimizer state and of every
    tensor autograd keeps for the backward pass (the input batch and activations), counted.
    """
    device = next(model.parameters()).device
    result: dict[str, Any] = {}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        _storage_bytes(iter([tensor]), saved)
        return tensor

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    counter = FlopCount()
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield result
    result["flops"] = counter.total
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        result["memory_bytes"], result["memory"] = torch.cuda.max_memory_allocated(device), "measured"
    else:
        state = (value for group in optimizer.state.values() for value in group.values()
                 if isinstance(value, torch.Tensor))
        _storage_bytes(iter([*model.parameters(), *model.buffers(), *(p.grad for p in model.parameters()),
                             *state]), saved)
        result["memory_bytes"], result["memory"] = sum(saved.values()), "counted"


def probe(model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, epochs: int,
          desc: str) -> Callable[[], ContextManager] | None:
    """For `fit` in a rehearsal: a context manager that measures the first step and records the phase."""
    path = recording()
    if path is None:
        return None
    per_epoch = represented(loader.dataset)

    @contextmanager
    def measure() -> Iterator[None]:
        with measure_step(model, optimizer) as step:
            yield
        batch = min(batch_size(loader) or len(loader.dataset), len(loader.dataset))
        record = {"phase": desc, "model": type(model).__name__,
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
                  "batch_size": batch, "device": next(model.parameters()).device.type,
                  "images_per_epoch": per_epoch if per_epoch is not None else len(loader.dataset),
                  "sized_by": "profile" if per_epoch is not None else "rehearsal",
                  "epochs": int(uncapped(epochs)), "flops_per_image": step["flops"] / batch,
                  "memory_bytes": step["memory_bytes"], "memory": step["memory"]}
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as file:
            file.write(json.dumps(record) + "\n")

    return measure
