"""Report: does a run's model meet the CPU-speed issue's targets? Reads a finished run folder.

The targets (for each of Cardiomegaly, Edema, Pleural Effusion, Pneumothorax, Support Devices):

- AUROC >= 0.85 (``metrics.json``, notebook 03);
- relevance mass accuracy on TP pairs >= 3x the masks' area fraction (the chance level) for
  Grad-CAM and for at least one LRP composite (``tables/06_localisation_by_observation.csv``,
  every TP pair with a mask among the reported images; blank maps are NaN and counted in
  ``blank_rate``, so the mean mass is over the maps that have positive relevance);
- Grad-CAM's blank rate over all TP pairs <= 20 %;
- macro AUROC over the 14 observations >= 0.81.

    python benchmarks/model_targets.py runs/default [--json FILE]

Prints one table row per observation and a verdict per target; it computes nothing itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

TARGET_OBSERVATIONS = ("Cardiomegaly", "Edema", "Pleural Effusion", "Pneumothorax",
                       "Support Devices")
MIN_AUROC, MIN_RATIO, MAX_BLANK, MIN_MACRO = 0.85, 3.0, 0.20, 0.81
NOT_LRP = {"gradcam", "gradcam_signed", "gradcam_pp", "random", "lrp_gradcam"}


def target_rows(run: Path) -> tuple[pd.DataFrame, dict]:
    """The per-observation table and the run-level figures of ``run``."""
    metrics = json.loads((run / "metrics.json").read_text())
    table = pd.read_csv(run / "tables" / "06_localisation_by_observation.csv")
    tp = table[table["outcome"] == "TP"]
    rows = []
    for name in TARGET_OBSERVATIONS:
        mine = tp[tp["observation"] == name].set_index("method")
        lrp = mine[~mine.index.isin(NOT_LRP)]
        best = lrp["mass"].idxmax() if lrp["mass"].notna().any() else None
        chance = float(mine["chance"].iloc[0]) if len(mine) else float("nan")
        cam = mine.loc["gradcam"] if "gradcam" in mine.index else None
        rows.append({
            "observation": name,
            "auroc": metrics["per_class"][name]["auroc"],
            "tp_pairs": int(mine["n"].max()) if len(mine) else 0,
            "chance": chance,
            "gradcam_mass": float(cam["mass"]) if cam is not None else float("nan"),
            "gradcam_blank": float(cam["blank_rate"]) if cam is not None else float("nan"),
            "best_lrp": best or "",
            "best_lrp_mass": float(lrp.loc[best, "mass"]) if best else float("nan"),
        })
    out = pd.DataFrame(rows)
    out["gradcam_x_chance"] = out["gradcam_mass"] / out["chance"]
    out["lrp_x_chance"] = out["best_lrp_mass"] / out["chance"]
    cam_all = tp[tp["method"] == "gradcam"]
    blank = float((cam_all["blank_rate"] * cam_all["n"]).sum() / cam_all["n"].sum())
    return out, {"macro_auroc": metrics["summary"]["macro_auroc"], "gradcam_blank_tp": blank,
                 "gradcam_tp_pairs": int(cam_all["n"].sum())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows, overall = target_rows(args.run)
    pd.set_option("display.width", 200)
    print(rows.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    checks = {
        f"AUROC >= {MIN_AUROC} for all five": bool((rows["auroc"] >= MIN_AUROC).all()),
        f"Grad-CAM mass >= {MIN_RATIO}x chance for all five":
            bool((rows["gradcam_x_chance"] >= MIN_RATIO).all()),
        f"best LRP mass >= {MIN_RATIO}x chance for all five":
            bool((rows["lrp_x_chance"] >= MIN_RATIO).all()),
        f"Grad-CAM blank rate on TP pairs <= {MAX_BLANK:.0%} "
        f"({overall['gradcam_blank_tp']:.1%} of {overall['gradcam_tp_pairs']})":
            overall["gradcam_blank_tp"] <= MAX_BLANK,
        f"macro AUROC >= {MIN_MACRO} ({overall['macro_auroc']:.4f})":
            overall["macro_auroc"] >= MIN_MACRO,
    }
    for text, ok in checks.items():
        print(f"{'met    ' if ok else 'NOT met'}  {text}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows.to_dict("records"), **overall,
                                         "checks": checks}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
