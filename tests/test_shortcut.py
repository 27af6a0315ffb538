"""chexlib.shortcut: subgroups, strata, the causal table and the reveal table, against references.

AUROCs are checked against scikit-learn on the subsets each row compares, rates and means against
numpy, rank correlations against scipy, shares against a hand computation; intervals against
their defining properties (they hold the estimate, they resample patients, not images).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

from chexlib.errors import MetricInputError
from chexlib.shortcut import (SUBGROUPS, causal_table, confounder_shares, drain_subgroups,
                              reveal_table, strata_table)
from chexlib.shortcut.causal import logit_changes
from chexlib.shortcut.reveal import bootstrap_spearman


def test_subgroups_from_finding_and_drain():
    got = drain_subgroups([1, 1, 0, 0], [1, 0, 1, 0])
    assert got.tolist() == list(SUBGROUPS)
    with pytest.raises(MetricInputError, match="finding has 2 images and drain 3"):
        drain_subgroups([1, 0], [1, 0, 1])
    with pytest.raises(MetricInputError, match="drain holds values other than 0 and 1"):
        drain_subgroups([1, 0], [2, 0])


def _lab(n=400, seed=0):
    """A model that reads the drain: positives with a drain score high, drains raise negatives."""
    rng = np.random.default_rng(seed)
    finding = rng.random(n) < 0.3
    drain = np.where(finding, rng.random(n) < 0.6, rng.random(n) < 0.1)
    score = 1 / (1 + np.exp(-(2.5 * drain + 0.6 * finding + rng.normal(0, 1, n))))
    patients = rng.integers(0, n // 2, n)
    return finding.astype(int), drain.astype(int), score, patients


def test_strata_aurocs_are_sklearns_on_the_compared_subsets():
    finding, drain, score, patients = _lab()
    groups = drain_subgroups(finding, drain)
    raw = strata_table(finding, score, groups, patients, "Pneumothorax", threshold=0.5,
                       n_boot=300)
    assert list(raw.columns[:6]) == ["observation", "subgroup", "n", "auroc", "auroc_low",
                                     "auroc_high"]  # the columns of tables/07_strata.csv
    table = raw.set_index("subgroup")
    pos, neg = finding == 1, finding == 0
    subsets = {"all": pos | neg,
               SUBGROUPS[0]: (pos & (drain == 1)) | neg,
               SUBGROUPS[1]: (pos & (drain == 0)) | neg,
               SUBGROUPS[2]: pos | (neg & (drain == 1))}
    for name, rows in subsets.items():
        assert table.loc[name, "auroc"] == pytest.approx(roc_auc_score(finding[rows], score[rows]))
        assert table.loc[name, "n"] == rows.sum()
        low, high = table.loc[name, "auroc_low"], table.loc[name, "auroc_high"]
        assert low <= table.loc[name, "auroc"] <= high
    # The drain-reading model: with a drain far better than without; drains make false positives.
    assert table.loc[SUBGROUPS[0], "auroc_low"] > table.loc[SUBGROUPS[1], "auroc_high"]
    sensitivity = (score[pos & (drain == 1)] >= 0.5).mean()
    assert table.loc[SUBGROUPS[0], "rate"] == pytest.approx(sensitivity)
    assert table.loc[SUBGROUPS[2], "rate_name"] == "false-positive rate"
    false_positives = (score[neg & (drain == 1)] >= 0.5).mean()
    assert table.loc[SUBGROUPS[2], "rate"] == pytest.approx(false_positives)


def test_strata_gap_row_is_the_paired_difference_of_sklearns_aurocs():
    from chexlib.shortcut.strata import GAP, auroc_gap

    finding, drain, score, patients = _lab()
    groups = drain_subgroups(finding, drain)
    pos, neg = finding == 1, finding == 0
    with_drain, without = (pos & (drain == 1)) | neg, (pos & (drain == 0)) | neg
    expected = (roc_auc_score(finding[with_drain], score[with_drain])
                - roc_auc_score(finding[without], score[without]))
    table = strata_table(finding, score, groups, patients, "P", threshold=0.5, n_boot=300)
    row = table.set_index("subgroup").loc[GAP]
    assert table["subgroup"].iloc[-1] == GAP and np.isnan(row["rate"])
    assert row["auroc"] == pytest.approx(expected)
    assert 0 < row["auroc_low"] <= row["auroc"] <= row["auroc_high"]  # the drain-reading model
    # Models blind to the drain: positives score alike with and without one. Over 40 such
    # models the paired 95 % interval holds the true gap, 0, in most (a calibration check; the
    # percentile bootstrap runs a little under its level at these 48 and 72 positives), and it
    # is narrower than the span of the two separate intervals: the comparisons share negatives.
    covered = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        blind = 1 / (1 + np.exp(-(1.5 * finding + rng.normal(0, 1, len(finding)))))
        gap, low, high = auroc_gap(finding, blind, groups, patients, n_boot=200, seed=seed)
        covered.append(low < 0 < high)
    assert np.mean(covered) >= 0.8
    rows = strata_table(finding, blind, groups, patients, "P", n_boot=400).set_index("subgroup")
    gap, low, high = auroc_gap(finding, blind, groups, patients, n_boot=400)
    span = (rows.loc[SUBGROUPS[0], "auroc_high"] - rows.loc[SUBGROUPS[1], "auroc_low"]) - (
        rows.loc[SUBGROUPS[0], "auroc_low"] - rows.loc[SUBGROUPS[1], "auroc_high"])
    assert high - low < span
    # No positive without a drain: no gap row, and auroc_gap says NaN.
    only = np.where(pos, 1, drain)
    assert GAP not in set(strata_table(finding, score, drain_subgroups(finding, only), patients,
                                       "P", n_boot=50)["subgroup"])
    assert np.isnan(auroc_gap(finding, score, drain_subgroups(finding, only), patients)[0])


def test_strata_intervals_resample_patients_not_images():
    finding, drain, score, _ = _lab(n=300, seed=2)
    groups = drain_subgroups(finding, drain)
    own = strata_table(finding, score, groups, np.arange(300), "P", n_boot=400)
    # Each image copied into 10 images of one patient: the same AUROC, the same patient-level
    # uncertainty (an image bootstrap would shrink the interval about sqrt(10)-fold).
    tenfold = strata_table(np.repeat(finding, 10), np.repeat(score, 10), np.repeat(groups, 10),
                           np.repeat(np.arange(300), 10), "P", n_boot=400)
    np.testing.assert_allclose(tenfold["auroc"], own["auroc"])
    width = (own["auroc_high"] - own["auroc_low"]).to_numpy()
    np.testing.assert_allclose((tenfold["auroc_high"] - tenfold["auroc_low"]).to_numpy(), width,
                               rtol=0.35)


def test_strata_refuse_unknown_subgroups_and_mismatched_lengths():
    with pytest.raises(MetricInputError, match="unknown subgroup"):
        strata_table([1, 0], [0.4, 0.2], ["treated", "neither"], [1, 2], "P")
    with pytest.raises(MetricInputError, match="expected one per image"):
        strata_table([1, 0], [0.4], ["neither", "neither"], [1, 2], "P")


def test_causal_table_means_per_subgroup_with_patient_intervals():
    rng = np.random.default_rng(3)
    groups = np.array([SUBGROUPS[0]] * 30 + [SUBGROUPS[2]] * 20)
    changes = np.stack([np.where(groups == SUBGROUPS[0], -2.0, -0.1) + rng.normal(0, 0.3, 50),
                        rng.normal(0, 0.3, 50)], axis=1)
    patients = np.arange(50) // 2
    table = causal_table(changes, groups, patients, ["Pneumothorax", "Edema"], n_boot=500)
    ptx = table[table["observation"] == "Pneumothorax"].set_index("subgroup")
    assert list(ptx.index) == ["all", SUBGROUPS[0], SUBGROUPS[2]]
    assert ptx.loc[SUBGROUPS[0], "logit_change_mean"] == pytest.approx(changes[:30, 0].mean())
    assert ptx.loc["all", "n"] == 50 and ptx.loc[SUBGROUPS[2], "n"] == 20
    assert ptx.loc[SUBGROUPS[0], "high"] < 0  # the effect's interval excludes 0
    edema = table[(table["observation"] == "Edema") & (table["subgroup"] == "all")].iloc[0]
    assert edema["low"] < 0 < edema["high"]
    with pytest.raises(MetricInputError, match=r"expected \[N, 2\]"):
        causal_table(changes[:, :1], groups, patients, ["Pneumothorax", "Edema"])


def test_logit_changes_are_the_models_differences():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    with_drain, without = torch.rand(5, 3, 4, 4), torch.rand(5, 3, 4, 4)
    got = logit_changes(model, with_drain, without, batch_size=2)
    expected = (model(without) - model(with_drain)).detach().double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)  # batched vs whole: float rounding


def test_shares_and_reveal_table_against_hand_and_scipy():
    maps = np.zeros((4, 4, 4))
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0          # 3/4 on the confounder, 1/4 on the finding
    maps[1, 0, 0], maps[1, 3, 3], maps[1, 1, 1] = 1.0, 1.0, -5.0  # negative relevance ignored
    maps[3] = np.ones((4, 4))                          # spread evenly: 1/16 each
    confounder = np.zeros((4, 4, 4), bool)
    confounder[:, 0, 0] = True
    finding = np.zeros((4, 4, 4), bool)
    finding[:, 3, 3] = True
    shares = confounder_shares(maps, confounder, finding)
    np.testing.assert_allclose(shares["share_confounder"], [0.75, 0.5, np.nan, 1 / 16])
    np.testing.assert_allclose(shares["share_finding"], [0.25, 0.5, np.nan, 1 / 16])
    assert shares["blank"].tolist() == [False, False, True, False]  # map 2 is blank: NaN
    effects = np.array([3.0, 1.0, 9.0, 0.5])
    table = reveal_table({"lrp": shares}, effects).iloc[0]
    assert table["n"] == 3 and table["blank_rate"] == 0.25
    rho = stats.spearmanr([0.75, 0.5, 1 / 16], [3.0, 1.0, 0.5]).statistic
    assert table["spearman_with_effect"] == pytest.approx(rho)
    assert table["share_confounder"] == pytest.approx(np.mean([0.75, 0.5, 1 / 16]))
    assert table["n_finding"] == 3 and table["share_finding"] == pytest.approx(
        np.mean([0.25, 0.5, 1 / 16]))
    flat = pd.DataFrame({"share_confounder": [0.1] * 4, "share_finding": [0.0] * 4,
                         "blank": [False] * 4})
    assert np.isnan(reveal_table({"flat": flat}, effects).iloc[0]["spearman_with_effect"])


def test_spearman_interval_matches_scipys_bootstrap():
    from chexlib.shortcut.reveal import spearman_interval

    rng = np.random.default_rng(3)
    x = rng.normal(size=25)
    y = x + 1.5 * rng.normal(size=25)
    low, high = spearman_interval(x, y, n_boot=4000, seed=0)
    reference = stats.bootstrap(
        (x, y), lambda a, b: stats.spearmanr(a, b).statistic, paired=True, vectorized=False,
        n_resamples=4000, method="percentile", random_state=1).confidence_interval
    # Two independent Monte-Carlo estimates of the same percentiles: close, not equal.
    assert low == pytest.approx(reference.low, abs=0.05)
    assert high == pytest.approx(reference.high, abs=0.05)
    assert low < stats.spearmanr(x, y).statistic < high
    assert np.isnan(spearman_interval(x[:2], y[:2])).all()  # too few pairs: no interval
    with pytest.raises(MetricInputError, match=r"x has shape \(25,\) and y \(24,\)"):
        spearman_interval(x, y[:24])
    same = spearman_interval(x, y, n_boot=500, seed=7)
    assert same == spearman_interval(x, y, n_boot=500, seed=7)  # seeded


def test_reveal_table_adjusts_the_interval_for_the_number_of_methods():
    rng = np.random.default_rng(5)
    effects = rng.normal(size=25)
    shares = {name: pd.DataFrame({"share_confounder": effects + scale * rng.normal(size=25),
                                  "share_finding": np.full(25, 0.1), "blank": False})
              for name, scale in (("epsilon", 1.0), ("gradcam", 3.0), ("random", 5.0))}
    table = reveal_table(shares, effects, n_boot=4000, seed=0).set_index("method")
    for name, frame in shares.items():
        x = frame["share_confounder"].to_numpy()
        rhos = bootstrap_spearman(x, effects, 4000, 0)
        # Two methods besides the random map: the family interval is the 1 - 0.05 / 2 one.
        assert table.loc[name, "spearman_family_low"] == pytest.approx(np.percentile(rhos, 1.25))
        assert table.loc[name, "spearman_family_high"] == pytest.approx(
            np.percentile(rhos, 98.75))
        assert table.loc[name, "spearman_low"] == pytest.approx(np.percentile(rhos, 2.5))
        assert (table.loc[name, "spearman_family_low"] <= table.loc[name, "spearman_low"]
                <= table.loc[name, "spearman_with_effect"])


def test_reveal_insight_claims_tracking_only_when_the_adjusted_interval_excludes_0():
    from chexlib.shortcut.insights import _reveal

    def table(low, family_low):
        return pd.DataFrame({"method": ["alpha2_beta1", "gradcam", "random"], "n": [25] * 3,
                             "share_confounder": [0.2, 0.1, 0.01],
                             "spearman_with_effect": [0.5, 0.2, 0.1],
                             "spearman_low": [low, -0.2, -0.3], "spearman_high": [0.8, 0.5, 0.4],
                             "spearman_family_low": [family_low, -0.3, -0.4],
                             "spearman_family_high": [0.9, 0.6, 0.5]})

    apart = _reveal(table(0.2, 0.05), effect_shown=True)
    assert "LRP-α2β1 has the highest rank correlation with the causal effect (Spearman +0.50, " \
           "95% CI +0.20 to +0.80, " \
           "n=25 images)" in apart
    assert "adjusted for the 2 correlations it was picked from (Bonferroni, 97.5%): +0.05 to " \
           "+0.90, above 0" in apart
    picked = _reveal(table(0.2, -0.1), effect_shown=True)  # 95% apart from 0, adjusted not
    assert "which holds 0, so this sample does not show" in picked


def _causal_rows(mean, low, high):
    return pd.DataFrame([("Pneumothorax", SUBGROUPS[0], 9, mean, low, high)],
                        columns=["observation", "subgroup", "n", "logit_change_mean", "low",
                                 "high"])


def _insights(causal, **kwargs):
    from chexlib.shortcut.insights import shortcut_insights

    strata = pd.DataFrame({"observation": "Pneumothorax", "subgroup": list(SUBGROUPS[:2]),
                           "n": [9, 17], "auroc": [0.99, 0.83], "auroc_low": [0.98, 0.73],
                           "auroc_high": [1.0, 0.91]})
    return shortcut_insights(strata, causal, pd.DataFrame(), **kwargs)


def test_insights_claim_a_learned_shortcut_only_against_a_control():
    # A response to the drain (interval below 0) is a response, not a learned shortcut, until a
    # control model that never saw a drain responds less, intervals apart.
    here = _causal_rows(-3.5, -4.1, -3.0)
    alone = _insights(here, train_drain_rate=0.8)
    assert "(intervals apart)" in alone[0] and "responds to it" in alone[1]
    assert "not tested" in alone[2] and "learned the drain" not in " ".join(alone)
    learned = _insights(here, train_drain_rate=0.8, control_causal=_causal_rows(-0.8, -1.0, -0.6))
    assert "learned the drain as a shortcut" in learned[2]
    overlapping = _insights(here, train_drain_rate=0.8,
                            control_causal=_causal_rows(-3.2, -3.6, -2.5))
    assert "a learned shortcut is not shown" in overlapping[2]
    control = _insights(_causal_rows(-0.8, -1.0, -0.6), train_drain_rate=0.0)
    assert "this run is the control" in control[2]
    none = _insights(_causal_rows(-0.1, -0.5, 0.3), train_drain_rate=0.8)
    assert "no effect these data support" in none[1]


def test_stratification_insight_reads_the_paired_gap_row_when_there_is_one():
    from chexlib.shortcut.insights import shortcut_insights
    from chexlib.shortcut.strata import GAP

    # Separate intervals apart (0.98-1.00 vs 0.73-0.91), but the paired interval of the gap is
    # what decides: it includes 0 in the first table and excludes it in the second.
    rows = {"observation": "Pneumothorax", "subgroup": [*SUBGROUPS[:2], GAP], "n": [9, 17, 26],
            "auroc": [0.99, 0.83, 0.16], "auroc_low": [0.98, 0.73, -0.01],
            "auroc_high": [1.0, 0.91, 0.3]}
    causal = _causal_rows(-0.1, -0.5, 0.3)
    line = shortcut_insights(pd.DataFrame(rows), causal, pd.DataFrame())[0]
    assert "gap +0.160 (-0.010 to +0.300, paired patient bootstrap)" in line
    assert "the paired interval includes 0: no difference" in line
    rows["auroc_low"][2] = 0.02
    line = shortcut_insights(pd.DataFrame(rows), causal, pd.DataFrame())[0]
    assert "better on the cases with a drain (the paired interval excludes 0)" in line


def test_control_causal_names_the_missing_table(tmp_path):
    from chexlib.errors import MissingFileError
    from chexlib.shortcut.lab import control_causal

    assert control_causal("") is None
    with pytest.raises(MissingFileError, match="07_causal.csv does not exist"):
        control_causal(tmp_path)
    (tmp_path / "tables").mkdir()
    _causal_rows(-0.8, -1.0, -0.6).to_csv(tmp_path / "tables" / "07_causal.csv", index=False)
    assert control_causal(tmp_path)["logit_change_mean"].item() == -0.8


def test_strongest_case_is_the_most_negative_change():
    from chexlib.shortcut.lab import strongest_case

    effects = pd.DataFrame({"Pneumothorax": [-0.5, -2.0, 1.0, -2.0]})
    assert strongest_case(effects) == 1  # ties: the first
    assert strongest_case(effects.iloc[:0]) is None


def test_with_and_without_draws_each_pair_on_one_scale():
    from chexlib.plots.heatmaps import with_and_without

    image = np.zeros((16, 16))
    a, b = np.zeros((16, 16)), np.zeros((16, 16))
    a[2, 2], b[3, 3] = 4.0, 1.0
    fig = with_and_without(image, image + 0.5, {"m": a, "n": b}, {"m": b, "n": a}, "t",
                           outline=a > 0)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["m\nwith", "m\nwithout", "n\nwith", "n\nwithout"]
    limits = [ax.images[-1].get_clim() for ax in panels]
    assert limits[0] == limits[1] and limits[2] == limits[3]
    with pytest.raises(Exception, match="must name the same"):
        with_and_without(image, image, {"m": a}, {"n": a}, "t")
