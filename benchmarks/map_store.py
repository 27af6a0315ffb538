"""Benchmark: saving and loading heatmaps with chexlib.explain.MapStore, against plain numpy.

Saves 50 maps of [14, 224, 224] (one image's 14 classes at the default input size) and loads each
one back several times, the way the browser and the notebooks display maps. The baseline is a
bare ``np.save`` to / ``np.load`` from the same folder (no atomic rename, no fsync, no
validation), measured in the same run, so the ratios say what the store's safety costs.

    python benchmarks/map_store.py [--maps 50] [--repeats 5] [--size 224] [--out DIR]

Loads read files the operating system has just written (warm page cache): the numbers are the
store's own cost, not the disk's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from chexlib.explain.store import MapStore


def image_path(k: int) -> str:
    return f"valid/patient{k:05d}/study1/view1_frontal.jpg"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def summary(times_ms: list[float]) -> tuple[float, float]:
    return float(np.median(times_ms)), float(np.percentile(times_ms, 95))


def run(out: Path, n: int, repeats: int, size: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(0)
    maps = [rng.normal(size=(14, size, size)).astype(np.float32) * 1e-3 for _ in range(n)]
    durable, fast = MapStore(out / "durable"), MapStore(out / "fast", durable=False)
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rows = {
        "save (np.save, baseline)": [timed(lambda m=m, k=k: np.save(raw / f"{k}.npy",
                                                                      m.astype(np.float16)))
                                     for k, m in enumerate(maps)],
        "save (store, durable)": [timed(lambda m=m, k=k: durable.save("lrp", image_path(k), m))
                                  for k, m in enumerate(maps)],
        "save (store, durable=False)": [timed(lambda m=m, k=k: fast.save("lrp", image_path(k), m))
                                        for k, m in enumerate(maps)],
    }
    order = [k for _ in range(repeats) for k in range(n)]
    rows["load (np.load, baseline)"] = [timed(lambda k=k: np.load(raw / f"{k}.npy")) for k in order]
    rows["load (store)"] = [timed(lambda k=k: durable.load("lrp", image_path(k))) for k in order]
    rows["load + pick one class (store)"] = [
        timed(lambda k=k: durable.load("lrp", image_path(k))[5]) for k in order]
    rows["has (store)"] = [timed(lambda k=k: durable.has("lrp", image_path(k))) for k in order]
    return {name: summary(times) for name, times in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=None, help="folder (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        results = run(out, args.maps, args.repeats, args.size)
    size_mb = 14 * args.size**2 * 2 / 1e6
    print(f"{args.maps} maps of [14, {args.size}, {args.size}] float16 ({size_mb:.2f} MB each)")
    print(f"{'operation':34s} {'median ms':>10s} {'p95 ms':>8s} {'x baseline':>11s}")
    for name, (median, p95) in results.items():
        base = results["save (np.save, baseline)" if name.startswith("save")
                       else "load (np.load, baseline)"][0]
        print(f"{name:34s} {median:10.2f} {p95:8.2f} {median / base:11.2f}")


if __name__ == "__main__":
    main()
