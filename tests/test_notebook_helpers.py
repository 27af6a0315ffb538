"""Helpers the notebooks print with: figure notes, the model card, tables and warnings.

References: hand-made maps and masks whose shares and correlations are known exactly, the demo
run's own files (metrics.json, params.yaml), and pandas' and the warnings module's behaviour.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from chexlib.heatmap_quality.notes import (class_similarity_note, detection_note,
                                          inside_outline_note, negative_evidence_note)
from chexlib.notebook_display import FLOAT_FORMAT, readable_output, with_display_names


def test_inside_outline_note_gives_each_maps_share_against_the_outline_area():
    outline = np.zeros((10, 10), bool)
    outline[:5, :5] = True  # 25 % of the image
    inside = np.zeros((10, 10))
    inside[1, 1] = 3.0
    half = np.zeros((10, 10))
    half[0, 0], half[9, 9] = 1.0, 1.0
    note = inside_outline_note({"gradcam": inside, "epsilon": half, "z": -inside}, outline,
                               "Edema")
    assert "covers 25.0% of the image" in note
    assert "Grad-CAM 100%" in note and "LRP-ε 50%" in note
    assert "LRP-0 blank (no positive relevance)" in note
    assert "No outline of Edema" in inside_outline_note({"z": inside}, None, "Edema")


def test_class_similarity_note_reports_the_mean_pairwise_rank_correlation():
    base = np.arange(64, dtype=float).reshape(8, 8)
    same = np.stack([base, 2 * base + 1, base ** 2])  # monotone transforms: Spearman 1
    note = class_similarity_note(same, "epsilon")
    assert "3 class maps of LRP-ε" in note and "correlation 1.00" in note
    assert "nearly the same map" in note and "0 of 3 maps have no positive relevance" in note
    mixed = np.stack([base, -base, base])  # pairs: -1, +1, -1 -> mean -1/3
    assert "correlation -0.33" in class_similarity_note(mixed, "z")
    assert "the maps change with the class" in class_similarity_note(mixed, "z")


def test_readable_output_keeps_text_whole_and_one_float_format(capsys):
    before = pd.get_option("display.max_colwidth"), pd.get_option("display.float_format")
    showwarning = warnings.showwarning
    try:
        readable_output()
        long = "x" * 300
        assert long in pd.DataFrame({"rules per layer": [long]}).to_string()
        column = pd.DataFrame({"v": [0.189, 0.01093]}).to_string()
        assert "0.189" in column and "0.01093" in column and "e-" not in column
        assert warnings.showwarning is not showwarning
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("ImageNet weights\n   unavailable", UserWarning, stacklevel=1)
        out = capsys.readouterr()
        assert out.out == "warning (UserWarning): ImageNet weights unavailable\n"
        assert out.err == ""
    finally:
        pd.set_option("display.max_colwidth", before[0])
        pd.set_option("display.float_format", before[1])
        warnings.showwarning = showwarning
        warnings.resetwarnings()


@pytest.mark.parametrize("value,text", [(0.189, "0.189"), (0.01093, "0.01093"),
                                         (1.5e-5, "1.500e-05"), (1234.5, "1,234"),
                                         (0.0, "0"), (float("nan"), "nan")])
def test_float_format(value, text):
    assert FLOAT_FORMAT(value) == text


def test_model_card_names_the_run_epochs_size_and_auroc(tiny_run, tmp_path):
    import shutil

    from chexlib.artefacts import write_metrics
    from chexlib.model_card import model_card
    from chexlib.session import open_run

    _, run_dir, _, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    session = open_run(copy, device="cpu")
    card = model_card(session)  # before notebook 03: no AUROC to report
    assert f"run `{copy.name}`" in card and "48 px" in card and "AUROC" not in card
    assert f"epoch {session.checkpoint.get('epoch')}" in card
    write_metrics(copy / "metrics.json", pd.DataFrame({"auroc": [0.7]}, index=["Edema"]),
                  {"macro_auroc": 0.71234, "n_defined": 13})
    assert "macro AUROC **0.712** over 13 observations" in model_card(session)


def test_with_display_names_renames_methods_wherever_a_table_holds_them():
    table = pd.DataFrame({"method": ["alpha2_beta1", "gradcam-features.denseblock3", "mine"],
                          "order": ["morf", "lerf", "morf"], "aopc": [1.0, 2.0, 3.0]})
    names = ["LRP-α2β1", "Grad-CAM at dense block 3", "mine"]  # an unknown name stays
    assert list(with_display_names(table)["method"]) == names
    assert list(table["method"])[0] == "alpha2_beta1"  # the saved table is not changed
    by_row = table.pivot_table(index="method", columns="order", values="aopc", sort=False)
    assert list(with_display_names(by_row).index) == names
    by_column = table.pivot_table(index="order", columns="method", values="aopc", sort=False)
    shown = with_display_names(by_column)
    assert list(shown.columns) == names and shown.loc["lerf", "Grad-CAM at dense block 3"] == 2.0
    nested = with_display_names(table.set_index(["method", "order"]))
    assert nested.loc[("LRP-α2β1", "morf"), "aopc"] == 1.0
    assert list(with_display_names(table[["aopc"]]).columns) == ["aopc"]  # no method: as it is


def test_negative_evidence_note_gives_each_maps_negative_share():
    signed = np.array([[3.0, -1.0], [0.0, 0.0]])  # |neg| 1 of |all| 4: 25 %
    positive = np.array([[2.0, 0.0], [0.0, 1.0]])
    text = negative_evidence_note({"epsilon": signed, "gradcam": positive,
                                   "zplus": np.zeros((2, 2))}, "Edema")
    assert text.startswith("**Blue is evidence against Edema**")
    assert "LRP-ε 25%" in text and "Grad-CAM 0%" in text and "LRP-z⁺ zero everywhere" in text
    assert "Grad-CAM shows no blue on this image" in text  # only the map with none is named
    assert "no blue" not in negative_evidence_note({"epsilon": signed}, "Edema")


def _by_observation(rows):
    return pd.DataFrame(rows, columns=["observation", "method", "outcome", "n", "chance",
                                       "mass", "auroc"])


def test_detection_note_takes_the_well_detected_class_its_maps_localise_least():
    table = _by_observation([
        ("Edema", "gradcam", "TP", 98, 0.06, 0.10, 0.986),        # 1.7x chance, AUROC 0.99
        ("Pneumothorax", "gradcam", "TP", 19, 0.02, 0.07, 0.962),  # 3.5x
        ("Pleural Other", "gradcam", "TP", 8, 0.01, 0.002, 0.86),  # lower, but not detected well
        ("Fracture", "gradcam", "TP", 3, 0.01, 0.001, 0.99),       # too few pairs
        ("Edema", "gradcam", "FN", 5, 0.06, 0.01, 0.986)])          # another outcome
    verdicts = pd.DataFrame({"observation": ["Edema"], "n": [98], "blank_rate": [0.0],
                             "excess": [0.04], "excess low": [0.03], "excess high": [0.05],
                             "verdict": ["localises"]})
    text = detection_note(table, verdicts, "gradcam")
    assert "Edema is detected with AUROC 0.986" in text and "its 98 TP pairs" in text
    assert "10.0% of their positive relevance" in text and "1.7x the 6.0%" in text
    assert "95% CI +0.030 to +0.050 over patients: localises" in text
    assert "Over the 4 observations with masks and a map that is not blank: AUROC 0.86 to 0.99" \
        in text
    assert "A model can detect a finding without its map outlining it" in text
    localised = _by_observation([("Edema", "gradcam", "TP", 98, 0.06, 0.7, 0.986)])
    assert "does not illustrate" in detection_note(localised, verdicts, "gradcam")
    missed = _by_observation([("Edema", "gradcam", "TP", 98, 0.06, 0.1, 0.7)])
    assert "no observation is detected with AUROC >= 0.9" in detection_note(missed, verdicts,
                                                                            "gradcam")
    assert "nothing to compare" in detection_note(table, verdicts, "epsilon")
