"""Training throughput (images per second) of each chapter's model, through the book's own `fit`.

    python benchmarks/bench_training.py                 # CPU: every model, smoke and full widths
    python benchmarks/bench_training.py --device cuda   # GPU: full widths, mixed precision vs float32

Each row trains the model for `--epochs` epochs on random images of the chapter's input shape
with `helpers.fit` and `helpers.data.loader` (so what is measured is what the chapters run:
on CUDA that is mixed precision, channels-last, pinned memory and loader workers). The first
epoch is a warm-up (cuDNN autotuning, allocator); the figure is the median images/second of
the other epochs. On a shared machine absolute numbers are noisy: compare rows of one run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import data, models, training  # noqa: E402
from helpers.embedding import EmbeddingNet  # noqa: E402
from helpers.losses import circle_loss  # noqa: E402
from helpers.profile import cpu_threads, versions  # noqa: E402

Row = tuple[str, tuple[int, ...], Callable[[], nn.Module], Callable | None]


def rows(full: bool) -> list[Row]:
    """(name, input shape, model factory, loss) for each chapter's model, at full or smoke width."""
    resnet_width, vgg_width, vgg_hidden = (1.0, 1.0, 4096) if full else (0.125, 0.125, 256)
    scale = "full" if full else "smoke"
    return [
        ("ch1 MLP 784-100-50-10", (1, 28, 28), lambda: models.MLP((784, 100, 50, 10), "relu", 0.2), None),
        (f"ch3/4 ResNet-18 ({scale} width {resnet_width:g})", (3, 32, 32),
         lambda: models.ResNet18(width=resnet_width), None),
        (f"ch5 embedding net ({scale} width {resnet_width:g})", (3, 32, 32),
         lambda: EmbeddingNet(128, width=resnet_width), circle_loss),
        (f"ch6/7 VGG-16 ({scale} width {vgg_width:g})", (3, 32, 32),
         lambda: models.VGG16(10, width=vgg_width, hidden=vgg_hidden), None),
        ("ch8 SimpleNet", (3, 32, 32), lambda: models.SimpleNet(), None),
    ]


def throughput(factory: Callable[[], nn.Module], shape: tuple[int, ...], loss_fn: Callable | None,
               device: torch.device, images: int, batch_size: int, epochs: int, amp: bool) -> float:
    """Median images/second over the epochs after the first, training with helpers.fit."""
    torch.manual_seed(0)
    model = factory().to(device)
    # uint8 images in an ImageDataset, as every chapter loads them (ImageSet -> data.loader)
    x = torch.randint(0, 256, (images, *shape), dtype=torch.uint8)
    y = torch.randint(0, 10, (images,))
    train_loader = data.loader(data.ImageDataset(x, y), batch_size, shuffle=True, device=device)
    ends: list[float] = []

    def clock(epoch: int, model: nn.Module, history) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    start = time.perf_counter()
    training.fit(model, train_loader, epochs=epochs, optimizer=optimizer, loss_fn=loss_fn,
                 track_accuracy=loss_fn is None, callbacks=[clock], amp=amp, restore_best=False,
                 progress=False)
    seconds = [b - a for a, b in zip([start] + ends[:-1], ends)][1:]  # drop the warm-up epoch
    return images / statistics.median(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per row; the first is a warm-up")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="CPU: target seconds per epoch (sets the number of images)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", default="", help="CPU: only the models whose name contains this text")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is a warm-up)")
    threads = args.threads or cpu_threads()
    torch.set_num_threads(threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {threads} thread(s)"
    print(f"# Training throughput\n\n{name}; {versions()}; batch {args.batch_size}\n")
    if device.type == "cuda":
        print("model | images/s, mixed precision + channels-last (fit's default) | images/s, float32 | speed-up")
        print("--- | --- | --- | ---")
        for label, shape, factory, loss_fn in rows(full=True):
            fast = throughput(factory, shape, loss_fn, device, 50 * args.batch_size, args.batch_size,
                              args.epochs, amp=True)
            plain = throughput(factory, shape, loss_fn, device, 50 * args.batch_size, args.batch_size,
                               args.epochs, amp=False)
            print(f"{label} | {fast:,.0f} | {plain:,.0f} | {fast / plain:.2f}x", flush=True)
        return 0
    print("model | images/s")
    print("--- | ---")
    seen = set()
    for full in (False, True):
        for label, shape, factory, loss_fn in rows(full):
            if label in seen or args.only not in label:  # the MLP and SimpleNet have one width
                continue
            seen.add(label)
            # a short probe sizes each epoch to about --seconds, so slow models stay affordable
            probe = throughput(factory, shape, loss_fn, device, 2 * args.batch_size, args.batch_size, 2, amp=False)
            images = max(2, round(probe * args.seconds / args.batch_size)) * args.batch_size
            rate = throughput(factory, shape, loss_fn, device, images, args.batch_size, args.epochs, amp=False)
            print(f"{label} | {rate:,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
