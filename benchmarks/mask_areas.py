"""Report: each observation's mean ground-truth mask area fraction, per data folder and split.

The CPU-speed issue requires that a better model comes from training, not from an easier phantom:
each observation's mean mask area (the chance level of relevance mass accuracy) must stay within
+-20 % of the previous default data. This prints the table for one folder, or two side by side
with their ratio.

    python benchmarks/mask_areas.py data/phantom [data/phantom-before] [--split valid]

Area fraction: the mask's pixels over the image's, per (image, finding) mask of
``masks/<split>_findings.json``; the mean is over the masks of that observation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from chexlib.masks.chexlocalize import load_mask_file


def mask_areas(root: Path, split: str) -> pd.DataFrame:
    """Per observation: masks (n) and their mean area fraction."""
    path = root / "masks" / f"{split}_findings.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: expected a phantom data folder (with "
                         f"masks/{split}_findings.json), e.g. data/phantom")
    fractions: dict[str, list[float]] = {}
    for per_image in load_mask_file(root, split, "findings").values():
        for name, mask in per_image.items():
            fractions.setdefault(name, []).append(float(np.mean(mask)))
    rows = [(name, len(v), float(np.mean(v))) for name, v in sorted(fractions.items())]
    return pd.DataFrame(rows, columns=["observation", "n", "mean_area"]).set_index("observation")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("after", type=Path)
    parser.add_argument("before", type=Path, nargs="?")
    parser.add_argument("--split", default="valid", choices=("train", "valid"))
    args = parser.parse_args(argv)
    table = mask_areas(args.after, args.split)
    if args.before is not None:
        before = mask_areas(args.before, args.split)
        table = before.merge(table, left_index=True, right_index=True, how="outer",
                             suffixes=("_before", "_after"))
        table["ratio"] = table["mean_area_after"] / table["mean_area_before"]
        table["within_20pct"] = (table["ratio"] - 1).abs() <= 0.2
    pd.set_option("display.width", 160)
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
