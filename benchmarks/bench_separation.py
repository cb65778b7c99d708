"""Speed of helpers.separation (SI, CSI, forward ranking) against the naive helpers.reference, with exactness checks.

    python benchmarks/bench_separation.py                       # SI/CSI sizes + rankings up to 1,000 x 64
    python benchmarks/bench_separation.py --workload full       # + the original 5,000 x 2,048 ranking
    python benchmarks/bench_separation.py --workload prefix --prefix 200   # ...or a measured prefix of it

Every row runs the fast and the reference implementation on the same data in the same process,
one after the other, and prints both times, their ratio and whether the results are identical
(SI values equal to the last bit; rankings: same order and same SI curve). On a shared machine
absolute times are noisy: compare the ratios of one run. `--threads` sets torch's CPU threads
(default: helpers' choice, one thread when the machine is busy).

The data are class-structured like a CNN layer's features: 10 classes with centres in a
64-dimensional latent space, mixed into d features, Gaussian noise, then a ReLU (about 60% zeros).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import reference, separation  # noqa: E402
from helpers.profile import cpu_threads  # noqa: E402


def class_structured(n: int, d: int, classes: int = 10, latent: int = 64, spread: float = 0.75,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features like a ReLU layer's: class clusters in a latent space, mixed into d features, noise, ReLU."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = torch.randn(classes, latent, generator=g) * spread
    h = centres[y] + torch.randn(n, latent, generator=g)
    x = h @ (torch.randn(latent, d, generator=g) / latent ** 0.5) + torch.randn(n, d, generator=g)
    return (x - 0.5).clamp(min=0).float(), y


def timed(fn, *args, **kwargs):
    """(result, wall-clock seconds) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def row(*cells) -> None:
    print(" | ".join(str(c) for c in cells), flush=True)


def bench_indices(sizes) -> None:
    print("\n## SI and CSI (fast vs the plain n x n definition)\n")
    row("n", "d", "index", "naive s", "fast s", "speed-up", "identical")
    row(*["---"] * 7)
    for n, d in sizes:
        x, y = class_structured(n, d)
        for name, fast, naive in (("SI", separation.separation_index, reference.separation_index),
                                  ("CSI", separation.center_separation_index, reference.center_separation_index)):
            expected, t_naive = timed(naive, x, y)
            got, t_fast = timed(fast, x, y)
            row(n, d, name, f"{t_naive:.2f}", f"{t_fast:.2f}", f"{t_naive / t_fast:.1f}x", got == expected)


def bench_rankings(sizes, naive_max: int) -> None:
    print("\n## Forward ranking (full ranking of all d features)\n")
    row("n", "d", "naive s", "incremental s", "fast s", "fast vs naive", "fast vs incremental", "identical")
    row(*["---"] * 8)
    for n, d in sizes:
        x, y = class_structured(n, d)
        fast, t_fast = timed(separation.forward_ranking, x, y, progress=False)
        incremental, t_incr = timed(reference.incremental_forward_ranking, x, y)
        same = fast.order == incremental.order and fast.si == incremental.si
        if n * d <= naive_max:
            naive, t_naive = timed(reference.forward_ranking, x, y)
            same = same and naive.order == fast.order and naive.si == fast.si
            naive_cells = (f"{t_naive:.1f}", f"{t_naive / t_fast:.1f}x")
        else:
            naive_cells = ("-", "-")
        row(n, d, naive_cells[0], f"{t_incr:.1f}", f"{t_fast:.2f}", naive_cells[1], f"{t_incr / t_fast:.1f}x", same)


def bench_workload(n: int, d: int, prefix: int | None, device: str = "cpu") -> list[int]:
    """The original coursework's workload: a ranking of 2,048 features over 5,000 samples; returns the order.

    On "cuda" the ranking really runs on the GPU (separation.RANKING_DEVICE switched off), to compare with
    the CPU path that the chapter takes.
    """
    x, y = class_structured(n, d)
    steps = d if prefix is None else prefix
    what = "full ranking" if prefix is None else f"measured prefix of {prefix} steps"
    print(f"\n## Original workload: {n:,} samples x {d:,} features ({what}, {device})\n", flush=True)
    if device != "cpu":
        separation.RANKING_DEVICE = None
        x, y = x.to(device), y.to(device)
    ranking, seconds = timed(separation.forward_ranking, x, y, k=steps, device=device, progress=True)
    per_step = ranking.stats["seconds"]
    print(f"measured: {seconds:.0f} s for {steps} steps; first 10 steps {sum(per_step[:10]):.0f} s, "
          f"last 10 steps {sum(per_step[-10:]):.1f} s")
    print(f"SI: first feature {ranking.si[0]:.4f}, max {max(ranking.si):.4f} at k = {ranking.best_k}, "
          f"last {ranking.si[-1]:.4f}")
    phases = {k[8:]: round(v) for k, v in ranking.stats.items() if k.startswith("seconds_")}
    print(f"seconds by phase: {phases}; candidates settled on full rows: {ranking.stats['settled']}")
    if prefix is not None and prefix < d:
        # Later steps have fewer candidates; the level-1 pass scales with their number. Extrapolate
        # the mean time of the prefix's last 10% steps, scaled by the candidates left at each step.
        tail = per_step[-max(1, steps // 10):]
        per_candidate = sum(tail) / len(tail) / (d - steps + len(tail) / 2)
        rest = sum(per_candidate * (d - t) for t in range(steps, d))
        print(f"extrapolated full ranking: {seconds + rest:.0f} s (= {(seconds + rest) / 60:.1f} min; "
              f"assumes the per-step time of the prefix's last steps, proportional to the candidates left)")
    return ranking.order


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("none", "prefix", "full"), default="none")
    parser.add_argument("--prefix", type=int, default=200, help="steps measured with --workload prefix")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--devices", nargs="+", default=["cpu"],
                        help="run the workload on these devices (e.g. cpu cuda) and check they rank alike")
    parser.add_argument("--workload-only", action="store_true", help="skip the SI/CSI and small ranking tables")
    parser.add_argument("--skip-naive-ranking", action="store_true",
                        help="skip the slow naive ranking at 1,000 x 64 (minutes)")
    args = parser.parse_args()
    threads = args.threads or cpu_threads()
    torch.set_num_threads(threads)
    print(f"# helpers.separation benchmark\n\ntorch {torch.__version__}, {threads} CPU thread(s), float64")
    if not args.workload_only:
        bench_indices([(500, 64), (1000, 256), (2000, 512)])
        bench_rankings([(300, 32), (1000, 64)], naive_max=0 if args.skip_naive_ranking else 1000 * 64)
    if args.workload != "none":
        orders = [bench_workload(5000, 2048, None if args.workload == "full" else args.prefix, device)
                  for device in args.devices]
        if len(orders) > 1:
            print(f"same ranking on {' and '.join(args.devices)}: {all(o == orders[0] for o in orders)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
