"""Computed sentences that say what a figure shows (printed under it in the notebooks).

Each returns Markdown with its numbers and their n, computed from the maps the figure draws, so
that a reader is told what to look for: how much of each map's positive relevance lies inside
the finding's outline (against the outline's area, the chance level), how much of a signed map is
evidence against the class (blue), how alike an image's class maps are, and how far a class the
model detects well is from a class its maps outline ("detection is not segmentation").
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from chexlib.display_names import display_name
from chexlib.heatmap_quality.localisation import chance_level, relevance_mass_accuracy
from chexlib.heatmap_quality.sanity import class_map_correlation

#: The AUROC from which a class counts as detected well, for :func:`detection_note`'s example.
WELL_DETECTED = 0.9
#: The fewest pairs behind :func:`detection_note`'s example.
MIN_EXAMPLE_PAIRS = 5

__all__ = ["class_similarity_note", "detection_note", "inside_outline_note",
           "negative_evidence_note"]


def inside_outline_note(maps: Mapping[str, object], outline, observation: str) -> str:
    """Per method, the share of the map's positive relevance inside ``outline``, against the
    outline's area fraction (what a random map puts there); a blank map is named as such."""
    if outline is None:
        return f"No outline of {observation} on this image: nothing to compare the maps with."
    mask = np.asarray(outline, dtype=bool)[None]
    chance = float(chance_level(mask)[0])
    parts = []
    for name, heat in maps.items():
        positive = np.clip(np.asarray(heat, dtype=np.float64), 0, None)[None]
        share = float(relevance_mass_accuracy(positive, mask)[0])
        parts.append(f"{display_name(name)} {share:.0%}" if np.isfinite(share)
                     else f"{display_name(name)} blank (no positive relevance)")
    return (f"**Inside the {observation} outline** (it covers {chance:.1%} of the image, the share "
            f"a random map would put there), the share of each map's positive relevance: "
            + "; ".join(parts) + ". Above the outline's area, a map concentrates on the finding; "
            "below it, its evidence lies elsewhere.")


def class_similarity_note(maps, method: str) -> str:
    """How alike the class maps of one image are: their mean pairwise Spearman correlation."""
    maps = np.asarray(maps, dtype=np.float64)
    blank = int(sum(not (m > 0).any() for m in maps))
    rho = float(class_map_correlation(maps[None])[0])
    verdict = ("nearly the same map whatever the class: it says little about *which* class"
               if rho >= 0.8 else "the maps change with the class" if rho < 0.5 else
               "partly class-specific")
    return (f"**How alike the {len(maps)} class maps of {display_name(method)} are**: mean "
            f"pairwise Spearman correlation {rho:.2f} ({verdict}); {blank} of {len(maps)} maps "
            "have no positive relevance.")


def negative_evidence_note(maps: Mapping[str, object], observation: str) -> str:
    """What the blue of signed maps is, with each map's share of negative relevance (the sum of
    its negative values over the sum of its absolute values; a zero map has none to share)."""
    parts, without = [], []
    for name, heat in maps.items():
        heat = np.asarray(heat, dtype=np.float64)
        total = float(np.abs(heat).sum())
        if total == 0:
            parts.append(f"{display_name(name)} zero everywhere")
            continue
        share = float(np.clip(-heat, 0, None).sum()) / total
        parts.append(f"{display_name(name)} {share:.0%}")
        if share == 0:
            without.append(display_name(name))
    text = (f"**Blue is evidence against {observation}**: pixels whose content lowered its logit. "
            "It says what argues against the class, not where the finding is. Share of each map's "
            "absolute relevance that is negative: " + "; ".join(parts) + ".")
    if without:
        text += (f" {', '.join(without)} show{'s' if len(without) == 1 else ''} no blue on this "
                 "image. No blue does not mean that nothing argues against the class: a ReLU "
                 "(Grad-CAM) or a rule that passes only positive contributions (z⁺) removes "
                 "counter-evidence before it can show.")
    return text


def detection_note(by_observation: pd.DataFrame, verdicts: pd.DataFrame, method: str,
                   outcome: str = "TP") -> str:
    """"Detection is not segmentation", with this run's numbers.

    Parameters
    ----------
    by_observation : DataFrame
        :func:`chexlib.heatmap_quality.summaries.localisation_by_observation`.
    verdicts : DataFrame
        :func:`chexlib.heatmap_quality.summaries.observation_verdicts` of ``method`` (the
        interval of relevance mass minus chance per observation).
    method : str
    outcome : str
        The pairs the numbers are over (true positives: the model detected the finding).

    The example is, among the observations detected well (AUROC >= :data:`WELL_DETECTED`) with
    at least :data:`MIN_EXAMPLE_PAIRS` pairs, the one whose maps localise least (lowest mass over
    chance); the lesson is claimed only when those maps put less than half of their positive
    relevance inside the masks.
    """
    rows = by_observation[(by_observation["method"] == method)
                          & (by_observation["outcome"] == outcome)]
    rows = rows.assign(ratio=rows["mass"] / rows["chance"]).dropna(subset=["ratio", "auroc"])
    if rows.empty:
        return (f"**Detection is not segmentation**: no {outcome} pair with a mask and a map of "
                f"{display_name(method)} on this run, so there is nothing to compare.")
    spread = (f" Over the {len(rows)} observations with masks and a map that is not blank: AUROC {rows['auroc'].min():.2f} "
              f"to {rows['auroc'].max():.2f}, relevance inside the masks "
              f"{rows['ratio'].min():.1f}x to {rows['ratio'].max():.1f}x chance.")
    detected = rows[(rows["auroc"] >= WELL_DETECTED) & (rows["n"] >= MIN_EXAMPLE_PAIRS)]
    if detected.empty:
        return (f"**Detection is not segmentation**: no observation is detected with AUROC >= "
                f"{WELL_DETECTED} on at least {MIN_EXAMPLE_PAIRS} {outcome} pairs here." + spread)
    weakest = detected.loc[detected["ratio"].idxmin()]
    name = weakest["observation"]
    verdict = verdicts.set_index("observation").loc[name] if name in set(
        verdicts["observation"]) else None
    interval = "" if verdict is None else (
        f"; mass minus chance {verdict['excess']:+.3f}, 95% CI {verdict['excess low']:+.3f} to "
        f"{verdict['excess high']:+.3f} over patients: {verdict['verdict']}")
    example = (f"{name} is detected with AUROC {weakest['auroc']:.3f}, yet the "
               f"{display_name(method)} maps of its {int(weakest['n'])} {outcome} pairs put "
               f"{weakest['mass']:.1%} of their positive relevance inside its masks, "
               f"{weakest['ratio']:.1f}x the {weakest['chance']:.1%} a random map puts there"
               f"{interval}.")
    lesson = (" A model can detect a finding without its map outlining it: the map shows where "
              "the evidence the model used lies, not the finding's extent."
              if weakest["mass"] < 0.5 else
              " Even the well-detected class its maps localise least keeps most of its relevance "
              "inside the masks: this run does not illustrate the point.")
    return "**Detection is not segmentation.** " + example + spread + lesson
