"""Rehearse chapters: each one's `cpu` and `full` code path with capped counts, offline; record their workload.

    python benchmarks/rehearse.py                      # all 8 chapters x {cpu, full}; writes benchmarks/workload.json
    python benchmarks/rehearse.py --chapters 06 07 --profiles full --no-write

A rehearsal (HELPERS_REHEARSAL=1, see helpers/settings/__init__.py) runs a chapter with exactly its
profile's settings except the counts: 1 epoch per training phase, at most 2 batches per epoch, at most
256 samples per training set and 32 per test set or check. Data are the offline stand-ins, at the real datasets' shapes; the network is
closed, so anything that needs a download (ImageNet weights) takes its documented offline fallback.
Each `fit` records the real run's workload of its phase (helpers/workload.py); this script sums them
per chapter into benchmarks/workload.json, which book/setup.md renders as a table.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from helpers.settings import chapters  # noqa: E402
from record_book import environment, notebook_of  # noqa: E402  (scripts/)

PROFILES = ("cpu", "full")
WORKLOAD_JSON = ROOT / "benchmarks" / "workload.json"
SETUP_PAGE = ROOT / "book" / "setup.md"
TABLE_START = "<!-- workload table: written by `make rehearse` from benchmarks/workload.json -->"
TABLE_END = "<!-- end of the workload table -->"
# Estimated wall time = training FLOPs / (FRACTION x the GPU's dense fp16 tensor-core peak). Small 32x32 images
# in batches of 128 keep a GPU far below its peak; 5% is a cautious guess until measured (benchmarks/gpu_check.sh).
GPUS = {"T4": 65e12, "A100": 312e12}
FRACTION = 0.05
# And on a 2-core CPU (Colab without a GPU, a laptop): full-width ResNet-18 trains at about 29 images/s x
# 3.3 GFLOP here (benchmarks/README.md), ~96 GFLOPS; narrower networks use it less well, hence 50.
CPU_FLOPS = 50e9
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Nothing is downloaded in a rehearsal, even where a network exists: a refused proxy fails every download at once.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


class RehearsalFailed(AssertionError):
    """A rehearsal raised: names the chapter, the profile and the failing cell."""


def _cell_index(path: Path, failed_source: str) -> str:
    """'cell [i]' (nbformat's index in the source notebook) of the cell that failed."""
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    where = [i for i, cell in enumerate(cells) if cell.source == failed_source]
    return f"cell [{where[0]}]" if where else "a cell"


def rehearse(chapter: str, profile: str, workdir: Path, device: str | None = None) -> dict:
    """Run one chapter's rehearsal in `profile`; return its seconds, workload records and executed copy.

    `workdir` holds the executed notebook, the workload records and, in checkpoints/, what the chapter
    saves. Chapters rehearsed with the same `workdir` share checkpoints, as they do for a reader (chapter 7
    loads chapter 6's VGG-16, chapter 5 reads chapter 4's results).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = notebook_of(chapter)
    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / f"{source.stem}-{profile}.ipynb"
    records = workdir / f"workload-{chapter}-{profile}.jsonl"
    records.unlink(missing_ok=True)
    env = {"HELPERS_REHEARSAL": "1", "HELPERS_PROFILE": profile, "HELPERS_PROGRESS": "0", "MPLBACKEND": "Agg",
           "HELPERS_WORKLOAD": str(records), "HELPERS_CHECKPOINT_DIR": str(workdir / "checkpoints"),
           "HELPERS_DATA_ROOT": str(workdir / "data"), "TORCH_HOME": str(workdir / "torch"),
           "HELPERS_PERSIST_DIR": None, "HELPERS_DATA": None, **OFFLINE}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    start = time.perf_counter()
    with environment(env):
        try:
            papermill.execute_notebook(str(source), str(output), parameters={"PROFILE": profile, "DATA": "standin"},
                                       kernel_name="python3", cwd=str(source.parent), progress_bar=False)
        except PapermillExecutionError as error:
            raise RehearsalFailed(
                f"Rehearsal of chapter {chapter} in the {profile} profile failed in "
                f"{_cell_index(source, error.source)} of {source.name} (executed copy: {output}):\n"
                f"{error.source}\n{error.ename}: {error.evalue}\n"
                f"{ANSI.sub('', ''.join(error.traceback[-3:]))}") from None
    seconds = time.perf_counter() - start
    phases = [json.loads(line) for line in records.read_text().splitlines()] if records.exists() else []
    return {"seconds": seconds, "phases": phases, "output": output}


def settings_hash(chapter: str, profile: str) -> str:
    """A hash of a chapter's settings row in `profile` (uncapped): the workload record is stale when it changes."""
    from helpers.settings import chapter_settings, flat

    with environment({"HELPERS_REHEARSAL": "0"}):
        row = flat(chapter_settings(chapter, profile))
    return hashlib.sha1(repr(sorted(row.items())).encode()).hexdigest()[:12]


def seed_repeats(chapter: str, profile: str) -> int:
    """How many times the real run repeats each rehearsed training run: its seeds over the rehearsal's.

    Only ablation studies have several seeds (n_seeds), and every training run of such a chapter is one seed
    of one variant.
    """
    from helpers.settings import chapter_settings, uncapped

    with environment({"HELPERS_REHEARSAL": "1"}):
        seeds = getattr(chapter_settings(chapter, profile), "n_seeds", 1)
    return uncapped(seeds) // seeds


def summary(chapter: str, profile: str, phases: list[dict]) -> dict:
    """One chapter's workload in one profile: its training runs (`repeats`: once per seed) and their totals."""
    kept = ("phase", "model", "parameters", "trainable", "batch_size", "images_per_epoch", "sized_by", "epochs",
            "flops_per_image", "memory_bytes", "memory")
    repeats = seed_repeats(chapter, profile)
    rows = [{key: phase[key] for key in kept} for phase in phases]
    for row in rows:
        row["images"] = row["images_per_epoch"] * row["epochs"]
        row["flops_per_image"] = int(row["flops_per_image"])
        row["repeats"] = repeats
    return {"settings": settings_hash(chapter, profile), "phases": rows, "runs": repeats * len(rows),
            "images": repeats * sum(row["images"] for row in rows),
            "flops": repeats * sum(row["images"] * row["flops_per_image"] for row in rows),
            "memory_bytes": max((row["memory_bytes"] for row in rows), default=0),
            "memory": sorted({row["memory"] for row in rows})}


def _count(value: float, units: tuple[str, ...] = ("", " k", " M", " G", " T", " P")) -> str:
    """1234567 -> '1.2 M'."""
    for unit in units:
        if abs(value) < 1000 or unit == units[-1]:
            return f"{value:.3g}{unit}"
        value /= 1000
    return str(value)


def _bytes(value: float) -> str:
    """Bytes as MiB or GiB."""
    return f"{value / 2**30:.1f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def _duration(seconds: float) -> str:
    """Seconds as '< 1 min', '12 min', '3.4 h' or '12 days'."""
    if seconds < 60:
        return "< 1 min"
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def table(workload: dict) -> str:
    """The set-up page's workload table (markdown) from benchmarks/workload.json."""
    import nbformat

    lines = ["| chapter | profile | training runs | images trained on | training FLOPs | memory of one step | "
             "T4 (estimate) | A100 (estimate) | 2-core CPU (estimate) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for chapter, profiles in sorted(workload.items()):
        title = nbformat.read(notebook_of(chapter), as_version=4).cells[0].source.splitlines()[0].lstrip("# ")
        for profile in PROFILES:
            row = profiles.get(profile)
            if row is None:
                continue
            memory = _bytes(row["memory_bytes"]) + (" (counted)" if "counted" in row["memory"] else "")
            times = [_duration(row["flops"] / speed) for speed in (*(FRACTION * peak for peak in GPUS.values()),
                                                                   CPU_FLOPS)]
            lines.append(f"| {title} | `{profile}` | {row['runs']} | {_count(row['images'])} | "
                         f"{_count(row['flops'])}FLOP | {memory} | {' | '.join(times)} |")
    return "\n".join(lines)


def section(page: str) -> str | None:
    """The workload table currently on a page (between TABLE_START and TABLE_END), None if it has none."""
    if TABLE_START not in page or TABLE_END not in page:
        return None
    return page.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()


def write_table(workload: dict) -> None:
    """Put the workload table into book/setup.md, between its markers."""
    page = SETUP_PAGE.read_text()
    if section(page) is None:
        raise SystemExit(f"{SETUP_PAGE.relative_to(ROOT)} has no {TABLE_START!r} ... {TABLE_END!r} markers")
    before, rest = page.split(TABLE_START, 1)
    after = rest.split(TABLE_END, 1)[1]
    SETUP_PAGE.write_text(f"{before}{TABLE_START}\n{table(workload)}\n{TABLE_END}{after}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapters", nargs="+", default=None)
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=PROFILES)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="cpu hides any GPU; default: whatever the machine has")
    parser.add_argument("--workdir", type=Path, default=None, help="keep executed copies here (default: a temp dir)")
    parser.add_argument("--no-write", action="store_true",
                        help=f"do not update {WORKLOAD_JSON.relative_to(ROOT)} and the set-up page's table")
    parser.add_argument("--table-only", action="store_true", help="only re-render the table from the JSON")
    parser.add_argument("--json", type=Path, default=None,
                        help="write this run's workload here (and nothing else; e.g. from a GPU run)")
    args = parser.parse_args()
    selected = args.chapters or chapters()
    workload = json.loads(WORKLOAD_JSON.read_text()) if WORKLOAD_JSON.exists() and not args.json else {}
    if args.table_only:
        write_table(workload)
        return 0
    failures, total = [], 0.0
    with tempfile.TemporaryDirectory(prefix="rehearsal-") as tmp:
        for profile in args.profiles:
            workdir = (args.workdir or Path(tmp)) / profile
            for chapter in selected:
                try:
                    result = rehearse(chapter, profile, workdir, args.device)
                except RehearsalFailed as error:
                    failures.append(str(error))
                    print(f"FAILED: chapter {chapter}, {profile}", flush=True)
                    continue
                total += result["seconds"]
                print(f"chapter {chapter}, {profile}: {result['seconds']:.0f} s, "
                      f"{len(result['phases'])} training phases", flush=True)
                workload.setdefault(chapter, {})[profile] = summary(chapter, profile, result["phases"])
                workload[chapter][profile]["rehearsal_seconds"] = round(result["seconds"], 1)
                if args.json is not None:  # as it goes: a run stopped by a time limit keeps what it measured
                    args.json.write_text(json.dumps(workload, indent=1, sort_keys=True) + "\n")
    print(f"{len(selected) * len(args.profiles) - len(failures)} rehearsals green in {total:.0f} s")
    if args.json is not None:
        args.no_write = True
    if not args.no_write and not failures:
        WORKLOAD_JSON.write_text(json.dumps(dict(sorted(workload.items())), indent=1, sort_keys=True) + "\n")
        write_table(workload)
        print(f"wrote {WORKLOAD_JSON.relative_to(ROOT)} and the table on {SETUP_PAGE.relative_to(ROOT)}")
    for failure in failures:
        print("\n" + failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
