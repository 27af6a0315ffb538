"""chexlib.metrics and chexlib.plots.metrics.

Every number is checked against an independent reference: scikit-learn's metrics, scipy's
bootstrap, brute-force searches over all thresholds, or a probability computed by hand; never
against chexlib's own output, except for metamorphic relations (same seed, duplicated patients).
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import matplotlib.pyplot as plt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from chexlib.errors import MetricInputError
from chexlib.metrics import (
    FALLBACK_THRESHOLD,
    auprc,
    auroc,
    bootstrap_ci,
    bootstrap_samples,
    brier_scores,
    calibration_table,
    choose_thresholds,
    outcome_counts,
    outcomes,
    per_class_table,
    summary,
    threshold_table,
    weighted_auroc_auprc,
)
from chexlib.metrics import bootstrap as bootstrap_module
from chexlib.observations import COMPETITION_OBSERVATIONS, OBSERVATIONS
from chexlib.plots import (
    auroc_comparison,
    outcome_bars,
    reliability_diagram,
    roc_pr_curves,
)
from chexlib.reference import STUDY_AUROC


def fake_predictions(n: int, n_classes: int, seed: int, decimals: int | None = None):
    """Labels with varied prevalence and informative probabilities; rounding creates ties."""
    rng = np.random.default_rng(seed)
    prevalence = rng.uniform(0.1, 0.5, n_classes)
    y = (rng.random((n, n_classes)) < prevalence).astype(float)
    p = np.clip(0.35 * y + 0.65 * rng.random((n, n_classes)), 0, 1)
    return y, (p if decimals is None else p.round(decimals))


def sklearn_columns(metric, y, p):
    return np.array([metric(y[:, c], p[:, c]) for c in range(y.shape[1])])


# ---------------------------------------------------------------- AUROC / AUPRC

@pytest.mark.parametrize("decimals", [None, 1, 2])
@pytest.mark.parametrize("n", [4, 30, 234])
def test_auroc_auprc_equal_sklearn(n, decimals):
    y, p = fake_predictions(n, 6, seed=n, decimals=decimals)
    y[:2, :] = [[1] * 6, [0] * 6]  # both labels in every column even for tiny n
    np.testing.assert_allclose(auroc(y, p), sklearn_columns(roc_auc_score, y, p), rtol=1e-12)
    np.testing.assert_allclose(auprc(y, p), sklearn_columns(average_precision_score, y, p),
                               rtol=1e-12)


def test_auroc_with_all_scores_tied_is_one_half():
    y = np.array([[0], [1], [0], [1], [1]])
    p = np.full((5, 1), 0.3)
    assert auroc(y, p)[0] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0])) == 0.5
    assert auprc(y, p)[0] == pytest.approx(average_precision_score(y[:, 0], p[:, 0]))


def test_integer_and_boolean_labels_accepted():
    y, p = fake_predictions(50, 3, seed=4)
    np.testing.assert_allclose(auroc(y.astype(int), p), auroc(y.astype(bool), p))
    np.testing.assert_allclose(auroc(y.astype(int), p), sklearn_columns(roc_auc_score, y, p))


def test_single_valued_class_is_nan_without_warnings():
    y, p = fake_predictions(40, 3, seed=5)
    y[:, 1] = 0
    y[:, 2] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aurocs, auprcs = auroc(y, p), auprc(y, p)
        table = per_class_table(y, p, classes=["a", "none", "all"], n_boot=200)
    assert np.isnan(aurocs[1:]).all() and np.isnan(auprcs[1:]).all()
    assert aurocs[0] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    assert list(table.index) == ["a", "none", "all"]  # flagged, not dropped
    assert table["defined"].tolist() == [True, False, False]
    assert table.loc["none", "note"] == "undefined: no positives"
    assert table.loc["all", "note"] == "undefined: no negatives"
    assert table.loc["none", "n_valid"] == 0 and np.isnan(table.loc["none", "auroc_low"])
    assert table.loc["none", "positives"] == 0 and table.loc["all", "positives"] == 40


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 1), min_size=n, max_size=n),
    st.lists(st.integers(0, 5), min_size=n, max_size=n),      # few values: many ties
    st.lists(st.integers(0, 3), min_size=n, max_size=n))))    # weights, zeros included
def test_weighted_scores_equal_sklearn_sample_weight(data):
    labels, scores, weights = map(np.asarray, data)
    scores = scores / 5.0
    pos_weight, neg_weight = weights[labels == 1].sum(), weights[labels == 0].sum()
    got_auroc, got_auprc = weighted_auroc_auprc(labels, scores, weights[None, :])
    if pos_weight == 0 or neg_weight == 0:
        assert np.isnan(got_auroc[0]) and np.isnan(got_auprc[0])
        return
    assert got_auroc[0] == pytest.approx(
        roc_auc_score(labels, scores, sample_weight=weights), abs=1e-12)
    assert got_auprc[0] == pytest.approx(
        average_precision_score(labels, scores, sample_weight=weights), abs=1e-12)


def test_weighted_scores_many_rows_at_once():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 2, 60)
    scores = rng.integers(0, 10, 60) / 10
    weights = rng.multinomial(60, np.full(60, 1 / 60), size=25)  # 25 bootstrap resamples
    got_auroc, got_auprc = weighted_auroc_auprc(labels, scores, weights)
    for b in range(25):
        assert got_auroc[b] == pytest.approx(
            roc_auc_score(labels, scores, sample_weight=weights[b]), abs=1e-12)
        assert got_auprc[b] == pytest.approx(
            average_precision_score(labels, scores, sample_weight=weights[b]), abs=1e-12)


# ---------------------------------------------------------------- table and summary

def test_per_class_table_columns_and_counts():
    y, p = fake_predictions(234, 14, seed=7, decimals=2)
    table = per_class_table(y, p, n_boot=100)
    assert list(table.index) == list(OBSERVATIONS)
    assert list(table.columns) == ["auroc", "auroc_low", "auroc_high", "auprc", "auprc_low",
                                   "auprc_high", "positives", "support", "prevalence",
                                   "defined", "note", "n_valid"]
    np.testing.assert_array_equal(table["positives"], y.sum(0))
    assert (table["support"] == 234).all()
    np.testing.assert_allclose(table["prevalence"], y.mean(0))
    assert (table["auroc_low"] <= table["auroc"]).all()
    assert (table["auroc"] <= table["auroc_high"]).all()


def test_few_positives_note():
    y, p = fake_predictions(60, 2, seed=8)
    y[:, 1] = 0
    y[:3, 1] = 1
    table = per_class_table(y, p, classes=["many", "few"], n_boot=100)
    assert "few positives (<5)" in table.loc["few", "note"]
    assert table.loc["many", "note"] == ""
    assert table.loc["few", "defined"]


def test_summary_means_equal_sklearn_averages():
    y, p = fake_predictions(234, 14, seed=9, decimals=2)
    y[:, OBSERVATIONS.index("Fracture")] = 0
    y[:, OBSERVATIONS.index("Edema")] = 0
    table = per_class_table(y, p, n_boot=50)
    result = summary(table)
    keep = [k for k, name in enumerate(OBSERVATIONS) if name not in ("Fracture", "Edema")]
    yk, pk = y[:, keep], p[:, keep]
    for average in ("macro", "weighted"):
        assert result[f"{average}_auroc"] == pytest.approx(
            roc_auc_score(yk, pk, average=average))
        assert result[f"{average}_auprc"] == pytest.approx(
            average_precision_score(yk, pk, average=average))
    competition = [OBSERVATIONS.index(n) for n in COMPETITION_OBSERVATIONS if n != "Edema"]
    assert result["competition_auroc"] == pytest.approx(
        roc_auc_score(y[:, competition], p[:, competition], average="macro"))
    assert sorted(result["competition_classes"]) == sorted(
        n for n in COMPETITION_OBSERVATIONS if n != "Edema")
    assert result["undefined"] == ["Edema", "Fracture"]
    assert result["n_defined"] == 12


def test_summary_with_no_defined_class_is_nan():
    y = np.zeros((5, 2))
    result = summary(per_class_table(y, np.full((5, 2), 0.2), classes=["a", "b"], n_boot=0))
    assert np.isnan(result["macro_auroc"]) and np.isnan(result["weighted_auprc"])
    assert result["undefined"] == ["a", "b"] and result["n_defined"] == 0


# ---------------------------------------------------------------- bootstrap

def pairwise_auroc_ap(labels, scores, weights=None, axis=-1):
    """AUROC and AP straight from their definitions, over all pairs of images (O(n^2)).

    AUROC: weighted share of (positive, negative) pairs ranked correctly, ties 1/2.
    AP: mean over positives i of the precision at threshold s_i, i.e. among images with
    score >= s_i. Vectorised over leading axes, for scipy.stats.bootstrap(vectorized=True).
    """
    labels, scores = np.moveaxis(labels, axis, -1), np.moveaxis(scores, axis, -1)
    weights = np.ones_like(scores) if weights is None else np.moveaxis(weights, axis, -1)
    pos = weights * (labels == 1)
    neg = weights * (labels == 0)
    above = scores[..., :, None] > scores[..., None, :]
    tied = scores[..., :, None] == scores[..., None, :]
    wins = (pos[..., :, None] * neg[..., None, :] * (above + 0.5 * tied)).sum((-2, -1))
    auroc_value = wins / (pos.sum(-1) * neg.sum(-1))
    at_least = above.swapaxes(-1, -2) | tied  # [i, j]: s_j >= s_i
    precision = (at_least * pos[..., None, :]).sum(-1) / (at_least * weights[..., None, :]).sum(-1)
    ap_value = (pos * precision).sum(-1) / pos.sum(-1)
    return np.stack([auroc_value, ap_value])


def test_pairwise_reference_equals_sklearn():
    y, p = fake_predictions(60, 1, seed=30, decimals=1)
    weights = np.random.default_rng(30).integers(0, 4, 60)
    got = pairwise_auroc_ap(y[:, 0], p[:, 0], weights)
    assert got[0] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0], sample_weight=weights))
    assert got[1] == pytest.approx(
        average_precision_score(y[:, 0], p[:, 0], sample_weight=weights))


def test_bootstrap_agrees_with_scipy_percentile_bootstrap():
    y, p = fake_predictions(150, 1, seed=11, decimals=2)
    ours = bootstrap_ci(y, p, n_boot=2000, seed=1)
    reference = stats.bootstrap((y[:, 0], p[:, 0]), pairwise_auroc_ap, paired=True,
                                vectorized=True, n_resamples=2000, method="percentile",
                                batch=250, rng=np.random.default_rng(2))
    (auroc_low, auprc_low), (auroc_high, auprc_high) = reference.confidence_interval
    # Monte-Carlo standard error of each bound is about 0.003 here.
    assert ours["auroc_low"][0] == pytest.approx(auroc_low, abs=0.015)
    assert ours["auroc_high"][0] == pytest.approx(auroc_high, abs=0.015)
    assert ours["auprc_low"][0] == pytest.approx(auprc_low, abs=0.02)
    assert ours["auprc_high"][0] == pytest.approx(auprc_high, abs=0.02)
    assert ours["n_valid"][0] == 2000


def test_bootstrap_is_deterministic_for_the_seed():
    y, p = fake_predictions(80, 3, seed=12)
    first = bootstrap_ci(y, p, n_boot=300, seed=5)
    second = bootstrap_ci(y, p, n_boot=300, seed=5)
    other = bootstrap_ci(y, p, n_boot=300, seed=6)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.array_equal(first["auroc_low"], other["auroc_low"])


def test_bootstrap_does_not_depend_on_batch_size(monkeypatch):
    y, p = fake_predictions(50, 2, seed=13)
    whole = bootstrap_samples(y, p, n_boot=97, seed=3)
    monkeypatch.setattr(bootstrap_module, "BATCH_ELEMENTS", 50 * 7)  # batches of 7 resamples
    batched = bootstrap_samples(y, p, n_boot=97, seed=3)
    np.testing.assert_array_equal(whole[0], batched[0])
    np.testing.assert_array_equal(whole[1], batched[1])


def test_groups_of_one_image_each_match_image_resampling():
    y, p = fake_predictions(60, 2, seed=14)
    by_image = bootstrap_ci(y, p, n_boot=200, seed=0)
    by_group = bootstrap_ci(y, p, groups=np.arange(60), n_boot=200, seed=0)
    for key in by_image:
        np.testing.assert_array_equal(by_image[key], by_group[key])


def test_duplicated_patients_resampled_as_units():
    # 70 patients, each with 3 identical images: drawing a patient draws all three, so the
    # intervals equal those of the one-image-per-patient data (weights x3 change no ratio).
    y, p = fake_predictions(70, 2, seed=15, decimals=2)
    patients = np.repeat([f"patient{k:05d}" for k in range(70)], 3)
    y3, p3 = np.repeat(y, 3, axis=0), np.repeat(p, 3, axis=0)
    grouped = bootstrap_ci(y3, p3, groups=patients, n_boot=500, seed=4)
    single = bootstrap_ci(y, p, n_boot=500, seed=4)
    for key in grouped:
        np.testing.assert_allclose(grouped[key], single[key], rtol=1e-12)
    # Resampling images instead pretends to have 210 independent images: narrower intervals.
    naive = bootstrap_ci(y3, p3, n_boot=500, seed=4)
    width = grouped["auroc_high"] - grouped["auroc_low"]
    naive_width = naive["auroc_high"] - naive["auroc_low"]
    assert (width > 1.3 * naive_width).all()


def test_grouped_bootstrap_with_unequal_multiplicity_agrees_with_scipy():
    # Patients with 1..4 identical images; reference: scipy resamples patient indices and
    # weights each drawn patient by its image count.
    rng = np.random.default_rng(16)
    y, p = fake_predictions(120, 1, seed=16, decimals=2)
    copies = rng.integers(1, 5, 120)
    patients = np.repeat(np.arange(120), copies)
    ours = bootstrap_ci(np.repeat(y, copies, axis=0), np.repeat(p, copies, axis=0),
                        groups=patients, n_boot=2000, seed=7)

    def statistic(index, axis=-1):
        return pairwise_auroc_ap(y[index, 0], p[index, 0], copies[index], axis=axis)

    reference = stats.bootstrap((np.arange(120),), statistic, vectorized=True,
                                n_resamples=2000, method="percentile", batch=250,
                                rng=np.random.default_rng(8))
    (auroc_low, auprc_low), (auroc_high, auprc_high) = reference.confidence_interval
    assert ours["auroc_low"][0] == pytest.approx(auroc_low, abs=0.015)
    assert ours["auroc_high"][0] == pytest.approx(auroc_high, abs=0.015)
    assert ours["auprc_low"][0] == pytest.approx(auprc_low, abs=0.02)
    assert ours["auprc_high"][0] == pytest.approx(auprc_high, abs=0.02)


def test_resample_weights_keep_patients_whole():
    codes = np.array([0, 0, 1, 2, 2, 2, 3])
    rng = np.random.default_rng(0)
    (_, weights), = bootstrap_module.resample_weights(codes, 50, rng)
    assert weights.shape == (50, 7)
    np.testing.assert_array_equal(weights[:, 0], weights[:, 1])
    np.testing.assert_array_equal(weights[:, 3], weights[:, 5])
    per_patient = weights[:, [0, 2, 3, 6]]
    np.testing.assert_array_equal(per_patient.sum(1), 4)  # 4 patients drawn per resample


def test_n_valid_counts_resamples_with_both_labels():
    # 2 positives among 30 images: a resample has a positive with probability 1 - (28/30)^30.
    y = np.zeros((30, 1))
    y[:2] = 1
    p = np.linspace(0, 1, 30)[:, None]
    n_boot = 4000
    result = bootstrap_ci(y, p, n_boot=n_boot, seed=9)
    expected = 1 - (28 / 30) ** 30
    assert result["n_valid"][0] / n_boot == pytest.approx(expected, abs=4 * np.sqrt(
        expected * (1 - expected) / n_boot))
    table = per_class_table(y, p, classes=["rare"], n_boot=n_boot, seed=9)
    assert f"of {n_boot} resamples" in table.loc["rare", "note"]


# ---------------------------------------------------------------- thresholds and outcomes

def brute_force_best(labels, scores, criterion):
    """Highest threshold among those maximising the criterion, with exact fractions."""
    best, best_t = None, None
    for t in np.unique(scores)[::-1]:
        tn, fp, fn, tp = confusion_matrix(labels, scores >= t, labels=[0, 1]).ravel()
        value = criterion(int(tp), int(fp), int(fn), int(tn))
        if best is None or value > best:
            best, best_t = value, t
    return best_t, best


def youden(tp, fp, fn, tn):
    return Fraction(tp, tp + fn) - Fraction(fp, fp + tn)


def f1(tp, fp, fn, tn):
    return Fraction(2 * tp, 2 * tp + fp + fn)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method,criterion", [("youden", youden), ("f1", f1)])
def test_thresholds_equal_brute_force(seed, method, criterion):
    y, p = fake_predictions(40 + 20 * seed, 3, seed=seed, decimals=[None, 1, 2][seed % 3])
    table = threshold_table(y, p, method=method, classes=["a", "b", "c"])
    for c in range(3):
        threshold, value = brute_force_best(y[:, c], p[:, c], criterion)
        assert table["threshold"].iloc[c] == threshold
        assert table["criterion"].iloc[c] == pytest.approx(float(value), abs=1e-12)
    assert not table["fallback"].any() and (table["method"] == method).all()
    np.testing.assert_array_equal(choose_thresholds(y, p, method), table["threshold"])


def test_youden_value_matches_sklearn_roc_curve():
    y, p = fake_predictions(100, 2, seed=20, decimals=2)
    table = threshold_table(y, p, "youden", classes=["a", "b"])
    for c in range(2):
        fpr, tpr, _ = roc_curve(y[:, c], p[:, c])
        assert table["criterion"].iloc[c] == pytest.approx(np.max(tpr - fpr))


def test_threshold_fallback_for_single_valued_class():
    y, p = fake_predictions(30, 2, seed=21)
    y[:, 1] = 0
    table = threshold_table(y, p, "f1", classes=["ok", "empty"])
    assert table.loc["empty", "threshold"] == FALLBACK_THRESHOLD == 0.5
    assert table.loc["empty", "fallback"] and not table.loc["ok", "fallback"]
    assert np.isnan(table.loc["empty", "criterion"])


def test_outcomes_match_sklearn_confusion_matrix():
    y, p = fake_predictions(120, 4, seed=22, decimals=1)
    thresholds = choose_thresholds(y, p, "youden")
    result = outcomes(y, p, thresholds)
    assert result.shape == (120, 4) and set(np.unique(result)) <= {"TP", "FP", "FN", "TN"}
    counts = outcome_counts(result, classes=list("abcd"))
    assert list(counts.columns) == ["TP", "FP", "FN", "TN"]
    for c, name in enumerate("abcd"):
        tn, fp, fn, tp = confusion_matrix(y[:, c], p[:, c] >= thresholds[c]).ravel()
        assert counts.loc[name].tolist() == [tp, fp, fn, tn]
        assert counts.loc[name, "TP"] + counts.loc[name, "FN"] == y[:, c].sum()
        assert counts.loc[name].sum() == 120


def test_threshold_is_inclusive():
    y = np.array([[1], [0], [1]])
    p = np.array([[0.7], [0.3], [0.5]])
    assert outcomes(y, p, [0.5])[:, 0].tolist() == ["TP", "TN", "TP"]
    assert outcomes(y, p, 0.7)[:, 0].tolist() == ["TP", "TN", "FN"]


# ---------------------------------------------------------------- calibration

@pytest.mark.parametrize("n_bins", [10, 7, 1])
def test_calibration_equals_sklearn(n_bins):
    y, p = fake_predictions(200, 3, seed=23, decimals=1)  # many values exactly on bin edges
    p[:3] = [[0.0] * 3, [1.0] * 3, [0.5] * 3]
    table = calibration_table(y, p, n_bins=n_bins, classes=["a", "b", "c"])
    for c, name in enumerate("abc"):
        part = table[table["class"] == name]
        prob_true, prob_pred = calibration_curve(y[:, c], p[:, c], n_bins=n_bins,
                                                 strategy="uniform")
        np.testing.assert_allclose(part["observed_rate"], prob_true)
        np.testing.assert_allclose(part["mean_predicted"], prob_pred)
        assert part["count"].sum() == 200
    assert list(table.columns) == ["class", "bin", "bin_low", "bin_high", "mean_predicted",
                                   "observed_rate", "count"]


def test_brier_equals_sklearn():
    y, p = fake_predictions(90, 4, seed=24)
    y[:, 3] = 0  # defined even without positives
    np.testing.assert_allclose(brier_scores(y, p), sklearn_columns(brier_score_loss, y, p))


# ---------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("y_true,y_prob,needle", [
    (np.zeros((5, 3)), np.zeros((5, 2)), "same shape"),
    (np.zeros((5, 3)), np.zeros((4, 3)), "same shape"),
    (np.zeros((0, 3)), np.zeros((0, 3)), "at least one row"),
    (np.zeros((3, 2)), np.array([[0.1, 0.2], [1.2, 0.3], [0.1, 0.1]]), "y_prob must be"),
    (np.zeros((3, 2)), np.array([[0.1, -0.2], [0.2, 0.3], [0.1, 0.1]]), "y_prob must be"),
    (np.zeros((3, 2)), np.array([[0.1, np.nan], [0.2, 0.3], [0.1, 0.1]]), "y_prob must be"),
    (np.array([[1, 0], [-1, 0], [0, 1]]), np.full((3, 2), 0.5), "uncertainty policy"),
    (np.array([[1, 0], [2, 0], [0, 1]]), np.full((3, 2), 0.5), "only 0 and 1"),
    (np.array([[1, 0], [np.nan, 0], [0, 1]]), np.full((3, 2), 0.5), "only 0 and 1"),
    (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), "shape [N, C]"),
])
@pytest.mark.parametrize("function", [auroc, auprc, brier_scores, bootstrap_ci, per_class_table,
                                      choose_thresholds, calibration_table])
def test_bad_inputs_raise_clear_errors(function, y_true, y_prob, needle):
    with pytest.raises(MetricInputError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        function(y_true, y_prob)


def test_bad_options_raise_clear_errors():
    y, p = fake_predictions(20, 2, seed=25)
    with pytest.raises(ValueError, match="unknown method 'otsu'"):
        choose_thresholds(y, p, method="otsu")
    with pytest.raises(MetricInputError, match="groups must be one patient id per row"):
        bootstrap_ci(y, p, groups=np.arange(19))
    with pytest.raises(MetricInputError, match="missing ids"):
        bootstrap_ci(y, p, groups=[None] + list(range(19)))
    with pytest.raises(MetricInputError, match="n_boot"):
        bootstrap_ci(y, p, n_boot=0)
    with pytest.raises(MetricInputError, match="level"):
        bootstrap_ci(y, p, level=95)
    with pytest.raises(MetricInputError, match="thresholds must have shape"):
        outcomes(y, p, [0.5, 0.5, 0.5])
    with pytest.raises(MetricInputError, match="classes must have one name per column"):
        per_class_table(y, p, classes=["a"], n_boot=0)
    with pytest.raises(MetricInputError, match="outcomes must be one of"):
        outcome_counts(np.array([["TP", "XX"]]), classes=["a", "b"])
    with pytest.raises(MetricInputError, match="n_bins"):
        calibration_table(y, p, n_bins=0)


def test_string_patient_ids_accepted():
    y, p = fake_predictions(40, 2, seed=26)
    ids = np.array([f"patient{k // 2:05d}" for k in range(40)], dtype=object)
    result = bootstrap_ci(y, p, groups=list(ids), n_boot=100)
    assert (result["n_valid"] == 100).all()


# ---------------------------------------------------------------- figures

@pytest.fixture
def small_evaluation():
    y, p = fake_predictions(40, 4, seed=27, decimals=2)
    y[:, 2] = 0  # undefined: no positives
    return y, p, ["Cardiomegaly", "Edema", "Fracture", "Support Devices"]


def test_evaluation_figures_render(small_evaluation):
    y, p, classes = small_evaluation
    thresholds = choose_thresholds(y, p)
    table = per_class_table(y, p, classes=classes, n_boot=50)
    figures = [
        roc_pr_curves(y, p, classes, thresholds=thresholds, columns=3),
        roc_pr_curves(y, p, classes),
        reliability_diagram(calibration_table(y, p, classes=classes), classes,
                            brier=brier_scores(y, p)),
        outcome_bars(outcome_counts(outcomes(y, p, thresholds), classes)),
        auroc_comparison(table, STUDY_AUROC),
    ]
    for figure in figures:
        assert isinstance(figure, plt.Figure)
        figure.canvas.draw()  # layout and text really render
        plt.close(figure)


def test_roc_panel_of_undefined_class_says_why(small_evaluation):
    y, p, classes = small_evaluation
    figure = roc_pr_curves(y, p, classes)
    texts = [t.get_text() for ax in figure.axes for t in ax.texts]
    assert texts.count("undefined:\nno positives") == 2  # its ROC and its PR panel
    plt.close(figure)
