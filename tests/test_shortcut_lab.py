"""Notebook 07's steps on a demo run whose phantom has drains: cases, effects, tables, insights.

The counterfactual inputs are checked against what they must equal: the stored images where the
drain is kept, and for the other side images that differ only near the drain; the effects
against the model's own logits on those inputs; the tables' columns against the issue's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from chexlib.demo import make_demo_run
from chexlib.observations import OBSERVATIONS
from chexlib.session import open_run
from chexlib.shortcut import causal_table, confounder_shares, reveal_table, strata_table
from chexlib.shortcut.insights import shortcut_insights
from chexlib.shortcut.lab import ADDED, case_maps, drain_cases, drain_effects, reported_patients
from chexlib.shortcut.lab import reported_subgroups


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    make_demo_run(root / "phantom", root / "run", n_valid=40, image_size=64,
                  drain_rates=(0.8, 0.5, 0.3))
    session = open_run(root / "run")
    cases, tensors = drain_cases(session.reported, root / "phantom")
    return session, root / "phantom", cases, tensors


def test_cases_pair_each_stored_image_with_its_counterfactual(lab):
    session, _, cases, tensors = lab
    reported = session.reported
    drains = reported.drains()
    removed = cases[cases["direction"] == "removed"]
    assert sorted(removed["row"]) == np.flatnonzero(drains).tolist() and len(removed) > 0
    for k, row in enumerate(cases["row"]):
        stored = reported.images([int(row)])[0]
        direction = cases["direction"][k]
        kept = tensors["with"][k] if direction == "removed" else tensors["without"][k]
        changed = tensors["without"][k] if direction == "removed" else tensors["with"][k]
        assert torch.equal(kept, stored)  # the side the model read is the stored image
        drain = tensors["drain"][k]
        assert drain.any()
        # The other side differs only near the drain (JPEG blocks and the resize's footprint).
        near = ndimage.binary_dilation(drain, iterations=4)
        differs = (changed != stored).any(dim=0).numpy()
        assert differs.any() and not (differs & ~near).any()
    subgroups = reported_subgroups(reported)
    assert set(cases.loc[cases["direction"] == "added", "subgroup"]) <= {ADDED}
    assert (cases["direction"] == "added").sum() == (subgroups == "finding without drain").sum()


def test_effects_are_the_models_logit_differences(lab):
    session, _, cases, tensors = lab
    effects = drain_effects(session.model, cases, tensors, batch_size=4)
    with torch.no_grad():
        expected = (session.model(tensors["without"]) - session.model(tensors["with"])).numpy()
    np.testing.assert_allclose(effects[list(OBSERVATIONS)].to_numpy(), expected, atol=1e-4)
    table = causal_table(effects[list(OBSERVATIONS)].to_numpy(), effects["subgroup"],
                         effects["patient"], OBSERVATIONS, ["Pneumothorax"], n_boot=200)
    assert list(table.columns) == ["observation", "subgroup", "n", "logit_change_mean", "low",
                                   "high"]
    assert table.loc[table["subgroup"] == "all", "n"].item() == len(cases)


def test_strata_reveal_and_insights_on_the_demo_run(lab):
    session, _, cases, tensors = lab
    reported = session.reported
    j = OBSERVATIONS.index("Pneumothorax")
    strata = strata_table(reported.labels[:, j], reported.probs[:, j], reported_subgroups(reported),
                          reported_patients(reported), "Pneumothorax", threshold=0.5, n_boot=200)
    assert list(strata.columns[:6]) == ["observation", "subgroup", "n", "auroc", "auroc_low",
                                        "auroc_high"]
    effects = drain_effects(session.model, cases, tensors)
    maps = case_maps(session.model, tensors["with"], ["epsilon", "gradcam", "random"],
                     "Pneumothorax")
    shares = {m: confounder_shares(maps[m], tensors["drain"], tensors["finding"]) for m in maps}
    reveal = reveal_table(shares, -effects["Pneumothorax"].to_numpy())
    assert list(reveal.columns) == ["method", "n", "blank_rate", "share_confounder",
                                    "n_finding", "share_finding", "spearman_with_effect",
                                    "spearman_low", "spearman_high", "spearman_family_low",
                                    "spearman_family_high"]
    assert reveal["share_confounder"].between(0, 1).all()
    lines = shortcut_insights(strata, causal_table(
        effects[list(OBSERVATIONS)].to_numpy(), effects["subgroup"], effects["patient"],
        OBSERVATIONS, ["Pneumothorax"], n_boot=200), reveal)
    assert lines[0].startswith("Hidden stratification") and any("Causal test" in x for x in lines)
