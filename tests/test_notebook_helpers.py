"""Helpers the notebooks print with: figure notes, the model card, tables and warnings.

References: hand-made maps and masks whose shares and correlations are known exactly, the demo
run's own files (metrics.json, params.yaml), and pandas' and the warnings module's behaviour.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from chexlib.heatmap_quality.notes import class_similarity_note, inside_outline_note
from chexlib.notebook_display import FLOAT_FORMAT, readable_output


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
