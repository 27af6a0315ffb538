"""Notebook 07's computed key insights: each claims only what its interval supports.

A difference between subgroups is claimed when the paired interval of their AUROC gap excludes 0
(the two AUROCs share their negatives; for a table without the paired row, when their intervals
are apart); an effect of the drain when its interval excludes 0; otherwise the sentence says that
the data do not show one, with the numbers and the n behind them. The reveal table's rank
correlation is reported with its bootstrap interval; the largest of them is judged by its
Bonferroni-adjusted interval (it was picked for being large), and a share that tracks the causal
effect is claimed only when that interval excludes 0. The random map's share is the chance level.

A logit that moves when the drain is removed shows that the model *responds* to the drain's
pixels, not that it *learned* the drain as pneumothorax evidence from its training labels: a model
trained without drains on its pneumothoraces may respond too (an opaque tube over the lung edge
looks like a pleural line). "Learned" is claimed only against a control run
(``phantom_drain_rate`` 0): when removing the drain lowers the logit of the positives more than in
the control, intervals apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chexlib.display_names import display_name
from chexlib.methods import RANDOM
from chexlib.shortcut.strata import GAP
from chexlib.shortcut.subgroups import SUBGROUPS

__all__ = ["shortcut_insights"]


def _ci(row) -> str:
    return f"{row['auroc']:.2f} ({row['auroc_low']:.2f}-{row['auroc_high']:.2f}, n={row['n']})"


def _stratification(strata: pd.DataFrame, observation: str) -> str:
    rows = strata.set_index("subgroup")
    if not {SUBGROUPS[0], SUBGROUPS[1]} <= set(rows.index):
        absent = [name.replace("finding", observation) for name in SUBGROUPS[:2]
                  if name not in rows.index]
        return (f"Hidden stratification: not measurable here: the reported images hold no "
                f"{' and no '.join(absent)}.")
    a, b = rows.loc[SUBGROUPS[0]], rows.loc[SUBGROUPS[1]]
    if GAP in rows.index:  # the paired interval of the difference (shared negatives)
        gap, low, high = rows.loc[GAP, ["auroc", "auroc_low", "auroc_high"]]
        interval = f" ({low:+.3f} to {high:+.3f}, paired patient bootstrap)"
        apart, overlap = "the paired interval excludes 0", "the paired interval includes 0"
    else:  # a table without the paired row: the two intervals must be apart
        gap, low, high = (a["auroc"] - b["auroc"], a["auroc_low"] - b["auroc_high"],
                          a["auroc_high"] - b["auroc_low"])
        interval, apart, overlap = "", "intervals apart", "the intervals overlap"
    if np.isfinite(gap) and low > 0:
        verdict = f"the model is better on the cases with a drain ({apart})"
    elif np.isfinite(gap) and high < 0:
        verdict = f"the model is better on the cases without a drain ({apart})"
    else:
        verdict = f"{overlap}: no difference these data support"
    return (f"Hidden stratification, {observation}: AUROC with a drain {_ci(a)}, without "
            f"{_ci(b)}; gap {gap:+.3f}{interval}: {verdict}.")


def _effect(causal: pd.DataFrame, observation: str, subgroup: str, what: str) -> str | None:
    hit = causal[(causal["observation"] == observation) & (causal["subgroup"] == subgroup)]
    if hit.empty:
        return None
    row = hit.iloc[0]
    numbers = (f"{row['logit_change_mean']:+.2f} ({row['low']:+.2f} to {row['high']:+.2f}, "
               f"n={row['n']})")
    if row["high"] < 0:
        verdict = f"the drain raises the {observation} logit: the model responds to it"
    elif row["low"] > 0:
        verdict = f"the drain lowers the {observation} logit"
    else:
        verdict = "the interval includes 0: no effect these data support"
    return f"Causal test, {what}: {observation} logit change {numbers}: {verdict}."


#: The fewest images behind a rank correlation the insights name a method by.
MIN_REVEAL_IMAGES = 10


def _reveal(reveal: pd.DataFrame, effect_shown: bool) -> str | None:
    if reveal.empty:
        return None
    chance = reveal.loc[reveal["method"] == RANDOM, "share_confounder"]
    chance_text = f"the random map puts {chance.iloc[0]:.1%} on it" if len(chance) else ""
    scored = reveal[reveal["method"] != RANDOM]
    has_share = scored["share_confounder"].notna().any()
    top = scored.loc[scored["share_confounder"].idxmax()] if has_share else None
    share_text = (f"{display_name(top['method'])} puts the most positive relevance on the drain "
                  f"({top['share_confounder']:.1%})" if top is not None else "every map is blank")
    if not effect_shown:
        return (f"Which explanation reveals it: no causal effect is shown, so there is no shortcut "
                f"to reveal; {share_text}; {chance_text}.")
    usable = scored[np.isfinite(scored["spearman_with_effect"])
                    & (scored["n"] >= MIN_REVEAL_IMAGES)]
    if usable.empty:
        return (f"Which explanation reveals it: {share_text}; {chance_text}; too few images "
                f"(fewer than {MIN_REVEAL_IMAGES}) for a rank correlation with the effect.")
    best = usable.loc[usable["spearman_with_effect"].idxmax()]
    rho = f"Spearman {best['spearman_with_effect']:+.2f}"
    m = int(scored["spearman_with_effect"].notna().sum())
    if np.isfinite(best.get("spearman_low", np.nan)):
        rho += f", 95% CI {best['spearman_low']:+.2f} to {best['spearman_high']:+.2f}"
        family = (best.get("spearman_family_low", np.nan), best.get("spearman_family_high", np.nan))
        adjusted = (f"adjusted for the {m} correlations it was picked from (Bonferroni, "
                    f"{1 - 0.05 / m:.1%}): {family[0]:+.2f} to {family[1]:+.2f}")
        if m > 1 and np.isfinite(family[0]):
            verdict = (f"{adjusted}, above 0: the more relevance this map puts on the drain, the "
                       "more the drain moves the logit" if family[0] > 0 else
                       f"{adjusted}, which holds 0, so this sample does not show that any map's "
                       "share tracks the effect")
        else:
            verdict = ("the interval excludes 0: the more relevance this map puts on the drain, "
                       "the more the drain moves the logit" if best["spearman_low"] > 0 else
                       "the interval holds 0, so this sample does not show that any map's share "
                       "tracks the effect")
    else:
        verdict = "no interval: descriptive"
    return (f"Which explanation reveals it: {share_text}; {chance_text}; the share of "
            f"{display_name(best['method'])} has the highest rank correlation with the causal "
            f"effect ({rho}, "
            f"n={best['n']} images); {verdict}.")


def _removed_row(causal: pd.DataFrame | None, observation: str):
    if causal is None:
        return None
    hit = causal[(causal["observation"] == observation) & (causal["subgroup"] == SUBGROUPS[0])]
    return None if hit.empty else hit.iloc[0]


def _learned(causal: pd.DataFrame, control: pd.DataFrame | None, observation: str,
             train_drain_rate: float | None) -> str | None:
    row = _removed_row(causal, observation)
    if row is None:
        return None
    if train_drain_rate == 0:
        return ("Learned or not: this run is the control (phantom_drain_rate 0: no training "
                "pneumothorax had a drain), so a response here is not the drain-pneumothorax "
                "shortcut; drains on other training images (phantom_drain_rate_other) can still "
                "teach the drain as evidence against the finding.")
    base = _removed_row(control, observation)
    if base is None:
        return ("Learned or not: not tested; a model trained without drains on its "
                "pneumothoraces may respond to one too. Rerun with phantom_drain_rate 0 and pass "
                "that run folder as control_run.")
    numbers = (f"{row['logit_change_mean']:+.2f} ({row['low']:+.2f} to {row['high']:+.2f}) here, "
               f"{base['logit_change_mean']:+.2f} ({base['low']:+.2f} to {base['high']:+.2f}) in "
               f"the control")
    if row["high"] < base["low"]:
        verdict = ("removing the drain lowers the logit more than in the control (intervals "
                   "apart): the model learned the drain as a shortcut")
    else:
        verdict = "the intervals are not apart: a learned shortcut is not shown"
    return f"Learned or not, {observation} positives with a drain: {numbers}: {verdict}."


def shortcut_insights(strata: pd.DataFrame, causal: pd.DataFrame, reveal: pd.DataFrame,
                      observation: str = "Pneumothorax", train_drain_rate: float | None = None,
                      control_causal: pd.DataFrame | None = None) -> list[str]:
    """The key insights of notebook 07, from its three tables.

    Parameters
    ----------
    strata, causal, reveal : DataFrame
        ``tables/07_strata.csv``, ``07_causal.csv`` and ``07_reveal.csv`` of the run.
    observation : str
        The finding the drain confounds.
    train_drain_rate : float, optional
        The run's ``phantom_drain_rate``: 0 marks the run as the control.
    control_causal : DataFrame, optional
        ``tables/07_causal.csv`` of a control run (``phantom_drain_rate`` 0): only against it is
        a learned shortcut claimed.
    """
    from chexlib.shortcut.lab import ADDED

    effects = [_effect(causal, observation, SUBGROUPS[0], "drain removed from positives"),
               _effect(causal, observation, SUBGROUPS[2], "drain removed from negatives"),
               _effect(causal, observation, ADDED, "drain put into positives without one")]
    shown = any(line is not None and "responds to it" in line for line in effects)
    lines = [_stratification(strata, observation), *effects,
             _learned(causal, control_causal, observation, train_drain_rate),
             _reveal(reveal, shown)]
    return [line for line in lines if line]
