"""Benchmark: building the image cache of a large CheXpert-format folder, serial vs parallel, and
resuming an interrupted build.

On a phantom of ``--n`` training images (generated into ``--data`` first if missing; the phantom
writes 8-bit JPEGs 320 px high, like CheXpert-v1.0-small), at ``--size`` px (320: the chexpert
preset):

1. baseline: ``ImageCache.open_or_build(workers=0)`` — decode and resize in this process;
2. parallel: the same with ``--workers`` processes (default: every core), in the same run;
3. interrupted and resumed: a parallel build in a child process is killed with SIGKILL once about
   half of the rows are journaled; the next ``open_or_build`` finishes it. The figure is the
   resumed call's time and how many rows it still had to decode; the resumed array must equal the
   baseline's, byte for byte.

The OS page cache holds the JPEGs after the first pass; every build after the first reads them
from memory (as the real data on a fast local disk would). Usage::

    python benchmarks/cache_build.py [--data data/phantom-20k] [--n 20000] [--size 320]
                                     [--workers N] [--json results.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from chexlib.data import read_labels
from chexlib.data.cache import ImageCache
from chexlib.data.images import resolve_image_path

CHILD = """
import sys
from chexlib.data import read_labels
from chexlib.data.cache import ImageCache
root, cache, size, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ImageCache.open_or_build(root, read_labels(root + "/train.csv"), size, cache, workers=workers,
                         progress=False)
"""


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def timed_build(root: Path, labels, size: int, cache_dir: Path, workers: int):
    start = time.perf_counter()
    cache = ImageCache.open_or_build(root, labels, size, cache_dir, workers=workers, progress=False)
    return cache, time.perf_counter() - start


def journaled_rows(cache_dir: Path) -> int:
    """Rows the journal of the build in ``cache_dir`` lists as finished."""
    rows = 0
    for journal in cache_dir.glob(".*.partial.jsonl"):
        for line in journal.read_text().splitlines()[1:]:
            try:
                entry = json.loads(line)
                rows += entry["stop"] - entry["start"]
            except (ValueError, KeyError, TypeError):
                continue
    return rows


def interrupted_build(root: Path, size: int, cache_dir: Path, workers: int, n: int) -> int:
    """Start a build in a child process, SIGKILL it at about half; return the rows journaled."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(cache_dir), str(size),
                              str(workers)], start_new_session=True)
    try:
        while journaled_rows(cache_dir) < n // 2:
            if child.poll() is not None:
                raise RuntimeError("the build finished before it could be interrupted")
            time.sleep(0.05)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the child and its worker processes
        child.wait()
    return journaled_rows(cache_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/phantom-20k")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scratch", default=None, help="cache folders (default: <data>/.bench)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    root = Path(args.data)
    if not (root / "phantom.json").is_file():
        from chexlib.phantom import generate

        print(f"generating a phantom of {args.n} training images in {root} ...", flush=True)
        generate(root, n_train=args.n, n_valid=234, seed=0, workers=args.workers)
    labels = read_labels(root / "train.csv")
    n = len(labels)
    scratch = Path(args.scratch or root / ".bench")
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"{n} images -> {args.size} px cache; {os.cpu_count()} cores", flush=True)
    report: dict = {"images": n, "size": args.size, "cores": os.cpu_count(),
                    "workers": args.workers}

    # Warm the page cache so the first timed build does not pay for the disk alone.
    for value in labels["Path"]:
        resolve_image_path(root, value).read_bytes()

    serial, t_serial = timed_build(root, labels, args.size, scratch / "serial", 0)
    report["serial_images_per_s"] = n / t_serial
    print(f"serial (workers=0): {t_serial:.1f} s, {n / t_serial:.0f} images/s", flush=True)

    parallel, t_parallel = timed_build(root, labels, args.size, scratch / "parallel", args.workers)
    report["parallel_images_per_s"] = n / t_parallel
    report["parallel_speedup"] = t_serial / t_parallel
    print(f"parallel (workers={args.workers}): {t_parallel:.1f} s, {n / t_parallel:.0f} images/s "
          f"({t_serial / t_parallel:.2f}x serial)", flush=True)

    done = interrupted_build(root, args.size, scratch / "resumed", args.workers, n)
    resumed, t_resumed = timed_build(root, labels, args.size, scratch / "resumed", args.workers)
    report.update({"killed_after_rows": done, "resumed_rows": n - done, "resumed_seconds": t_resumed})
    print(f"killed after {done} rows were journaled; resuming decoded the other {n - done} in "
          f"{t_resumed:.1f} s ({(n - done) / t_resumed:.0f} images/s)", flush=True)

    reference = digest(serial.path)
    same = digest(parallel.path) == reference and digest(resumed.path) == reference
    report["identical"] = same
    failed = [len(c.failed) for c in (serial, parallel, resumed)]
    print(f"arrays identical (serial, parallel, resumed): {same}; failed images {failed}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if same and not any(failed) and np.isfinite(t_resumed) else 1


if __name__ == "__main__":
    sys.exit(main())
