"""chexlib.heatmap_quality.chexlocalize on small files written exactly in CheXlocalize's format.

Ground truth is written as their files are (pycocotools RLE with a str ``counts``, one entry per
CXR for all 10 observations, CheXlocalize's names, non-square full-resolution frames), and every
number is checked against a hand computation or an independent one (skimage's Otsu, scipy's hole
filling, a pandas re-statement of their bootstrap loop).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
# Installed with the project (pycocotools: the test extra; cv2, which chexlocalize needs, a
# dependency): a missing one is an install error, never a reason to skip these tests.
import pycocotools.mask as coco

from chexlib.errors import MaskFormatError, MissingFileError, ParameterError
from chexlib.heatmap_quality import chexlocalize as cl
from chexlib.masks import chexlocalize_image_id, rle_decode
from chexlib.observations import OBSERVATIONS

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 232, 283  # CheXlocalize's 2320 x 2828 frame, a tenth: non-square, h < w
A = "patient64622_study1_view1_frontal"
B = "patient64623_study1_view1_frontal"
C = "patient64624_study2_view2_lateral"


def coco_rle(mask: np.ndarray) -> dict:
    """An RLE as their ``utils.encode_segmentation`` stores it (pycocotools, str counts)."""
    rle = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def gt_of(masks: dict, shape=(H, W)) -> dict:
    """A ground truth as read_segmentations returns it: chexlib names, all 10 observations."""
    return {cxr: {o: coco_rle(per.get(o, np.zeros(shape, dtype=bool)))
                  for o in cl.LOCALIZED_OBSERVATIONS} for cxr, per in masks.items()}


def box(y0: int, y1: int, x0: int, x1: int, shape=(H, W)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def write_gt(path, masks: dict, shape=(H, W)) -> None:
    """``masks``: cxr_id -> CheXlocalize name -> bool mask; the other observations empty."""
    doc = {cxr: {name: coco_rle(per.get(name, np.zeros(shape, dtype=bool)))
                 for name in cl.CHEXLOCALIZE_OBSERVATIONS} for cxr, per in masks.items()}
    path.write_text(json.dumps(doc))


@pytest.fixture
def gt_file(tmp_path):
    path = tmp_path / "gt_segmentations_val.json"
    write_gt(path, {A: {"Cardiomegaly": box(100, 180, 90, 200),
                        "Airspace Opacity": box(20, 60, 20, 80)},
                    B: {"Support Devices": box(0, 30, 0, 40)}})
    return path


# ------------------------------------------------------------------------------------------
# names and readers
# ------------------------------------------------------------------------------------------


def test_observation_names_map_to_chexlib():
    assert cl.TO_CHEXLIB["Airspace Opacity"] == "Lung Opacity"
    assert len(cl.CHEXLOCALIZE_OBSERVATIONS) == len(cl.LOCALIZED_OBSERVATIONS) == 10
    assert set(cl.LOCALIZED_OBSERVATIONS) <= set(OBSERVATIONS)
    in_order = [o for o in OBSERVATIONS if o in cl.LOCALIZED_OBSERVATIONS]
    assert list(cl.LOCALIZED_OBSERVATIONS) == in_order
    assert set(OBSERVATIONS) - set(cl.LOCALIZED_OBSERVATIONS) == {
        "No Finding", "Pneumonia", "Pleural Other", "Fracture"}


def test_chexpert_path_and_back():
    path = cl.chexpert_path("patient64622_study1_view1_frontal")
    assert path == "CheXpert-v1.0/valid/patient64622/study1/view1_frontal.jpg"
    small = cl.chexpert_path(C, "valid", root="CheXpert-v1.0-small")
    assert small == "CheXpert-v1.0-small/valid/patient64624/study2/view2_lateral.jpg"
    assert chexlocalize_image_id(path) == A and chexlocalize_image_id(small) == C
    assert cl.chexpert_path(A, "test").startswith("CheXpert-v1.0/test/patient64622/")
    with pytest.raises(ParameterError, match="patient64622_frontal"):
        cl.chexpert_path("patient64622_frontal")


def test_read_segmentations_full_resolution(tmp_path):
    path = tmp_path / "gt_segmentations_val.json"
    heart = box(1000, 1800, 900, 2000, shape=(2320, 2828))
    write_gt(path, {A: {"Cardiomegaly": heart}}, shape=(2320, 2828))
    gt = cl.read_segmentations(path)
    assert list(gt) == [A] and list(gt[A]) == list(cl.LOCALIZED_OBSERVATIONS)
    assert gt[A]["Cardiomegaly"]["size"] == [2320, 2828]
    np.testing.assert_array_equal(rle_decode(gt[A]["Cardiomegaly"]), heart)
    assert not rle_decode(gt[A]["Lung Opacity"]).any()
    assert cl.image_sizes(gt) == {A: (2320, 2828)}
    assert cl.ground_truth_file(tmp_path, "valid") == path


def test_ground_truth_file_missing(tmp_path):
    with pytest.raises(MissingFileError, match="gt_segmentations_test.json"):
        cl.ground_truth_file(tmp_path, "test")
    with pytest.raises(ParameterError, match="'val'"):
        cl.ground_truth_file(tmp_path, "val")


def _entries(shape=(H, W)):
    return {name: coco_rle(np.zeros(shape, dtype=bool)) for name in cl.CHEXLOCALIZE_OBSERVATIONS}


@pytest.mark.parametrize("edit, message", [
    (lambda d: d[A].pop("Edema"), r"\['Edema'\] missing"),
    (lambda d: d[A].update({"Lung Opacity": d[A].pop("Airspace Opacity")}),
     r"\['Lung Opacity'\] unknown"),
    (lambda d: d.update({"patient64622.jpg": d.pop(A)}), "is not a cxr_id; expected"),
    (lambda d: d[A].update({"Edema": coco_rle(np.zeros((H, W + 1), bool))}), "different sizes"),
    (lambda d: d[A].update({"Edema": {"size": [H, W], "counts": "PVWX6"}}), "'Edema'.*add up"),
])
def test_read_segmentations_malformed(tmp_path, edit, message):
    doc = {A: _entries()}
    edit(doc)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(MaskFormatError, match=message) as err:
        cl.read_segmentations(path)
    assert str(path) in str(err.value)
    assert "patient64622" in str(err.value)


def test_read_segmentations_missing_file(tmp_path):
    with pytest.raises(MissingFileError):
        cl.read_segmentations(tmp_path / "nope.json")


def test_read_annotations_fills_polygons(tmp_path):
    # Their raw format: img_size [h, w], polygons of [x, y] points; unlisted observations empty.
    doc = {A: {"img_size": [H, W],
               "Airspace Opacity": [[[20.0, 10.0], [80.0, 10.0], [80.0, 50.0], [20.0, 50.0]]],
               "Pleural Effusion": [[[200, 150], [250, 150], [250, 200]],
                                    [[10, 200], [30, 200], [30, 220], [10, 220]]]}}
    path = tmp_path / "gt_annotations_val.json"
    path.write_text(json.dumps(doc))
    gt = cl.read_annotations(path)
    opacity = rle_decode(gt[A]["Lung Opacity"])
    np.testing.assert_array_equal(opacity, box(10, 51, 20, 81))  # outline included: inclusive
    effusion = rle_decode(gt[A]["Pleural Effusion"])
    assert effusion[200:221, 10:31].all() and effusion[155, 245] and not effusion[190, 205]
    assert not rle_decode(gt[A]["Edema"]).any() and gt[A]["Edema"]["size"] == [H, W]


@pytest.mark.parametrize("entry, message", [
    ({"img_size": [H]}, "'img_size' is"),
    ({"img_size": [H, W], "Fracture": []}, "unknown observations \\['Fracture'\\]"),
    ({"img_size": [H, W], "Edema": [[[1, 2, 3]]]}, "observation 'Edema'.*polygons"),
])
def test_read_annotations_malformed(tmp_path, entry, message):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({A: entry}))
    with pytest.raises(MaskFormatError, match=message) as err:
        cl.read_annotations(path)
    assert str(path) in str(err.value) and A in str(err.value)


# ------------------------------------------------------------------------------------------
# heatmap -> segmentation
# ------------------------------------------------------------------------------------------


def test_upsample_is_torch_bilinear_to_the_full_frame():
    coarse = np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(coarse)[None, None], size=(H, W),
                             mode="bilinear", align_corners=False)[0, 0]
    torch.testing.assert_close(cl.upsample(coarse, (H, W)), expected, rtol=0, atol=0)
    assert cl.upsample(torch.from_numpy(coarse)[None, None], (H, W)).shape == (H, W)


def test_two_level_map_segments_its_box_and_gives_a_known_iou():
    segmentation = cl.heatmap_to_segmentation(box(50, 150, 60, 200).astype(np.float32) * 3 - 1,
                                              (H, W))
    np.testing.assert_array_equal(segmentation, box(50, 150, 60, 200))
    truth = box(100, 200, 60, 200)  # half of it overlaps: 50 x 140 of a 150 x 140 union
    table = cl.ious({A: {"Edema": segmentation}}, gt_of({A: {"Edema": truth}}))
    assert table.loc[A, "Edema"] == pytest.approx(50 * 140 / (150 * 140))


def test_otsu_matches_skimage_with_holes_filled():
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(1)
    for _ in range(10):
        coarse = rng.normal(size=(7, 7)).astype(np.float32)
        resized = cl.upsample(coarse, (H, W))
        shifted = resized - resized.min()
        levels = np.uint8(255 * (shifted / shifted.max()).numpy())
        # cv2's THRESH_OTSU keeps levels > T and skimage's threshold_otsu keeps image > t: the same
        # convention, and the same t on these maps (no off-by-one between them).
        expected = ndimage.binary_fill_holes(levels > threshold_otsu(levels))
        np.testing.assert_array_equal(cl.heatmap_to_segmentation(coarse, (H, W)), expected)


def test_contours_are_filled_and_lone_pixels_dropped():
    ring = box(40, 120, 40, 140).astype(np.float32)
    ring[60:100, 60:120] = 0  # a hole in the hot region: their filled contour covers it
    np.testing.assert_array_equal(cl.heatmap_to_segmentation(ring, (H, W)), box(40, 120, 40, 140))
    lone = np.zeros((H, W), np.float32)
    lone[100, 100] = 1  # one pixel above Otsu: its contour is one point, which they skip
    assert not cl.heatmap_to_segmentation(lone, (H, W)).any()


def test_blank_map_gives_an_empty_segmentation_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in (0.0, 3.5, -1.0):
            blank = np.full((10, 10), value, np.float32)
            assert not cl.heatmap_to_segmentation(blank, (H, W)).any()
            assert not cl.heatmap_to_segmentation(blank, (H, W), threshold=0.0).any()


def test_probability_cutoff_empties_below_and_keeps_at():
    hot = box(50, 150, 60, 200).astype(np.float32)
    assert not cl.heatmap_to_segmentation(hot, (H, W), probability=0.29, prob_cutoff=0.3).any()
    kept = cl.heatmap_to_segmentation(hot, (H, W), probability=0.3, prob_cutoff=0.3)
    assert kept.sum() == 100 * 140


def test_fixed_threshold_on_the_normalised_map():
    ramp = np.tile(np.linspace(-2, 2, W, dtype=np.float32), (H, 1))
    segmentation = cl.heatmap_to_segmentation(ramp, (H, W), threshold=0.75)
    normalised = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    np.testing.assert_array_equal(segmentation, normalised > np.float32(0.75))


@pytest.mark.parametrize("heatmap, size", [
    (np.full((4, 4), np.nan), (H, W)), (np.zeros((2, 3, 4)), (H, W)), (np.zeros((4, 4)), (H, 0)),
])
def test_malformed_maps_and_sizes(heatmap, size):
    with pytest.raises(ParameterError):
        cl.heatmap_to_segmentation(heatmap, size)


def test_segment_maps_with_cutoffs_and_missing_sizes():
    hot = box(50, 150, 60, 200).astype(np.float32)
    maps = {A: {"Edema": hot, "Cardiomegaly": hot, "Fracture": hot}}
    probs = {A: {"Edema": 0.1, "Cardiomegaly": 0.9, "Fracture": 0.9}}
    cutoffs = {"Edema": 0.5, "Cardiomegaly": 0.5}
    segs = cl.segment_maps(maps, {A: (H, W)}, probs, prob_cutoffs=cutoffs)
    assert set(segs[A]) == {"Edema", "Cardiomegaly"}  # Fracture is not one of the 10
    assert not rle_decode(segs[A]["Edema"]).any()
    np.testing.assert_array_equal(rle_decode(segs[A]["Cardiomegaly"]), box(50, 150, 60, 200))
    with pytest.raises(ParameterError, match=B):
        cl.segment_maps({B: {"Edema": hot}}, {A: (H, W)})


# ------------------------------------------------------------------------------------------
# hit rate and IoU
# ------------------------------------------------------------------------------------------


def test_hit_rates_by_hand(gt_file):
    gt = cl.read_segmentations(gt_file)
    coarse = np.zeros((4, 4), np.float32)
    coarse[2, 2] = 1  # its maximum upsampled: near (2.5 * H / 4, 2.5 * W / 4) = (145, 177)
    blank = np.zeros((4, 4), np.float32)  # points at pixel (0, 0)
    maps = {A: {"Cardiomegaly": coarse, "Lung Opacity": coarse, "Edema": coarse},
            B: {"Support Devices": blank, "Cardiomegaly": blank},
            C: {"Cardiomegaly": coarse}}  # no ground truth: skipped
    table = cl.hit_rates(maps, gt)
    assert list(table.index) == [A, B] and list(table.columns) == list(cl.LOCALIZED_OBSERVATIONS)
    assert table.loc[A, "Cardiomegaly"] == 1.0  # inside box(100, 180, 90, 200)
    assert table.loc[A, "Lung Opacity"] == 0.0  # "Airspace Opacity" box(20, 60, 20, 80)
    assert np.isnan(table.loc[A, "Edema"])  # empty ground truth
    assert table.loc[B, "Support Devices"] == 1.0  # their argmax of a blank map: (0, 0), inside
    assert np.isnan(table.loc[B, "Cardiomegaly"]) and np.isnan(table.loc[A, "Atelectasis"])


def test_hit_rate_at_full_resolution(tmp_path):
    path = tmp_path / "gt.json"
    write_gt(path, {A: {"Pneumothorax": box(0, 600, 2000, 2828, shape=(2320, 2828))}},
             shape=(2320, 2828))
    gt = cl.read_segmentations(path)
    coarse = np.zeros((10, 10), np.float32)
    coarse[1, 8] = 1.0  # upper right, in the model's square frame
    assert cl.hit_rates({A: {"Pneumothorax": coarse}}, gt).loc[A, "Pneumothorax"] == 1.0
    segmentation = cl.heatmap_to_segmentation(coarse, (2320, 2828))
    ys, xs = np.nonzero(segmentation)
    assert segmentation.shape == (2320, 2828) and ys.max() < 600 and xs.min() > 2000


def test_ious_true_positive_slice_and_full_dataset(gt_file):
    gt = cl.read_segmentations(gt_file)
    segs = {A: {"Cardiomegaly": coco_rle(box(100, 180, 90, 145)),  # half the heart box
                "Edema": coco_rle(box(0, 10, 0, 10))},  # no Edema in truth
            C: {"Edema": coco_rle(box(0, 10, 0, 10)), "Atelectasis": coco_rle(box(0, 0, 0, 0))}}
    tp = cl.ious(segs, gt)  # B has no segmentation at all: empty
    assert list(tp.index) == [A, B]
    assert tp.loc[A, "Cardiomegaly"] == pytest.approx(0.5)
    assert np.isnan(tp.loc[A, "Edema"]) and np.isnan(tp.loc[A, "Lung Opacity"])
    assert np.isnan(tp.loc[B, "Support Devices"])  # truth, no segmentation: not on the TP slice
    full = cl.ious(segs, gt, true_pos_only=False)
    assert list(full.index) == [A, B, C]
    assert full.loc[A, "Cardiomegaly"] == pytest.approx(0.5)
    assert full.loc[A, "Edema"] == 0.0 and full.loc[A, "Lung Opacity"] == 0.0
    assert full.loc[B, "Support Devices"] == 0.0 and np.isnan(full.loc[B, "Edema"])
    assert full.loc[C, "Edema"] == 0.0  # segmentation without ground truth
    assert np.isnan(full.loc[C, "Atelectasis"]) and np.isnan(full.loc[C, "Cardiomegaly"])


def test_ious_refuse_another_frame_and_a_partial_ground_truth(gt_file):
    gt = cl.read_segmentations(gt_file)
    with pytest.raises(ParameterError, match=r"patient64622.*'Cardiomegaly'.*\(232, 283\)"):
        cl.ious({A: {"Cardiomegaly": np.zeros((320, 320), bool)}}, gt)
    partial = {A: {"Edema": gt[A]["Edema"]}}
    with pytest.raises(ParameterError, match="has no 'Enlarged Cardiomediastinum'"):
        cl.ious({}, partial)
    with pytest.raises(ParameterError, match="has no 'Cardiomegaly'"):
        cl.hit_rates({A: {"Cardiomegaly": np.ones((4, 4))}}, partial)


def test_segmentations_round_trip_through_their_json(tmp_path, gt_file):
    gt = cl.read_segmentations(gt_file)
    rng = np.random.default_rng(3)
    maps = {cxr: {o: rng.normal(size=(6, 6)).astype(np.float32)
                  for o in cl.LOCALIZED_OBSERVATIONS} for cxr in gt}
    segs = cl.segment_maps(maps, cl.image_sizes(gt))
    theirs = {c: {cl.TO_CHEXLOCALIZE[o]: r for o, r in per.items()} for c, per in segs.items()}
    pred = tmp_path / "saliency_segmentations.json"  # written with CheXlocalize's names
    pred.write_text(json.dumps(theirs))
    for cxr, per in json.loads(pred.read_text()).items():
        for name, rle in per.items():
            mask = cl.heatmap_to_segmentation(maps[cxr][cl.TO_CHEXLIB[name]], (H, W))
            assert rle == coco_rle(mask)  # byte-identical to pycocotools
    pd.testing.assert_frame_equal(cl.ious(cl.read_segmentations(pred), gt), cl.ious(segs, gt))


# ------------------------------------------------------------------------------------------
# bootstrap
# ------------------------------------------------------------------------------------------


def their_bootstrap(table: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Their eval.py's loop restated with pandas (global seed, iloc, .mean, sort_values)."""
    np.random.seed(seed)
    records = []
    for _ in range(n_boot):
        sample = table.iloc[np.random.choice(len(table), size=len(table), replace=True)]
        records.append({c: sample[c].mean() for c in table.columns})
    reps, rows = pd.DataFrame.from_records(records), {}
    for c in table.columns:
        ordered = reps[c].sort_values()
        rows[c] = {"lower": ordered.iloc[int(0.05 / 2 * n_boot) - 1].round(3),
                   "mean": round(ordered.mean(), 3),
                   "upper": ordered.iloc[int((1 - 0.05 / 2) * n_boot) - 1].round(3)}
    return pd.DataFrame.from_dict(rows, orient="index")


def test_summarise_matches_their_bootstrap():
    rng = np.random.default_rng(4)
    values = rng.random((37, 10))
    values[rng.random((37, 10)) < 0.4] = np.nan
    values[:, 9] = np.nan  # an observation never scored
    values[:, 8] = (values[:, 8] > 0.5).astype(float)  # hits and misses
    table = pd.DataFrame(values, columns=list(cl.LOCALIZED_OBSERVATIONS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ours = cl.summarise(table, n_boot=200, seed=7)
        pd.testing.assert_frame_equal(ours[["lower", "mean", "upper"]],
                                      their_bootstrap(table, 200, 7), check_names=False)
    np.testing.assert_array_equal(ours["n"], np.isfinite(values).sum(axis=0))
    np.testing.assert_allclose(ours["estimate"][:9], np.nanmean(values[:, :9], axis=0))
    assert np.isnan(ours.loc["Support Devices", "mean"])


def test_summarise_constant_hits_and_reproducibility():
    table = pd.DataFrame({"Cardiomegaly": [1.0, 1.0, np.nan, 1.0]})
    summary = cl.summarise(table)
    assert summary.loc["Cardiomegaly", ["lower", "mean", "upper"]].tolist() == [1.0, 1.0, 1.0]
    assert summary.loc["Cardiomegaly", "n"] == 3
    mixed = pd.DataFrame({"Edema": np.arange(20) % 3 == 0}).astype(float)
    pd.testing.assert_frame_equal(cl.summarise(mixed, seed=1), cl.summarise(mixed, seed=1))
    assert not cl.summarise(mixed, seed=1).equals(cl.summarise(mixed, seed=2, decimals=None))


@pytest.mark.parametrize("n_boot", [39, 10.5, True])
def test_summarise_refuses_too_few_replicates(n_boot):
    with pytest.raises(ParameterError, match="n_boot"):
        cl.summarise(pd.DataFrame({"Edema": [1.0]}), n_boot=n_boot)


def test_summarise_refuses_an_empty_table():
    with pytest.raises(ParameterError, match="no CXRs"):
        cl.summarise(pd.DataFrame(columns=["Edema"], dtype=float))
