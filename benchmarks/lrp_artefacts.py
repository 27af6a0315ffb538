"""Benchmark: grid artefacts and where the logit goes, per LRP composite, fold vs pass.

On a trained run's model and its first reported (validation) images, for every LRP composite of
the registry (each folded, and its ``-pass`` variant): the blockiness ratio of the maps of all
14 classes at periods 4 and 8 (:func:`chexlib.heatmap_quality.artefacts.blockiness`; 1.0 = no
grid), and the shares of the logits kept by the pixels, the classifier bias, the BatchNorm
shifts (folded biases) and the rest (:func:`chexlib.explain.conservation.share_summary`).
Prints two tables and checks the default composite's blockiness against ``--limit``.

Usage::

    python benchmarks/lrp_artefacts.py runs/default [--images 8] [--limit 1.15]
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd
import torch

from chexlib import methods
from chexlib.explain import lrp
from chexlib.explain.inputs import explainable
from chexlib.explain.conservation import conservation_table, share_summary
from chexlib.heatmap_quality.artefacts import blockiness_table
from chexlib.params import SCHEMA
from chexlib.session import open_run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--limit", type=float, default=1.15)
    parser.add_argument("--csv", default=None, metavar="PREFIX",
                        help="also write PREFIX_blockiness.csv and PREFIX_shares.csv")
    parser.add_argument("--composites", nargs="*", default=None,
                        help="registry names (default: every LRP composite, fold and pass)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    session = open_run(args.run_dir)
    rows = list(range(min(args.images, len(session.reported))))
    images = session.reported.images(rows).to(session.device)
    composites = args.composites or list(methods.LRP_COMPOSITES)
    maps, seconds = {}, {}
    for name in composites:
        start = time.perf_counter()
        maps[name] = lrp(session.model, images, composite=name, batch_size=4).cpu().numpy()
        seconds[name] = time.perf_counter() - start
    artefacts = blockiness_table(maps)
    artefacts["seconds"] = pd.Series(seconds)
    table = conservation_table(session.model, images, composites)
    shares = share_summary(table)
    canonized = explainable(session.model, "fold")
    with torch.no_grad():
        logit_gap = float((canonized(images) - session.model(images)).abs().max())
    if args.csv:
        artefacts.to_csv(f"{args.csv}_blockiness.csv")
        shares.to_csv(f"{args.csv}_shares.csv")
    pd.set_option("display.width", 160)
    print(f"{session.run_dir}: {len(rows)} images x 14 classes at {images.shape[-1]} px; "
          f"canonized model's largest logit difference {logit_gap:.1e}")
    print("\nblockiness (1.0 = no grid)\n" + artefacts.round(3).to_string())
    print("\nshare of the logits (projection sum(part*z)/sum(z*z))\n"
          + shares.round(3).to_string())
    default = SCHEMA["lrp_composite"].default
    worst = float(artefacts.loc[default, ["period_4", "period_8"]].max())
    ok = worst <= args.limit
    print(f"\ndefault composite {default}: blockiness {worst:.3f} "
          f"({'<=' if ok else '>'} {args.limit}) {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
