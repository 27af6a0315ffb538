"""Benchmark: how fast the heatmap browser re-renders when its image slider moves.

With the maps already in the run's store (as after notebooks 04/05), each slider move loads one
image's maps and composes the single-class picture. Measured by setting the slider's value, as
a click does (the observer renders synchronously), over every reported image; compared in the
same run with the bare store read of the same maps (the part no rendering can avoid).

By default on a demo run (:func:`chexlib.demo.make_demo_run`: phantom, 40 reported images at
128 px, the ``default`` preset's size); or on a real run folder with ``--run`` (its params.yaml gives the data and the size).

Usage::

    python benchmarks/browser_latency.py [--size 128] [--images 40]
    python benchmarks/browser_latency.py --run runs/default
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from chexlib.browser import BrowserState, HeatmapBrowser
from chexlib.demo import make_demo_run

LIMIT_MS = 150.0


def timed_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run folder (default: a demo run)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--method", default="epsilon_plus_flat")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "run"
            make_demo_run(Path(tmp) / "data", run, n_valid=args.images, image_size=args.size)
        browser = HeatmapBrowser.from_run(run, methods=[args.method],
                                          state=BrowserState(method=args.method))
        slider, n = browser.controls["position"], len(browser.reported)
        for i in range(n):  # fill the store (and the image cache): the timed moves read them
            slider.value = i
        computed = browser.source.computed
        moves = [timed_ms(lambda i=i: setattr(slider, "value", i)) for i in [*range(n)][::-1]]
        paths = browser.reported.paths
        loads = [timed_ms(lambda p=p: browser.source.store.load(args.method, p)) for p in paths]
    moves.sort()
    median, p95 = statistics.median(moves), moves[int(0.95 * (len(moves) - 1))]
    print(f"heatmap browser, {n} images at {browser.reported.image_size} px, {args.method}; "
          f"{computed} maps computed while filling the store, none while timing")
    print(f"slider move -> new picture: median {median:.1f} ms, p95 {p95:.1f} ms, "
          f"max {moves[-1]:.1f} ms")
    print(f"store read alone (same maps): median {statistics.median(loads):.1f} ms; "
          f"ratio {median / statistics.median(loads):.1f}x")
    ok = p95 < LIMIT_MS
    print(f"requirement: p95 < {LIMIT_MS:.0f} ms: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
