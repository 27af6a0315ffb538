"""The comparison of notebook 06: which (image, class) pairs, every method's maps, tables.

The pairs are chosen from the outcomes (notebook 03): for each observation, the most confident
true positives, false positives and false negatives. Localisation needs a ground-truth mask
(positives the phantom drew; CheXlocalize's annotations for the real data), so it is scored on
TP and FN pairs; faithfulness (on a seeded sample of the pairs), the sanity check (on a few true
positives) and the shortcut on every pair; class sensitivity on the sanity sample's images. The
summaries, verdicts and key insights are :mod:`chexlib.heatmap_quality.summaries`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from chexlib import methods
from chexlib.data.labels import patient_ids
from chexlib.explain import combined
from chexlib.explain.dispatch import explain
from chexlib.explain.gradcam import gradcam
from chexlib.heatmap_quality import chexlocalize, faithfulness, localisation, sanity
from chexlib.methods import RANDOM
from chexlib.observations import OBSERVATIONS

#: The shortcut table's ``observation group`` of the observations correlated with the marker.
MARKER_GROUP = "correlated with the marker"
#: Grad-CAM without its final ReLU (``relu=False``): signed like LRP, so that the faithfulness
#: test can compare signed with signed (LeRF removes negative evidence first only where a map has
#: some). A comparison-only name, not a registry method.
SIGNED_GRADCAM = "gradcam_signed"


def evaluation_pairs(reported, n: int | None, observations: Sequence[str] = OBSERVATIONS,
                     outcomes: Sequence[str] = ("TP", "FP", "FN")) -> pd.DataFrame:
    """Up to ``n`` (image, observation) pairs per observation and outcome, most confident first
    (``n=None``: every pair with that outcome among the reported images).

    Returns
    -------
    DataFrame
        Columns ``row`` (reported row), ``observation``, ``class`` (logit index), ``outcome``,
        ``probability``, ``has_mask``, ``patient`` (from the image path: the unit the intervals
        resample, since pairs of one image or one patient are not independent); sorted by row.
    """
    records = []
    for name in observations:
        j = OBSERVATIONS.index(name)
        for kind in outcomes:
            for row in reported.pick(name, kind, len(reported) if n is None else n):
                records.append({"row": row, "observation": name, "class": j, "outcome": kind,
                                "probability": float(reported.probs[row, j]),
                                "has_mask": reported.outline(row, name) is not None})
    columns = ["row", "observation", "class", "outcome", "probability", "has_mask"]
    pairs = pd.DataFrame(records, columns=columns)
    paths = pd.DataFrame({"Path": [str(reported.paths[int(r)]) for r in pairs["row"]]})
    pairs["patient"] = patient_ids(paths).fillna(paths["Path"]).to_numpy()
    return pairs.sort_values(["row", "class"], kind="stable").reset_index(drop=True)


def pair_maps(model: nn.Module, reported, pairs: pd.DataFrame, method: str,
              device: str | torch.device = "cpu", seed: int = 0,
              batch_size: int = 16) -> np.ndarray:
    """The map of every pair under ``method``, float32 [len(pairs), S, S].

    Each image is loaded and passed forward once, with all its pairs' classes as per-image
    targets (:func:`chexlib.explain.inputs.class_targets`): its K pairs cost one forward pass
    and K backward passes (for LRP, the later ones reuse the modified forward passes).
    Images with the same number of pairs share batches of up to ``batch_size``, so that no
    backward pass runs for images with nothing left to explain.
    A baseline of the registry (``"random"``: seeded standard-normal maps, the chance level) is
    drawn for all pairs at once with ``seed``, without loading the images; :data:`SIGNED_GRADCAM`
    is Grad-CAM with ``relu=False``.
    """
    size = reported.image_size
    if method in methods.BASELINES:
        stand_in = torch.empty((len(pairs), 0, size, size))  # a baseline reads only the shape
        return methods.get(method)(model, stand_in, [0], seed=seed)[:, 0].numpy()
    out = np.empty((len(pairs), size, size), dtype=np.float32)
    slots = pairs.groupby("row", sort=False).cumcount().to_numpy()
    counts = pairs.groupby("row", sort=True).size().sort_values(kind="stable")
    rows = counts.index.to_numpy()
    for start in range(0, len(rows), batch_size):
        chunk = [int(r) for r in rows[start:start + batch_size]]
        position = {row: i for i, row in enumerate(chunk)}
        members = np.flatnonzero(pairs["row"].isin(chunk).to_numpy())
        where = np.array([position[int(r)] for r in pairs["row"].to_numpy()[members]])
        table = np.full((len(chunk), int(slots[members].max()) + 1), -1, dtype=np.int64)
        table[where, slots[members]] = pairs["class"].to_numpy()[members]
        images = reported.images(chunk).to(device)
        explained = (gradcam(model, images, table, relu=False) if method == SIGNED_GRADCAM
                     else explain(model, images, method, table))
        out[members] = explained[where, slots[members]].detach().cpu().numpy()
    return out


def method_maps(model: nn.Module, reported, pairs: pd.DataFrame, names: Sequence[str],
                device: str | torch.device = "cpu", seed: int = 0,
                batch_size: int = 16) -> dict[str, np.ndarray]:
    """:func:`pair_maps` of every method in ``names``, in that order.

    A combination whose parts (:data:`chexlib.explain.combined.PARTS`) are among ``names`` is
    made from their maps (:func:`chexlib.explain.combined.combine`): the same maps, without
    explaining every pair a second time.
    """
    derived = [name for name in names
               if name in combined.PARTS and set(combined.PARTS[name]) <= set(names)]
    maps = {name: pair_maps(model, reported, pairs, name, device=device, seed=seed,
                            batch_size=batch_size)
            for name in names if name not in derived}
    for name in derived:
        relevance, cam = combined.PARTS[name]
        maps[name] = combined.combine(maps[relevance], maps[cam]).astype(np.float32)
    return {name: maps[name] for name in names}


def pair_masks(reported, pairs: pd.DataFrame, kind: str = "finding") -> np.ndarray:
    """Ground-truth masks [len(pairs), S, S] (all-False where there is none).

    ``kind``: ``"finding"`` (the pair's observation) or ``"shortcut"`` (the planted marker).
    """
    size = reported.image_size
    masks = np.zeros((len(pairs), size, size), dtype=bool)
    for i, (row, name) in enumerate(zip(pairs["row"], pairs["observation"])):
        mask = reported.outline(int(row), "shortcut" if kind == "shortcut" else name)
        if mask is not None:
            masks[i] = mask
    return masks


def shortcut_correlation(reported) -> pd.Series:
    """Phi correlation, over the reported images, of the planted marker with each label."""
    marker = np.array([reported.outline(r, "shortcut") is not None for r in range(len(reported))],
                      dtype=float)
    labels = np.asarray(reported.labels, dtype=float)
    phi = []
    for j in range(labels.shape[1]):
        y = labels[:, j]
        ok = marker.std() > 0 and y.std() > 0
        phi.append(float(np.corrcoef(marker, y)[0, 1]) if ok else float("nan"))
    return pd.Series(phi, index=list(OBSERVATIONS), name="phi(marker, label)")


def localisation_scores(pairs: pd.DataFrame, maps: dict[str, np.ndarray],
                        masks: np.ndarray) -> pd.DataFrame:
    """Pointing game, mass and rank accuracy and Otsu IoU of every method on the masked pairs.

    Every method is scored on its maps' positive part (signed LRP and rectified Grad-CAM on the
    same footing: negative relevance is evidence *against* the class, not a location of it). A
    blank map (no positive relevance) scores NaN in every metric and is flagged in ``blank``.

    Parameters
    ----------
    pairs : DataFrame
        :func:`evaluation_pairs`; only rows with ``has_mask`` are scored.
    maps : dict method -> [len(pairs), S, S]
    masks : [len(pairs), S, S] bool (:func:`pair_masks`)

    Returns
    -------
    DataFrame
        The scored pairs' columns plus ``method``, ``chance`` (the mask's area fraction: a
        random map's expected score), ``blank``, ``pointing``, ``mass``, ``rank``, ``iou``.
    """
    keep = pairs["has_mask"].to_numpy(dtype=bool)
    frames = []
    for name, m in maps.items():
        m, g = np.clip(m[keep], 0, None), masks[keep]
        frames.append(pairs[keep].assign(
            method=name, chance=localisation.chance_level(g), blank=localisation.blank_maps(m),
            pointing=localisation.pointing_game(m, g),
            mass=localisation.relevance_mass_accuracy(m, g),
            rank=localisation.relevance_rank_accuracy(m, g), iou=localisation.otsu_iou(m, g)))
    return pd.concat(frames, ignore_index=True)


def masked_pair_scores(model: nn.Module, reported, methods: Sequence[str],
                       outcomes: Sequence[str] = ("TP", "FN"), device: str | torch.device = "cpu",
                       seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Every pair with a mask among the reported images, not a sample: their localisation.

    Returns
    -------
    pairs : DataFrame
        :func:`evaluation_pairs` with ``n=None``, only the pairs with a mask, re-indexed.
    masks : ndarray bool [len(pairs), S, S]
    scores : DataFrame
        :func:`localisation_scores` of ``methods`` on them.
    """
    pairs = evaluation_pairs(reported, None, outcomes=outcomes)
    pairs = pairs[pairs["has_mask"]].reset_index(drop=True)
    masks = pair_masks(reported, pairs)
    maps = method_maps(model, reported, pairs, methods, device=device, seed=seed)
    return pairs, masks, localisation_scores(pairs, maps, masks)


def class_sensitivity(model: nn.Module, reported, rows: Sequence[int], methods: Sequence[str],
                      device: str | torch.device = "cpu") -> pd.DataFrame:
    """How much each method's maps of one image change with the class explained.

    For each image, the maps of all 14 classes; their mean pairwise Spearman rank correlation
    (:func:`~chexlib.heatmap_quality.sanity.class_map_correlation`). Near 1: the explanation
    barely depends on the class (Sixt et al. 2020 show this for many modified-backprop rules),
    so it says little about *that* class.

    Returns
    -------
    DataFrame
        ``row``, ``method``, ``class correlation`` (one row per image and method).
    """
    images = reported.images([int(r) for r in rows]).to(device)
    records = []
    for name in methods:
        maps = explain(model, images, name, list(range(len(OBSERVATIONS)))).detach().cpu().numpy()
        for row, value in zip(rows, sanity.class_map_correlation(maps)):
            records.append({"row": int(row), "method": name, "class correlation": float(value)})
    return pd.DataFrame(records)


def faithfulness_sample(pairs: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """The first ``n`` pairs of a seeded shuffle (all when fewer), in the pairs' order.

    The index is kept: it addresses the rows of the maps of :func:`pair_maps`.
    """
    return pairs.sample(n=min(n, len(pairs)), random_state=seed).sort_index()


def faithfulness_curves(model: nn.Module, reported, subset: pd.DataFrame,
                        maps: dict[str, np.ndarray], methods: Sequence[str],
                        orders: Sequence[str] = ("morf", "lerf"), fill: str = "blur",
                        patch: int = 8, steps: int = 16, batch_size: int = 64,
                        device: str | torch.device = "cpu", seed: int = 0,
                        precision: str = "fp32") -> tuple[dict[tuple[str, str], np.ndarray],
                                                          pd.DataFrame]:
    """Region-perturbation curves and AOPC of every method and order on the ``subset`` pairs.

    Parameters
    ----------
    model : nn.Module
    reported : ReportedImages
    subset : DataFrame
        Pairs (:func:`faithfulness_sample`); their index addresses the rows of ``maps``.
    maps : dict method -> [len(pairs), S, S]
        :func:`pair_maps` of every method in ``methods``.
    methods, orders : sequences of str
        Methods (outer loop) and removal orders (inner loop; see
        :func:`~chexlib.heatmap_quality.faithfulness.region_perturbation`).
    fill, patch, steps, batch_size, seed, precision
        As in :func:`~chexlib.heatmap_quality.faithfulness.region_perturbation` (notebook 06
        passes the run's ``precision``: the curves use the arithmetic of its predictions).

    Returns
    -------
    curves : dict (method, order) -> ndarray [len(subset), steps + 1]
    scores : DataFrame
        The subset's columns plus ``method``, ``order`` and ``aopc``, one row per pair, method
        and order (in that loop order).
    """
    images = reported.images(subset["row"].tolist()).to(device)
    classes = subset["class"].tolist()
    curves, rows = {}, []
    for name in methods:
        for order in orders:
            c = faithfulness.region_perturbation(model, images, maps[name][subset.index], classes,
                                                 order=order, patch=patch, steps=steps, fill=fill,
                                                 batch_size=batch_size, seed=seed,
                                                 precision=precision)
            curves[name, order] = c
            rows.append(subset.assign(method=name, order=order, aopc=faithfulness.aopc(c)))
    return curves, pd.concat(rows, ignore_index=True)


def sanity_sample(pairs: pd.DataFrame, n: int = 4) -> pd.DataFrame:
    """The first ``n`` true-positive pairs; the first ``n`` pairs when there is none."""
    tp = pairs[pairs["outcome"] == "TP"].head(n)
    return tp if len(tp) else pairs.head(n)


def randomisation_check(model: nn.Module, reported, pairs: pd.DataFrame, methods: Sequence[str],
                        n: int = 4, device: str | torch.device = "cpu",
                        seed: int = 0) -> pd.DataFrame:
    """Cascading model randomisation of the named ``methods`` on :func:`sanity_sample`'s pairs.

    Returns
    -------
    DataFrame
        :func:`~chexlib.heatmap_quality.sanity.cascading_randomisation`'s table (``method``,
        ``step``, ``block``, ``image``, ``spearman``).
    """
    sample = sanity_sample(pairs, n)
    by_name = _reusing_parts(methods)
    images = reported.images(sample["row"].tolist()).to(device)
    return sanity.cascading_randomisation(model, images, sample["class"].tolist(), by_name,
                                          seed=seed)


def _reusing_parts(names: Sequence[str]) -> dict:
    """``explain`` per method, where a combination whose parts are among ``names`` combines
    the parts' maps of the same network state (the cascade calls the methods in order)."""
    latest: dict[str, tuple] = {}

    def state(net):
        return tuple((id(t), t._version) for t in net.parameters())

    def by(name):
        def fn(net, images, classes):
            parts = combined.PARTS.get(name)
            if parts and all(latest.get(p, (None,))[0] == state(net) for p in parts):
                return combined.combine(latest[parts[0]][1], latest[parts[1]][1])
            maps = explain(net, images, name, classes)
            latest[name] = (state(net), maps)
            return maps
        return fn

    return {name: by(name) for name in names}


def shortcut_shares(pairs: pd.DataFrame, maps: dict[str, np.ndarray], marker: np.ndarray,
                    correlated: set[str] | Sequence[str]) -> pd.DataFrame:
    """Share of each map's positive relevance on the marker, for every pair whose image has one.

    Parameters
    ----------
    pairs : DataFrame
        :func:`evaluation_pairs`.
    maps : dict method -> [len(pairs), S, S]
    marker : [len(pairs), S, S] bool
        The marker's masks (:func:`pair_masks` with ``kind="shortcut"``); all-False: no marker.
    correlated : set of str
        Observations correlated with the marker (e.g. phi > 0.1 in
        :func:`shortcut_correlation`).

    Returns
    -------
    DataFrame
        The marked pairs' columns plus ``method``, ``share`` (relevance mass accuracy against the
        marker) and ``observation group`` (:data:`MARKER_GROUP` or ``"other"``), methods in the
        order of ``maps``.
    """
    has_marker = marker.reshape(len(pairs), -1).any(axis=1)
    shares = pd.concat([
        pairs[has_marker].assign(method=name, share=localisation.relevance_mass_accuracy(
            m[has_marker], marker[has_marker])) for name, m in maps.items()], ignore_index=True)
    shares["observation group"] = shares["observation"].map(
        lambda o: MARKER_GROUP if o in correlated else "other")
    return shares


def chexlocalize_evaluation(model: nn.Module, reported, ground_truth: dict,
                            methods: Sequence[str], device: str | torch.device = "cpu",
                            n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """CheXlocalize's hit rate and mIoU of each method, per observation, on the reported images
    that have CheXlocalize ground truth (:mod:`chexlib.heatmap_quality.chexlocalize`).

    Every ground-truth image is explained for each of the 10 localised observations, as
    CheXlocalize evaluates (not only the positives the model found): hit rates over the images
    with the finding, IoU on CheXlocalize's true-positive slice, their bootstrap over images.

    Returns
    -------
    DataFrame
        Index (``method``, ``metric``: "hit rate" or "mIoU", observation); columns of
        :func:`~chexlib.heatmap_quality.chexlocalize.summarise` (``lower``, ``mean``, ``upper``,
        ``estimate``, ``n``). Empty when no reported image has ground truth.
    """
    rows = [r for r in range(len(reported)) if reported.image_id(r) in ground_truth]
    if not rows:
        return pd.DataFrame()
    sizes = chexlocalize.image_sizes(ground_truth)
    tables = {}
    for method in methods:
        maps: dict[str, dict[str, np.ndarray]] = {reported.image_id(r): {} for r in rows}
        for name in chexlocalize.LOCALIZED_OBSERVATIONS:
            one = pd.DataFrame({"row": rows, "class": OBSERVATIONS.index(name)})
            for r, m in zip(rows, pair_maps(model, reported, one, method, device=device,
                                            seed=seed)):
                maps[reported.image_id(r)][name] = m
        segmentations = chexlocalize.segment_maps(maps, sizes)
        for metric, table in (("hit rate", chexlocalize.hit_rates(maps, ground_truth)),
                              ("mIoU", chexlocalize.ious(segmentations, ground_truth))):
            tables[method, metric] = chexlocalize.summarise(table, n_boot=n_boot, seed=seed)
    return pd.concat(tables, names=["method", "metric"])
