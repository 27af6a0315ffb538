"""chexlib.reported and chexlib.plots.galleries on a tiny phantom with made-up predictions, and
predictions.csv (chexlib.artefacts) read back exactly.

References: the phantom's own mask files decoded with pycocotools, the probabilities written,
outcomes recomputed here from labels, probabilities and thresholds, and sklearn's AUROC.
"""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as coco_mask
from sklearn.metrics import roc_auc_score

from chexlib import artefacts, metrics
from chexlib.errors import LabelFileError
from chexlib.masks import resize_mask
from chexlib.observations import OBSERVATIONS
from chexlib.plots import galleries
from chexlib.reported import ReportedImages
from chexlib.run import RunFolder

matplotlib.use("Agg")
SIZE = 48  # conftest.TINY_SIZE


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def reported(run):
    root, run_dir, _, _ = run
    return ReportedImages(run_dir, root, SIZE)


def test_joins_predictions_outcomes_and_images(run, reported):
    _, _, probs, outcomes = run
    assert len(reported) == 12
    np.testing.assert_array_equal(reported.probs, probs)  # predictions.csv is exact
    assert reported.images([0, 3]).shape == (2, 3, SIZE, SIZE)
    assert reported.grayscale(5).shape == (SIZE, SIZE)
    j = OBSERVATIONS.index("Edema")
    assert [reported.outcome(i, "Edema") for i in range(12)] == list(outcomes[:, j])
    assert list(reported.table(2)["outcome"]) == list(outcomes[2])


def test_pick_and_example_row_follow_the_outcomes(run, reported):
    _, _, probs, outcomes = run
    # The observation with the most true positives, so that every assertion below has cases.
    j = int((outcomes == "TP").sum(axis=0).argmax())
    name = OBSERVATIONS[j]
    tp = np.flatnonzero(outcomes[:, j] == "TP")
    assert len(tp) >= 2
    picked = reported.pick(name, "TP", 3)
    assert picked == [int(r) for r in tp[np.argsort(-probs[tp, j], kind="stable")][:3]]
    assert reported.example_row(name) == picked[0]
    text = reported.title(picked[0], name)
    assert name in text and "threshold 0.50" in text


def test_outlines_are_the_phantoms_masks_in_the_model_frame(run, reported):
    root, _, _, _ = run
    findings = json.loads((root / "masks" / "valid_findings.json").read_text())
    image_id, per_class = next(iter(findings.items()))
    name, rle = next(iter(per_class.items()))
    row = [reported.image_id(i) for i in range(len(reported))].index(image_id)
    expected = resize_mask(coco_mask.decode(rle).astype(bool), (SIZE, SIZE))
    np.testing.assert_array_equal(reported.outline(row, name), expected)
    shortcut = json.loads((root / "masks" / "valid_shortcut.json").read_text())
    for i in range(len(reported)):
        has = reported.image_id(i) in shortcut
        assert (reported.outline(i, "shortcut") is not None) == has
    absent = next(c for c in OBSERVATIONS if c not in per_class)
    assert reported.outline(row, absent) is None


def test_predictions_of_other_images_are_refused_naming_the_line(run, tmp_path):
    root, run_dir, _, _ = run
    source, copy = RunFolder(run_dir), RunFolder(tmp_path)
    for name in ("predictions", "thresholds", "outcomes"):
        getattr(copy, name).write_bytes(getattr(source, name).read_bytes())
    df = pd.read_csv(copy.predictions)
    df.loc[4, "Path"] = "valid/patient99999/study1/view1_frontal.jpg"
    df.to_csv(copy.predictions, index=False)
    with pytest.raises(LabelFileError, match=r"predictions.csv.*line 6.*patient99999.*rerun notebook 03"):
        ReportedImages(tmp_path, root, SIZE)


def test_outcome_gallery_shows_each_picked_case_or_says_none(reported):
    calls = []

    def explain(rows, observation):
        calls.append((list(rows), observation))
        return np.random.default_rng(0).normal(size=(len(rows), SIZE, SIZE))

    name = "Lung Opacity"
    expected = [r for kind in ("TP", "FP", "FN") for r in reported.pick(name, kind, 2)]
    fig, note = galleries.outcome_gallery(reported, name, explain, n=2)
    assert calls == [(expected, name)]
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == len(expected)
    kinds = {kind for kind in ("TP", "FP", "FN") if reported.pick(name, kind, 1)}
    assert all(title.get_title().split(" ·")[0] in kinds for title in titled)
    assert ("no" in note) == (len(kinds) < 3)
    fig, note = galleries.outcome_gallery(reported, name, explain, outcomes=())
    assert fig is None and len(calls) == 1


def test_outcome_gallery_names_the_method_for_people(reported):
    # A registered method is named as the controls name it; any other text stays as it is.
    def explain(rows, observation):
        return np.ones((len(rows), SIZE, SIZE))

    for method, shown in (("alpha2_beta1", "LRP-α2β1"),
                          ("gradcam-features.denseblock3", "Grad-CAM at dense block 3"),
                          ("my own map", "my own map")):
        fig, _ = galleries.outcome_gallery(reported, "Lung Opacity", explain, n=1, method=method)
        assert fig._suptitle.get_text().endswith(f" · {shown}"), fig._suptitle.get_text()


# ------------------------------------------------------------------------------------------------
# predictions.csv: the probabilities read back bit for bit
# ------------------------------------------------------------------------------------------------


def _near_neighbours(dtype, n: int, seed: int) -> np.ndarray:
    """[n, 14] probabilities of ``dtype``: per class a few centres, each with neighbours a few
    units in the last place away, so that they differ only from the 7th significant digit on."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, len(OBSERVATIONS)), dtype=dtype)
    for j in range(len(OBSERVATIONS)):
        centres = rng.uniform(0.05, 0.95, size=4).astype(dtype)
        for i in range(n):
            value = centres[i % 4]
            for _ in range(int(rng.integers(0, 12))):
                value = np.nextafter(value, dtype(1))
            out[i, j] = value
    return out


def _labels(n: int, seed: int) -> np.ndarray:
    y = (np.random.default_rng(seed).uniform(size=(n, len(OBSERVATIONS))) < 0.4).astype(np.float64)
    y[0], y[1] = 1.0, 0.0  # both labels in every class: every AUROC is defined
    return y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predictions_csv_returns_the_probabilities_bit_for_bit(tmp_path, dtype):
    n = 48
    probs = _near_neighbours(dtype, n, seed=1)
    probs[2, :3] = [0.0, 1.0, np.finfo(dtype).tiny]  # the ends and the smallest normal number
    probs[3, :2] = [np.nextafter(dtype(1), dtype(0)), np.nextafter(dtype(0), dtype(1))]
    labels, paths = _labels(n, seed=2), [f"valid/patient{i:05d}/study1/view1_frontal.jpg"
                                         for i in range(n)]
    # What the old 6-digit file merged: distinct probabilities that print alike at 6 digits.
    assert len({f"{v:.6g}" for v in probs[:, 0].tolist()}) < len(np.unique(probs[:, 0]))
    path = artefacts.write_predictions(tmp_path / "predictions.csv", paths, labels, probs)
    read_paths, read_labels, read_probs = artefacts.read_predictions(path)
    assert read_paths == paths
    np.testing.assert_array_equal(read_labels, labels)
    assert read_probs.dtype == np.float64
    assert np.array_equal(read_probs, probs)
    back = read_probs.astype(dtype)  # the written dtype again, exactly
    uint = np.uint32 if dtype == np.float32 else np.uint64
    assert np.array_equal(back.view(uint), probs.view(uint))
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]  # no temporary file left


def test_aurocs_recomputed_from_predictions_csv_equal_the_in_memory_ones(tmp_path):
    """What notebook 03 does: metrics.json from the in-memory float32 probabilities, and
    predictions.csv from the same arrays; anything recomputed from the file must agree."""
    n = 60
    probs, labels = _near_neighbours(np.float32, n, seed=3), _labels(n, seed=4)
    paths = [f"p{i}.jpg" for i in range(n)]
    _, _, read = artefacts.read_predictions(
        artefacts.write_predictions(tmp_path / "predictions.csv", paths, labels, probs))
    rounded = np.array([[float(f"{v:.6g}") for v in row] for row in probs.tolist()])
    changed_by_rounding = 0
    for j, name in enumerate(OBSERVATIONS):
        in_memory = roc_auc_score(labels[:, j], probs[:, j])
        assert roc_auc_score(labels[:, j], read[:, j]) == in_memory, name
        changed_by_rounding += roc_auc_score(labels[:, j], rounded[:, j]) != in_memory
    assert changed_by_rounding > 0  # the old 6-digit file would have failed this test
    # chexlib's own AUROC / AUPRC (what metrics.json holds) agree bit for bit too.
    for ours, theirs in zip(metrics.auroc_auprc(labels, probs), metrics.auroc_auprc(labels, read)):
        assert np.array_equal(ours, theirs)
