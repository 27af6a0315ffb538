"""Summaries of notebook 06's comparison: intervals, tables, verdicts and key insights.

Every summary keeps the numbers honest about what is behind them: the count of finite scores
(blank maps and empty masks are NaN), the share of blank maps, and 95% bootstrap intervals that
resample patients (pairs of one image or patient are not independent). The computed key insights
claim only what those intervals support.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from chexlib.display_names import display_name
from chexlib.heatmap_quality import localisation
from chexlib.heatmap_quality.compare import MARKER_GROUP
from chexlib.methods import RANDOM

#: The fewest scored pairs behind a per-observation verdict ("localises", "below chance").
MIN_VERDICT_PAIRS = 5


def bootstrap_mean(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                   groups=None) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of the finite ``values`` (NaN when none).

    ``groups`` (e.g. the pairs' ``patient``): resample groups with replacement, every value of a
    drawn group coming along (the cluster bootstrap notebook 03 uses for AUROC); the resampled
    mean is the mean over the drawn values. Without groups, values are resampled.
    """
    x = np.asarray(values, dtype=float)
    finite = np.isfinite(x)
    if not finite.any():
        return float("nan"), float("nan"), float("nan")
    codes = (np.arange(int(finite.sum())) if groups is None
             else pd.factorize(np.asarray(groups)[finite], sort=True)[0])
    x = x[finite]
    count = int(codes.max()) + 1
    sums = np.bincount(codes, weights=x, minlength=count)
    sizes = np.bincount(codes, minlength=count).astype(float)
    draws = np.random.default_rng(seed).integers(0, count, size=(n_boot, count))
    means = sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)
    tail = (1 - level) / 2 * 100
    return float(x.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def summary_table(scores: pd.DataFrame, by: Sequence[str], metrics: Sequence[str],
                  n_boot: int = 1000, seed: int = 0, cluster: str | None = "patient"
                  ) -> pd.DataFrame:
    """Mean, 95% bootstrap interval and count of each metric per group of ``by``.

    Parameters
    ----------
    scores : DataFrame
        One row per pair (and method, ...); NaN scores (blank maps, empty masks) are left out of
        the means and counted out of ``n``.
    by, metrics : sequences of str
    n_boot, seed : int
    cluster : str or None
        The column whose values are resampled together (default ``"patient"``, where present);
        None: rows are resampled.

    Returns
    -------
    DataFrame
        ``by``, then per metric ``<metric>``, ``<metric> low``, ``<metric> high``, ``<metric> n``
        (the finite scores behind the mean); ``pairs`` (rows in the group) and, where ``scores``
        has a ``blank`` column, ``blank_rate`` (share of the group's maps with no positive
        relevance: NaN in every localisation metric).
    """
    rows = []
    grouped = cluster if cluster is not None and cluster in scores.columns else None
    for key, group in scores.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        record = dict(zip(by, key))
        groups = None if grouped is None else group[grouped].to_numpy()
        for metric in metrics:
            mean, low, high = bootstrap_mean(group[metric], n_boot, seed, groups=groups)
            record |= {metric: mean, f"{metric} low": low, f"{metric} high": high,
                       f"{metric} n": int(np.isfinite(group[metric].to_numpy(float)).sum())}
        record["pairs"] = len(group)
        if "blank" in group.columns:
            record["blank_rate"] = float(group["blank"].mean())
        rows.append(record)
    return pd.DataFrame(rows)


def _interval(row, metric: str) -> str:
    return f"{row[metric]:.2f} (95% CI {row[f'{metric} low']:.2f}-{row[f'{metric} high']:.2f})"


def key_insights(localisation: pd.DataFrame, faithfulness: pd.DataFrame,
                 shortcut: pd.DataFrame, scores: pd.DataFrame, chance: float,
                 verdicts: pd.DataFrame | None = None) -> list[str]:
    """Sentences computed from the comparison's tables (so they hold for this run only).

    Parameters are the summaries of notebook 06 (:func:`summary_table` outputs for the
    localisation ``mass``, the faithfulness ``aopc`` by method and order, the shortcut
    ``share`` by method and observation group), the per-pair localisation ``scores`` and the
    random map's chance level. Methods are named for people
    (:func:`chexlib.display_names.display_name`).
    """
    lines = []
    real = localisation[(localisation["method"] != RANDOM) & localisation["mass"].notna()]
    if len(real):
        ranked = real.sort_values("mass", ascending=False)
        best, second = ranked.iloc[0], ranked.iloc[1] if len(ranked) > 1 else None
        separated = second is not None and best["mass low"] > second["mass high"]
        lines.append(
            f"Localisation: {display_name(best['method'])} puts the largest share of positive "
            f"relevance inside the ground truth, {_interval(best, 'mass')}{_behind(best)}; a random map scores "
            f"about {chance:.2f}."
            + ("" if second is None else
               f" The runner-up, {display_name(second['method'])}, {_interval(second, 'mass')}"
               f"{_behind(second)}: "
               + ("the intervals do not overlap." if separated else
                  "the intervals overlap, so this sample does not separate them.")))
    else:
        lines.append("Localisation: no pair with a ground-truth mask in this sample.")
    if verdicts is not None and len(verdicts):
        lines.append(_verdict_line(localisation, verdicts))
    by_outcome = scores[scores["outcome"].isin(["TP", "FN"])]
    if len(by_outcome) and by_outcome["outcome"].nunique() == 2:
        worse, widest = [], None
        for method, group in by_outcome.groupby("method", sort=False):
            if method == RANDOM:
                continue
            parts = [group[group["outcome"] == kind] for kind in ("TP", "FN")]
            tp, fn = (bootstrap_mean(part["mass"], groups=part.get("patient")) for part in parts)
            counts = [int(part["mass"].notna().sum()) for part in parts]
            if np.isfinite(tp[0]) and np.isfinite(fn[0]) and fn[2] < tp[1]:
                worse.append(method)
                if widest is None or tp[0] - fn[0] > widest[1][0] - widest[2][0]:
                    widest = (method, tp, fn, counts)
        total = by_outcome.loc[by_outcome["method"] != RANDOM, "method"].nunique()
        example = "" if widest is None else (
            f" The widest gap, {display_name(widest[0])}: mass {widest[1][0]:.2f} ({widest[1][1]:.2f}-"
            f"{widest[1][2]:.2f}, n={widest[3][0]}) on true positives against "
            f"{widest[2][0]:.2f} ({widest[2][1]:.2f}-{widest[2][2]:.2f}, n={widest[3][1]}) on "
            "false negatives (95% CI over patients).")
        lines.append(
            f"Errors: for {len(worse)} of {total} methods the maps of false negatives localise "
            f"the finding clearly worse than those of true positives (intervals apart)"
            + (f": {'; '.join(map(display_name, worse))}." if worse else
               "; errors do not look different here.")
            + example)
    if len(faithfulness):
        pivot = faithfulness.pivot_table(index="method", columns="order", values="aopc")
        if {"morf", "lerf"} <= set(pivot.columns):
            gap = (pivot["morf"] - pivot["lerf"]).dropna().sort_values(ascending=False)
            morf = pivot["morf"].dropna().sort_values(ascending=False)
            top_gap, top_morf = display_name(gap.index[0]), display_name(morf.index[0])
            lines.append(
                f"Faithfulness: removing regions in the order of the {top_gap} map changes the "
                "logit most "
                f"(AOPC MoRF - LeRF = {gap.iloc[0]:.2f}; random order: "
                f"{gap.get(RANDOM, float('nan')):.2f}); by MoRF alone, which does not favour "
                f"signed maps, {top_morf} ({_aopc(faithfulness, morf.index[0])}; random "
                f"order: {_aopc(faithfulness, RANDOM)}"
                + _morf_apart(faithfulness, morf.index[0]) + "). The gap is a difference of two "
                "means without an interval of its own: it ranks the methods, no more.")
    group = MARKER_GROUP
    marked = shortcut[(shortcut["observation group"] == group) & (shortcut["method"] != RANDOM)]
    if len(marked) and marked["share"].notna().any():
        top = marked.sort_values("share", ascending=False).iloc[0]
        base = shortcut[(shortcut["method"] == RANDOM) & (shortcut["observation group"] == group)]
        base_share = float(base["share"].iloc[0]) if len(base) else float("nan")
        lines.append(
            "Shortcut: for observations correlated with the PORTABLE marker, "
            f"{display_name(top['method'])} reveals it most, {_interval(top, 'share')} of its positive relevance on the marker"
            + (f" over {int(top['share n'])} map{'s' * (int(top['share n']) != 1)}"
               if "share n" in top else "")
            + f" (a random map: {base_share:.2f}).")
    else:
        lines.append("Shortcut: no sampled image carries the marker for a correlated observation.")
    return lines


def _aopc(faithfulness: pd.DataFrame, method: str) -> str:
    """MoRF AOPC of ``method`` with its interval and n: ``3.06 (2.51-3.60, n=24)``."""
    row = faithfulness[(faithfulness["method"] == method) & (faithfulness["order"] == "morf")]
    if not len(row):
        return "not measured"
    row = row.iloc[0]
    text = f"{row['aopc']:.2f}"
    if "aopc low" in row and np.isfinite(row["aopc low"]):
        text += f" ({row['aopc low']:.2f}-{row['aopc high']:.2f}"
        text += f", n={int(row['aopc n'])})" if "aopc n" in row else ")"
    return text


def _morf_apart(faithfulness: pd.DataFrame, method: str) -> str:
    """Whether ``method``'s MoRF interval lies above the random order's."""
    morf = faithfulness[faithfulness["order"] == "morf"].set_index("method")
    if "aopc low" not in morf or method not in morf.index or RANDOM not in morf.index:
        return ""
    apart = morf.loc[method, "aopc low"] > morf.loc[RANDOM, "aopc high"]
    return ": the intervals do not overlap" if apart else (
        ": the intervals overlap, so this sample does not separate it from random removal")


def _behind(row) -> str:
    """What a mean is over: " over 15 of 49 maps (69% blank)" (where the summary says so)."""
    if "pairs" not in row or "mass n" not in row:
        return ""
    blank = f", {row['blank_rate']:.0%} blank" if "blank_rate" in row else ""
    return f" over {int(row['mass n'])} of {int(row['pairs'])} maps{blank}"


def _verdict_line(localisation: pd.DataFrame, verdicts: pd.DataFrame) -> str:
    named = {kind: ", ".join(f"{o} (n={n})" for o, n in zip(group["observation"], group["n"]))
             for kind, group in verdicts.groupby("verdict")}
    method = display_name(verdicts.attrs.get("method", "the chosen method"))
    return (f"Per observation ({method}, true positives, relevance mass minus chance, intervals "
            f"over patients): localises {named.get('localises', 'none')}; below chance "
            f"{named.get('below chance', 'none')}; undetermined (interval holds chance, or "
            f"under {MIN_VERDICT_PAIRS} maps) {named.get('undetermined', 'none')}.")


LOCALISATION_COLUMNS = ["observation", "method", "outcome", "n", "chance", "blank_rate",
                        "pointing", "mass", "rank", "iou", "auroc"]


def localisation_by_observation(scores: pd.DataFrame, masks: np.ndarray, pairs: pd.DataFrame,
                                auroc: dict[str, float] | pd.Series) -> pd.DataFrame:
    """Each method's mean localisation per observation and outcome, beside the class's AUROC.

    Parameters
    ----------
    scores : DataFrame
        :func:`localisation_scores`.
    masks, pairs
        As given to :func:`localisation_scores` (for the chance level: the masks' mean area
        fraction over the observation's pairs).
    auroc : mapping observation -> AUROC (notebook 03's ``metrics.json``)

    Returns
    -------
    DataFrame
        :data:`LOCALISATION_COLUMNS`: one row per observation, method and outcome; ``n`` the
        pairs scored (blank maps included: ``blank_rate`` of them are NaN in each metric).
    """
    area = localisation.chance_level(masks)
    chance = pd.Series(area, index=pairs.index).groupby(
        [pairs["observation"], pairs["outcome"]]).mean()
    table = (scores.groupby(["observation", "method", "outcome"], sort=False)
             .agg(n=("row", "size"), blank_rate=("blank", "mean"), pointing=("pointing", "mean"),
                  mass=("mass", "mean"), rank=("rank", "mean"), iou=("iou", "mean"))
             .reset_index())
    table["chance"] = [chance.get((o, k), np.nan) for o, k in
                       zip(table["observation"], table["outcome"])]
    table["auroc"] = table["observation"].map(lambda o: float(dict(auroc).get(o, np.nan)))
    return table[LOCALISATION_COLUMNS]


def observation_verdicts(scores: pd.DataFrame, method: str, metric: str = "mass",
                         outcome: str = "TP", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per observation, whether ``method``'s maps localise its finding better than chance.

    The statistic is the pair's ``metric`` minus its chance level (the mask's area fraction),
    averaged over the observation's ``outcome`` pairs, with a patient-clustered bootstrap
    interval. ``verdict``: ``"localises"`` (interval above 0), ``"below chance"`` (below 0) or
    ``"undetermined"`` (the interval holds 0, or fewer than :data:`MIN_VERDICT_PAIRS` scored
    pairs: a percentile bootstrap of 2-4 values is no interval).

    Returns
    -------
    DataFrame
        ``observation``, ``n`` (scored pairs), ``blank_rate``, ``excess``, ``excess low``,
        ``excess high``, ``verdict``.
    """
    chosen = scores[(scores["method"] == method) & (scores["outcome"] == outcome)]
    rows = []
    for name, group in chosen.groupby("observation", sort=False):
        excess = group[metric] - group["chance"]
        mean, low, high = bootstrap_mean(excess, n_boot, seed, groups=group.get("patient"))
        n = int(np.isfinite(excess.to_numpy(float)).sum())
        verdict = ("undetermined" if n < MIN_VERDICT_PAIRS or not np.isfinite(low) else
                   "localises" if low > 0 else "below chance" if high < 0 else "undetermined")
        rows.append({"observation": name, "n": n, "blank_rate": float(group["blank"].mean()),
                     "excess": mean, "excess low": low, "excess high": high, "verdict": verdict})
    columns = ["observation", "n", "blank_rate", "excess", "excess low", "excess high", "verdict"]
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["method"] = method
    return table


def metric_summary(localisation_summary: pd.DataFrame, faithfulness_summary: pd.DataFrame,
                   shortcut: pd.DataFrame, sensitivity: pd.DataFrame | None = None
                   ) -> pd.DataFrame:
    """One row per method: localisation means, AOPC gap (MoRF - LeRF) and mean shortcut share.

    Parameters
    ----------
    localisation_summary : DataFrame
        :func:`summary_table` of the localisation scores by ``method``.
    faithfulness_summary : DataFrame
        :func:`summary_table` of the AOPC by ``method`` and ``order`` (``morf`` and ``lerf``).
    shortcut : DataFrame
        :func:`shortcut_shares` (per pair).
    sensitivity : DataFrame, optional
        :func:`class_sensitivity` (per image).

    Returns
    -------
    DataFrame
        Indexed by method (the localisation summary's order, then methods only the faithfulness
        test has): ``blank_rate``, ``pointing``, ``mass``, ``rank``, ``iou``, ``AOPC gap``,
        ``AOPC MoRF``, ``AOPC LeRF`` (NaN where not measured), ``shortcut`` and,
        given ``sensitivity``, ``class correlation`` (1: the maps ignore the class).
    """
    columns = [c for c in ("blank_rate", "pointing", "mass", "rank", "iou")
               if c in localisation_summary.columns]
    summary = localisation_summary.set_index("method")[columns]
    aopc_table = faithfulness_summary.pivot_table(index="method", columns="order", values="aopc")
    summary = summary.reindex([*summary.index,
                               *(m for m in aopc_table.index if m not in summary.index)])
    summary["AOPC gap"] = aopc_table["morf"] - aopc_table["lerf"]  # MoRF - LeRF
    # Each side on its own too: MoRF says how much the most relevant regions matter; LeRF, low,
    # that the least relevant do not (a signed map's LeRF removes negative evidence first).
    summary["AOPC MoRF"], summary["AOPC LeRF"] = aopc_table["morf"], aopc_table["lerf"]
    summary["shortcut"] = shortcut.groupby("method")["share"].mean()
    if sensitivity is not None and len(sensitivity):
        summary["class correlation"] = sensitivity.groupby("method")["class correlation"].mean()
    return summary
