"""Computed sentences that say what a figure shows (printed under it in the notebooks).

Each returns Markdown with its numbers and their n, computed from the maps the figure draws, so
that a reader is told what to look for: how much of each map's positive relevance lies inside
the finding's outline (against the outline's area, the chance level), and how alike an image's
class maps are.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from chexlib.display_names import display_name
from chexlib.heatmap_quality.localisation import chance_level, relevance_mass_accuracy
from chexlib.heatmap_quality.sanity import class_map_correlation

__all__ = ["class_similarity_note", "inside_outline_note"]


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
