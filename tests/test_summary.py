"""chexlib.data.summary and the display helpers: checked on hand-made label tables."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexlib.data import read_radiograph
from chexlib.data.summary import (
    cooccurrence,
    distribution_table,
    pick_examples,
    policy_positive_rates,
)
from chexlib.errors import ImageFileError
from chexlib.masks import load_split_masks, write_chexlocalize
from chexlib.observations import OBSERVATIONS

NAN = np.nan


def _frame(rows: list[dict]) -> pd.DataFrame:
    """Label rows given as {observation: value}; every other observation blank."""
    data = [[r.get(c, NAN) for c in OBSERVATIONS] for r in rows]
    return pd.DataFrame(data, columns=list(OBSERVATIONS))


def test_cooccurrence_counts_by_hand():
    df = _frame([
        {"Edema": 1.0, "Pleural Effusion": 1.0},
        {"Edema": 1.0, "Pleural Effusion": -1.0},
        {"Edema": 1.0},
        {"Pleural Effusion": 1.0, "Cardiomegaly": 1.0},
    ])
    m = cooccurrence(df, "zeros")
    assert m.loc["Edema", "Pleural Effusion"] == pytest.approx(100 / 3)   # 1 of 3 edema images
    assert m.loc["Pleural Effusion", "Edema"] == pytest.approx(50.0)     # 1 of 2 effusion images
    assert m.loc["Edema", "Edema"] == 100.0
    assert np.isnan(m.loc["Pneumonia", "Edema"])                        # no pneumonia at all
    ones = cooccurrence(df, "ones")                                      # uncertain -> positive
    assert ones.loc["Edema", "Pleural Effusion"] == pytest.approx(200 / 3)


def test_policy_positive_rates_by_hand():
    df = _frame([{"Atelectasis": 1.0}, {"Atelectasis": -1.0}, {"Atelectasis": 0.0}, {}])
    rates = policy_positive_rates(df).loc["Atelectasis"]
    assert rates["zeros"] == pytest.approx(25.0)    # 1 of 4
    assert rates["ones"] == pytest.approx(50.0)     # 2 of 4
    assert rates["ignore"] == pytest.approx(100 / 3)  # 1 of the 3 certain-or-blank entries


def test_distribution_table_text_cells():
    df = _frame([{"Edema": 1.0}, {"Edema": 0.0}, {"Edema": -1.0}, {}])
    row = distribution_table(df).loc["Edema"]
    assert row.tolist() == ["1 (25.0%)", "1 (25.0%)", "1 (25.0%)", "1 (25.0%)"]


def test_pick_examples_round_robin_then_fill():
    df = _frame([{"Edema": 1.0}, {"Cardiomegaly": 1.0}, {"Edema": 1.0}, {}, {}, {}])
    rows = pick_examples(df, ["Edema", "Cardiomegaly"], n=4, seed=0)
    assert len(rows) == 4 and len(set(rows)) == 4
    assert set(rows[:3]) == {0, 1, 2}           # the three positive images come first
    assert rows[1] == 1                        # second pick serves the second class
    assert pick_examples(df, ["Edema"], n=10) and len(pick_examples(df, ["Edema"], n=10)) == 6


def test_read_radiograph_keeps_the_original_size(tmp_path):
    pixels = (np.arange(40 * 30) % 251).astype(np.uint8).reshape(40, 30)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = read_radiograph(tmp_path / "a.png")
    assert out.shape == (40, 30) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, pixels)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageFileError, match="bad.jpg"):
        read_radiograph(tmp_path / "bad.jpg")


def test_load_split_masks(tmp_path):
    mask = np.zeros((5, 4), bool)
    mask[1:3, 2] = True
    write_chexlocalize(tmp_path / "masks" / "valid_findings.json", {"patient1_study1_view1_frontal": {"Edema": mask}})
    findings, shortcut = load_split_masks(tmp_path, "valid")
    np.testing.assert_array_equal(findings["patient1_study1_view1_frontal"]["Edema"], mask)
    assert shortcut == {}
    assert load_split_masks(tmp_path, "train") == ({}, {})


def test_example_panels_images_titles_outlines_and_ids(tmp_path):
    from chexlib.data.summary import example_panels

    paths = [f"CheXpert-v1.0-small/valid/patient{n:05d}/study1/view1_frontal.jpg" for n in (1, 2)]
    for n, path in enumerate(paths):  # stored below the root without the dataset folder
        file = tmp_path / path.split("/", 1)[1]
        file.parent.mkdir(parents=True)
        Image.fromarray(np.full((6, 5), 40 * (n + 1), np.uint8)).save(file)
    df = _frame([{"Edema": 1.0, "Cardiomegaly": 1.0, "No Finding": 0.0}, {"No Finding": 1.0}])
    df.insert(0, "Path", paths)
    df["AP/PA"] = ["AP", "PA"]
    edema, marker = np.zeros((6, 5), bool), np.zeros((6, 5), bool)
    edema[1:3, 1:3], marker[0, :2] = True, True
    write_chexlocalize(tmp_path / "masks" / "valid_findings.json",
                       {"patient00001_study1_view1_frontal": {"Edema": edema}})
    write_chexlocalize(tmp_path / "masks" / "valid_shortcut.json",
                       {"patient00001_study1_view1_frontal": {"PORTABLE": marker}})
    images, titles, outlines, ids = example_panels(df, [1, 0], tmp_path)
    assert [int(im[0, 0]) for im in images] == [80, 40] and images[0].shape == (6, 5)
    assert titles == ["PA · No Finding", "AP · Cardiomegaly, Edema"]  # CSV order of OBSERVATIONS
    assert ids == ["patient00002_study1_view1_frontal", "patient00001_study1_view1_frontal"]
    assert outlines[0] == {} and sorted(outlines[1]) == ["Edema", "PORTABLE"]
    np.testing.assert_array_equal(outlines[1]["Edema"], edema)
    np.testing.assert_array_equal(outlines[1]["PORTABLE"], marker)
