"""The CheXlocalize evaluation protocol: heatmap -> segmentation, hit rate, IoU, bootstrap CIs.

CheXlocalize (Saporta et al., "Benchmarking saliency methods for chest X-ray interpretation",
Nature Machine Intelligence 2022; code: github.com/rajpurkarlab/cheXlocalize) scores saliency maps
against radiologists' segmentations of 10 observations on the CheXpert validation (234 CXRs, 187
with a segmentation) and test sets (668 CXRs), in each radiograph's full-resolution frame:

* **segmentation** (their ``heatmap_to_segmentation.py``): the map is upsampled bilinearly to the
  original image, min-max normalised, cast to 8 bits, thresholded with OpenCV's Otsu (or a fixed
  threshold), and the contours of the result are filled; a map whose probability is below a
  cut-off gives an empty segmentation;
* **hit rate** (their ``eval.py``, pointing game): a hit when the maximum of the upsampled map
  lies in the ground truth; NaN (not counted) when the ground truth is empty;
* **IoU / mIoU**: per CXR and observation; by default on the true-positive slice only (NaN when
  the segmentation or the ground truth is empty), else NaN only when both are empty;
* **confidence intervals**: 1000 bootstrap resamples of the CXRs (seed 0), percentile 2.5 / 97.5
  by their index rule, and the bootstrap mean, rounded to 3 decimals.

Tables use chexlib's names (CheXlocalize's "Airspace Opacity" is "Lung Opacity"). A constant
map gives an empty segmentation and points at pixel (0, 0), as theirs (NaN in their normalisation),
made explicit. Unlike :mod:`chexlib.heatmap_quality.localisation` (blank maps NaN, ties in
expectation) this module reproduces CheXlocalize's numbers. Needs OpenCV (``cv2``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from chexlib.errors import MaskFormatError, MissingFileError, ParameterError
from chexlib.masks import read_chexlocalize, rle_decode, rle_encode
from chexlib.observations import OBSERVATIONS

__all__ = ["CHEXLOCALIZE_OBSERVATIONS", "LOCALIZED_OBSERVATIONS", "TO_CHEXLIB", "TO_CHEXLOCALIZE",
           "chexpert_path", "ground_truth_file", "heatmap_to_segmentation", "hit_rates",
           "image_sizes", "ious", "read_annotations", "read_segmentations", "segment_maps",
           "summarise", "upsample"]

#: CheXlocalize's 10 observations, spelled and ordered as their ``eval_constants.py``.
CHEXLOCALIZE_OBSERVATIONS: tuple[str, ...] = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Airspace Opacity", "Edema",
    "Consolidation", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Support Devices")
#: CheXlocalize name -> chexlib (CheXpert CSV) name.
TO_CHEXLIB: dict[str, str] = {name: "Lung Opacity" if name == "Airspace Opacity" else name
                              for name in CHEXLOCALIZE_OBSERVATIONS}
#: chexlib name -> CheXlocalize name (to write files their scripts read).
TO_CHEXLOCALIZE: dict[str, str] = {v: k for k, v in TO_CHEXLIB.items()}
#: The 10 observations in chexlib's names and order: the columns of every table here.
LOCALIZED_OBSERVATIONS: tuple[str, ...] = tuple(o for o in OBSERVATIONS if o in TO_CHEXLOCALIZE)
#: The Stanford AIMI download's file names, by split.
GROUND_TRUTH_FILES = {"valid": "gt_segmentations_val.json", "test": "gt_segmentations_test.json"}
_CXR_ID = re.compile(r"^(patient\d+)_(study\d+)_(view\d+_(?:frontal|lateral))$")
_ID_FORM = "'patientN_studyN_viewN_<frontal|lateral>'"

Nested = Mapping[str, Mapping[str, Any]]  # cxr_id -> observation -> value


def chexpert_path(cxr_id: str, split: str = "valid", root: str = "CheXpert-v1.0") -> str:
    """CheXpert image path of a CheXlocalize cxr_id.

    ``"patient64622_study1_view1_frontal"`` -> ``"CheXpert-v1.0/valid/patient64622/study1/
    view1_frontal.jpg"``; ``root="CheXpert-v1.0-small"`` gives the ``Path`` of the small
    download's ``valid.csv``. The inverse is :func:`chexlib.masks.chexlocalize_image_id`.
    """
    match = _CXR_ID.match(str(cxr_id))
    if match is None:
        raise ParameterError(f"cxr_id {cxr_id!r}: expected {_ID_FORM}")
    patient, study, view = match.groups()
    return f"{root}/{split}/{patient}/{study}/{view}.jpg"


def ground_truth_file(folder: str | os.PathLike = "data/chexlocalize",
                      split: str = "valid") -> Path:
    """The ground-truth segmentation JSON of ``split`` ("valid" or "test") in ``folder``."""
    if split not in GROUND_TRUTH_FILES:
        raise ParameterError(f"split {split!r}: expected one of {', '.join(GROUND_TRUTH_FILES)}")
    path = Path(folder) / GROUND_TRUTH_FILES[split]
    if not path.is_file():
        raise MissingFileError(
            f"{path} does not exist: download CheXlocalize from Stanford AIMI and put "
            f"CheXlocalize/{GROUND_TRUTH_FILES[split]} into {folder}")
    return path


def _chexlib_names(per_cxr: Mapping[str, Any], where: str) -> dict[str, Any]:
    """CheXlocalize-named entries of one CXR renamed to chexlib, all 10 required."""
    unknown = sorted(set(per_cxr) - set(CHEXLOCALIZE_OBSERVATIONS))
    missing = [o for o in CHEXLOCALIZE_OBSERVATIONS if o not in per_cxr]
    if unknown or missing:
        raise MaskFormatError(
            f"{where}: observations {unknown or ''} unknown, {missing or ''} missing; expected "
            f"exactly CheXlocalize's 10: {', '.join(CHEXLOCALIZE_OBSERVATIONS)}")
    return {o: per_cxr[TO_CHEXLOCALIZE[o]] for o in LOCALIZED_OBSERVATIONS}


def _check_cxr_id(cxr_id: str, where: str) -> None:
    if _CXR_ID.match(cxr_id) is None:
        raise MaskFormatError(f"{where}: {cxr_id!r} is not a cxr_id; expected {_ID_FORM}")


def read_segmentations(path: str | os.PathLike) -> dict[str, dict[str, dict[str, Any]]]:
    """Read a CheXlocalize segmentation JSON (``gt_segmentations_{val,test}.json``).

    The file is ``{cxr_id: {observation: COCO RLE}}``, CheXlocalize's 10 names, each CXR in its
    full-resolution frame ``size = [h, w]``. Each RLE is decoded once to validate it and is
    returned as it is: cxr_id -> chexlib name (:data:`LOCALIZED_OBSERVATIONS`) -> RLE.

    Raises
    ------
    MissingFileError
        The file does not exist.
    MaskFormatError
        Not JSON, a key that is no cxr_id, other observations than CheXlocalize's 10, an
        undecodable RLE, or sizes differing within a CXR; names the file, cxr_id, observation.
    """
    out = {}
    for cxr_id, per_cxr in read_chexlocalize(path).items():
        where = f"{path}, cxr_id {cxr_id!r}"
        _check_cxr_id(cxr_id, str(path))
        out[cxr_id] = _chexlib_names(per_cxr, where)
        sizes = {tuple(rle["size"]) for rle in per_cxr.values()}
        if len(sizes) > 1:
            raise MaskFormatError(f"{where}: masks of different sizes {sorted(sizes)}; expected "
                                  "one full-resolution frame [h, w] per CXR")
    return out


def read_annotations(path: str | os.PathLike) -> dict[str, dict[str, dict[str, Any]]]:
    """Read CheXlocalize's raw polygon annotations (``gt_annotations_{val,test}.json``).

    The file is ``{cxr_id: {"img_size": [h, w], observation: [[[x, y], ...], ...]}}``; the
    polygons are filled, outline included, with PIL as their ``annotation_to_segmentation.py``
    does; an observation not listed is empty. Returns RLEs as :func:`read_segmentations`.
    """
    from PIL import Image, ImageDraw

    doc = _read_json(path)
    out = {}
    for cxr_id, entry in doc.items():
        where = f"{path}, cxr_id {cxr_id!r}"
        _check_cxr_id(cxr_id, str(path))
        if not isinstance(entry, dict):
            raise MaskFormatError(f"{where}: expected an object with 'img_size' and polygons")
        height, width = _size(entry.get("img_size"), f"{where}, 'img_size'", MaskFormatError)
        unknown = sorted(set(entry) - {"img_size", *CHEXLOCALIZE_OBSERVATIONS})
        if unknown:
            raise MaskFormatError(f"{where}: unknown observations {unknown}; expected 'img_size' "
                                  f"and CheXlocalize's {', '.join(CHEXLOCALIZE_OBSERVATIONS)}")
        out[cxr_id] = {}
        for name in LOCALIZED_OBSERVATIONS:
            theirs = TO_CHEXLOCALIZE[name]
            canvas = Image.new("1", (width, height))
            for polygon in _polygons(entry.get(theirs, []), f"{where}, observation {theirs!r}"):
                ImageDraw.Draw(canvas).polygon(polygon, outline=1, fill=1)
            out[cxr_id][name] = rle_encode(np.array(canvas, dtype=bool))
    return out


def _read_json(path: str | os.PathLike) -> dict[str, Any]:
    if not Path(path).is_file():
        raise MissingFileError(f"annotation file {path} does not exist")
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MaskFormatError(f"{path}: not a valid JSON file ({err})") from err
    if not isinstance(doc, dict):
        raise MaskFormatError(f"{path}: expected a JSON object cxr_id -> annotations")
    return doc


def _polygons(shapes: Any, where: str) -> list[list[tuple[float, float]]]:
    try:
        return [[(float(x), float(y)) for x, y in polygon] for polygon in shapes]
    except (TypeError, ValueError) as err:
        raise MaskFormatError(f"{where}: expected polygons [[[x, y], ...], ...] ({err})") from err


def _size(value: Any, where: str, error: type[Exception] = ParameterError) -> tuple[int, int]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                       for v in value)):
        raise error(f"{where} is {value!r}; expected [height, width], two integers > 0")
    return int(value[0]), int(value[1])


def upsample(heatmap: Any, image_size: tuple[int, int]) -> torch.Tensor:
    """The map bilinearly resized to the original frame ``(h, w)``, float32 [h, w].

    As their ``F.interpolate(map, size=(h, w), mode="bilinear", align_corners=False)``; a
    chexlib map of the square model input covers the whole image (chexlib resizes without
    cropping), so this is the inverse of its input resize.
    """
    height, width = _size(list(image_size), "image_size")
    if torch.is_tensor(heatmap):
        heatmap = heatmap.detach().cpu()
    values = torch.as_tensor(np.asarray(heatmap, dtype=np.float32))
    values = values.squeeze() if values.ndim > 2 else values
    finite = bool(torch.isfinite(values).all())
    if values.ndim != 2 or values.numel() == 0 or not finite:
        raise ParameterError(f"heatmap: expected a finite, non-empty 2-D map [h, w]; got shape "
                             f"{tuple(values.shape)}, finite: {finite}")
    resized = F.interpolate(values[None, None], size=(height, width), mode="bilinear",
                            align_corners=False)
    return resized[0, 0]


def heatmap_to_segmentation(heatmap: Any, image_size: tuple[int, int],
                            threshold: float | None = None, probability: float | None = None,
                            prob_cutoff: float = 0.0, smoothing_k: int = 0) -> np.ndarray:
    """CheXlocalize's binary segmentation of one map, bool [h, w] in the original frame.

    Parameters
    ----------
    heatmap : array or Tensor [h', w'] (or [1, 1, h', w'])
        E.g. chexlib's map of the square model input.
    image_size : (h, w)
        The radiograph's full resolution (the ground truth's RLE ``size``).
    threshold : float, optional
        None: Otsu on the 8-bit map (their default); else the normalised map ``> threshold``
        in float32 (their ``--threshold_path``).
    probability, prob_cutoff : float
        ``probability < prob_cutoff``: an empty segmentation (``--probability_threshold_path``).
    smoothing_k : int
        > 0: their box-filter smoothing before Otsu (``--if_smoothing True --k``).

    Returns
    -------
    ndarray bool [h, w]
        Empty for a constant map (their 0 / 0 -> NaN -> uint8 0 gives the same).
    """
    resized = upsample(heatmap, image_size)
    empty = np.zeros(tuple(resized.shape), dtype=bool)
    if probability is not None and probability < prob_cutoff:
        return empty
    shifted = resized - resized.min()
    if float(shifted.max()) == 0.0:
        return empty
    normalised = shifted.div(shifted.max()).numpy()
    if threshold is not None:
        return normalised > np.float32(threshold)
    return _otsu_filled(np.uint8(255 * normalised), int(smoothing_k))


def _otsu_filled(levels: np.ndarray, smoothing_k: int) -> np.ndarray:
    """Otsu-threshold 8-bit levels, fill the contours (their ``cam_to_segmentation``, l. 57-83)."""
    try:
        import cv2
    except ImportError as err:
        raise ImportError("the CheXlocalize protocol uses OpenCV's Otsu threshold and contours: "
                          "pip install opencv-python-headless") from err
    from PIL import Image, ImageDraw

    if smoothing_k > 0:
        coloured = cv2.applyColorMap(levels, cv2.COLORMAP_JET)
        levels = 255 - cv2.boxFilter(cv2.cvtColor(coloured, cv2.COLOR_RGB2GRAY), -1,
                                     (smoothing_k, smoothing_k))
    binary = cv2.threshold(levels, 0, int(levels.max()), cv2.THRESH_OTSU)[1]
    found = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    contours = found[0] if len(found) == 2 else found[1]
    canvas = Image.new("1", (levels.shape[1], levels.shape[0]))
    for contour in contours:
        if len(contour) > 1:  # a lone pixel's contour is one point: dropped, as theirs
            points = [(int(p[0][0]), int(p[0][1])) for p in contour]
            ImageDraw.Draw(canvas).polygon(points, outline=1, fill=1)
    return np.array(canvas, dtype=bool)


def segment_maps(maps: Nested, sizes: Mapping[str, tuple[int, int]],
                 probabilities: Nested | None = None,
                 prob_cutoffs: Mapping[str, float] | None = None,
                 thresholds: Mapping[str, float] | None = None,
                 smoothing_k: int = 0) -> dict[str, dict[str, dict[str, Any]]]:
    """Segmentations of many maps as COCO RLEs (their ``heatmap_to_segmentation.py`` output).

    ``maps``: cxr_id -> chexlib observation -> map; ``sizes``: cxr_id -> (h, w) (for the
    ground truth's CXRs: :func:`image_sizes`); ``probabilities``: cxr_id -> observation -> p;
    ``prob_cutoffs`` / ``thresholds``: per observation. Observations outside the 10 are skipped.
    Each segmentation is encoded at once, so the full-resolution masks are never all held.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for cxr_id, per_cxr in maps.items():
        if cxr_id not in sizes:
            raise ParameterError(f"sizes: no (h, w) for cxr_id {cxr_id!r}")
        for name, heatmap in per_cxr.items():
            if name not in LOCALIZED_OBSERVATIONS:
                continue
            p = None if probabilities is None else probabilities.get(cxr_id, {}).get(name)
            if probabilities is not None and p is None:
                raise ParameterError(f"probabilities: none for {cxr_id!r}, {name!r}")
            seg = heatmap_to_segmentation(
                heatmap, sizes[cxr_id], threshold=(thresholds or {}).get(name),
                probability=p, prob_cutoff=(prob_cutoffs or {}).get(name, 0.0),
                smoothing_k=smoothing_k)
            out.setdefault(cxr_id, {})[name] = rle_encode(seg)
    return out


def image_sizes(ground_truth: Nested) -> dict[str, tuple[int, int]]:
    """cxr_id -> (h, w) of each CXR of a ground truth (:func:`read_segmentations`)."""
    return {cxr: tuple(next(iter(per.values()))["size"]) for cxr, per in ground_truth.items()}


def _as_mask(value: Any) -> np.ndarray:
    return rle_decode(value) if isinstance(value, dict) else np.asarray(value, dtype=bool)


def _truth(ground_truth: Nested, cxr_id: str, name: str) -> np.ndarray:
    if name not in ground_truth[cxr_id]:
        raise ParameterError(f"ground_truth[{cxr_id!r}] has no {name!r}; expected all 10 "
                             "observations, as read_segmentations returns them")
    return _as_mask(ground_truth[cxr_id][name])


def _table(rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(LOCALIZED_OBSERVATIONS))
    return table.sort_index().astype(float).rename_axis("cxr_id")


def hit_rates(maps: Nested, ground_truth: Nested) -> pd.DataFrame:
    """Hit (1) / miss (0) of every map, as their ``eval.py`` ``get_hitrates``.

    The first maximum (row-major ``np.argmax``; (0, 0) for a constant map) of the map upsampled
    to the ground truth's frame is a hit when inside the mask; an empty ground truth is NaN.
    Maps of CXRs without ground truth or of other observations are skipped, as theirs; a pair
    without a map is NaN. Returns a DataFrame: index ``cxr_id`` (ground-truth CXRs with a map,
    sorted), columns :data:`LOCALIZED_OBSERVATIONS`.
    """
    rows: dict[str, dict[str, float]] = {}
    for cxr_id, per_cxr in maps.items():
        if cxr_id not in ground_truth:
            continue
        for name, heatmap in per_cxr.items():
            if name in LOCALIZED_OBSERVATIONS:
                truth = _truth(ground_truth, cxr_id, name)
                resized = upsample(heatmap, truth.shape).numpy()
                peak = np.unravel_index(np.argmax(resized), resized.shape)
                hit = 1.0 if truth[peak] else (np.nan if not truth.any() else 0.0)
                rows.setdefault(cxr_id, {})[name] = hit
    return _table(rows)


def _iou(pred: np.ndarray, truth: np.ndarray, true_pos_only: bool) -> float:
    """Their ``calculate_iou``: NaN for an empty union, or either empty on the TP slice."""
    n_pred, n_truth = int(pred.sum()), int(truth.sum())
    if n_pred + n_truth == 0 or (true_pos_only and (n_pred == 0 or n_truth == 0)):
        return np.nan
    overlap = int(np.logical_and(pred, truth).sum())
    return overlap / (n_pred + n_truth - overlap)


def ious(segmentations: Nested, ground_truth: Nested, true_pos_only: bool = True) -> pd.DataFrame:
    """IoU of every CXR and observation, as their ``eval.py`` ``get_ious``.

    Parameters
    ----------
    segmentations : dict
        cxr_id -> chexlib name -> RLE or bool mask [h, w] (:func:`segment_maps`); a CXR or
        observation not given has an empty segmentation.
    ground_truth : dict
        :func:`read_segmentations`.
    true_pos_only : bool
        True (their default): NaN unless both masks are non-empty. False: NaN only when both
        are empty, and CXRs with a segmentation but no ground truth are added.

    Returns
    -------
    DataFrame
        Index ``cxr_id`` (sorted), columns :data:`LOCALIZED_OBSERVATIONS`, IoU or NaN.
    """
    rows: dict[str, dict[str, float]] = {}
    extra = [] if true_pos_only else [c for c in segmentations if c not in ground_truth]
    for cxr_id in [*ground_truth, *extra]:
        rows[cxr_id] = {}
        for name in LOCALIZED_OBSERVATIONS:
            given = segmentations.get(cxr_id, {}).get(name)
            if given is None and cxr_id not in ground_truth:
                rows[cxr_id][name] = np.nan  # both empty
                continue
            pred = None if given is None else _as_mask(given)
            truth = (_truth(ground_truth, cxr_id, name) if cxr_id in ground_truth
                     else np.zeros(pred.shape, dtype=bool))
            pred = np.zeros(truth.shape, dtype=bool) if pred is None else pred
            if pred.shape != truth.shape:
                raise ParameterError(
                    f"segmentations[{cxr_id!r}][{name!r}]: shape {pred.shape}; expected the "
                    f"ground truth's full-resolution frame {truth.shape}")
            rows[cxr_id][name] = _iou(pred, truth, true_pos_only)
    return _table(rows)


def summarise(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
              decimals: int | None = 3) -> pd.DataFrame:
    """Bootstrap CIs of each column's mean, as their ``bootstrap_metric`` and ``compute_cis``.

    Each replicate draws ``len(table)`` CXRs (rows) with replacement, the same for every
    observation (``np.random.seed(seed)``, then ``np.random.choice`` per replicate), and takes
    the mean of the drawn non-NaN entries. Sorted, the replicates give ``lower`` at index
    ``int(alpha / 2 * n_boot) - 1`` and ``upper`` at ``int((1 - alpha / 2) * n_boot) - 1``;
    ``mean`` is their mean (their summary's "mean"); these three are rounded to ``decimals``.
    Also ``estimate`` (the mean of all non-NaN entries) and ``n`` (their count), per observation.
    A replicate that draws no scored CXR is NaN and sorts last, as theirs: with few scored CXRs
    ``upper`` can be NaN.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) \
            or n_boot < 2 / alpha:
        raise ParameterError(f"n_boot={n_boot!r}: expected an integer >= 2 / alpha = "
                             f"{2 / alpha:g} (else their lower index is -1, the largest value)")
    if len(table) == 0:
        raise ParameterError("table: no CXRs to bootstrap (no ground-truth CXR was scored)")
    values = table.to_numpy(dtype=float)
    rng = np.random.RandomState(seed)
    draws = np.stack([rng.choice(len(values), size=len(values), replace=True)
                      for _ in range(n_boot)])
    sampled = values[draws]  # [n_boot, n_cxr, n_obs]
    counts = np.isfinite(sampled).sum(axis=1)
    replicates = pd.DataFrame(np.nansum(sampled, axis=1) / np.where(counts > 0, counts, np.nan))
    ordered = np.sort(replicates.to_numpy(), axis=0)  # NaN last, as pandas' sort_values
    low, high = int(alpha / 2 * n_boot) - 1, int((1 - alpha / 2) * n_boot) - 1
    n = np.isfinite(values).sum(axis=0)
    summary = pd.DataFrame(
        {"lower": ordered[low], "mean": replicates.mean().to_numpy(), "upper": ordered[high],
         "estimate": np.nansum(values, axis=0) / np.where(n > 0, n, np.nan), "n": n},
        index=pd.Index(table.columns, name="observation"))
    if decimals is not None:
        summary[["lower", "mean", "upper"]] = summary[["lower", "mean", "upper"]].round(decimals)
    return summary
