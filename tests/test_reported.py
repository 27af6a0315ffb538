"""chexlib.reported and chexlib.plots.galleries on a tiny phantom with made-up predictions.

References: the phantom's own mask files decoded with pycocotools, the probabilities written,
and outcomes recomputed here from labels, probabilities and thresholds.
"""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as coco_mask

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
    np.testing.assert_allclose(reported.probs, probs, atol=1e-6)
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
