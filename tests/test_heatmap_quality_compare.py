"""chexlib.heatmap_quality.compare and .summaries on the demo run: pairs, maps and masks per pair,
summaries, verdicts and key insights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from chexlib.checkpoint import model_from_checkpoint
from chexlib.heatmap_quality.compare import (
    evaluation_pairs,
    method_maps,
    pair_maps,
    pair_masks,
    shortcut_correlation,
)
from chexlib.heatmap_quality.summaries import bootstrap_mean, summary_table
from chexlib.explain import explain
from chexlib.explain.inputs import explainable
from chexlib.methods import DEFAULT_COMPOSITE
from chexlib.observations import OBSERVATIONS
from chexlib.reported import ReportedImages
from chexlib.run import RunFolder

SIZE = 48  # conftest.TINY_SIZE


@pytest.fixture(scope="module")
def run(tiny_run):
    root, run_dir, _, outcomes = tiny_run
    model, _ = model_from_checkpoint(RunFolder(run_dir).checkpoint, image_size=SIZE)
    return ReportedImages(run_dir, root, SIZE), model, outcomes


def test_pairs_follow_the_outcomes(run):
    reported, _, outcomes = run
    pairs = evaluation_pairs(reported, n=2, observations=["Edema", "Support Devices"])
    for name in ("Edema", "Support Devices"):
        j = OBSERVATIONS.index(name)
        for kind in ("TP", "FP", "FN"):
            chosen = pairs[(pairs.observation == name) & (pairs.outcome == kind)]
            assert len(chosen) == min(2, int((outcomes[:, j] == kind).sum()))
            assert (outcomes[chosen["row"], j] == kind).all()
    assert list(pairs["row"]) == sorted(pairs["row"])
    assert pairs["patient"].str.fullmatch(r"patient\d+").all()  # the intervals' unit
    every = evaluation_pairs(reported, None, outcomes=("TP", "FN"))
    for kind in ("TP", "FN"):
        assert (every["outcome"] == kind).sum() == int((outcomes == kind).sum())


def test_signed_gradcam_is_gradcam_without_its_final_relu(run):
    from chexlib.explain import gradcam
    from chexlib.heatmap_quality.compare import SIGNED_GRADCAM

    reported, model, _ = run
    pairs = evaluation_pairs(reported, n=1, observations=["Edema", "Cardiomegaly"])
    signed = pair_maps(model, reported, pairs, SIGNED_GRADCAM)
    for i, (row, k) in enumerate(zip(pairs["row"], pairs["class"])):
        expected = gradcam(model, reported.images([int(row)]), [int(k)], relu=False)[0, 0]
        torch.testing.assert_close(torch.from_numpy(signed[i]), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.clip(signed, 0, None), pair_maps(model, reported, pairs, "gradcam"),
                               rtol=1e-5, atol=1e-7)  # its positive part is Grad-CAM


def test_maps_and_masks_per_pair(run):
    reported, model, _ = run
    pairs = evaluation_pairs(reported, n=1, observations=["Edema", "Cardiomegaly", "Fracture"])
    maps = pair_maps(model, reported, pairs, "gradcam")
    for i, (row, k) in enumerate(zip(pairs["row"], pairs["class"])):
        expected = explain(model, reported.images([int(row)]), "gradcam", [int(k)])[0, 0]
        torch.testing.assert_close(torch.from_numpy(maps[i]), expected, rtol=1e-5, atol=1e-7)
    masks = pair_masks(reported, pairs)
    for i, (row, name) in enumerate(zip(pairs["row"], pairs["observation"])):
        outline = reported.outline(int(row), name)
        assert masks[i].any() == (outline is not None) == bool(pairs["has_mask"][i])
    random = pair_maps(model, reported, pairs, "random", seed=3)
    assert random.shape == maps.shape and np.array_equal(
        random, pair_maps(model, reported, pairs, "random", seed=3))


def test_pairs_of_one_image_share_its_forward_pass_and_keep_their_own_maps(run):
    reported, model, _ = run
    pairs = evaluation_pairs(reported, None, observations=["Edema", "Cardiomegaly",
                                                           "Support Devices", "Lung Opacity"])
    pairs = pairs.iloc[::-1].reset_index(drop=True)  # any order of the pairs works
    per_image = pairs.groupby("row").size()
    assert per_image.max() >= 3 and (per_image == 1).any()  # batches of mixed pair counts
    calls = []
    net = explainable(model, "fold")
    hook = net.features.conv0.register_forward_hook(lambda *_: calls.append(1))
    try:
        maps = pair_maps(model, reported, pairs, "epsilon", batch_size=4)
    finally:
        hook.remove()
    assert len(calls) == -(-pairs["row"].nunique() // 4)  # one forward pass per batch of images
    for i, (row, k) in enumerate(zip(pairs["row"], pairs["class"])):
        expected = explain(model, reported.images([int(row)]), "epsilon", [int(k)])[0, 0]
        torch.testing.assert_close(torch.from_numpy(maps[i]), expected, rtol=1e-4,
                                   atol=1e-5 * float(expected.abs().max()))


def test_method_maps_make_the_combination_from_its_parts(run):
    reported, model, _ = run
    pairs = evaluation_pairs(reported, n=1, observations=["Edema", "Cardiomegaly"])
    maps = method_maps(model, reported, pairs, ["lrp_gradcam", DEFAULT_COMPOSITE, "gradcam"])
    assert list(maps) == ["lrp_gradcam", DEFAULT_COMPOSITE, "gradcam"]
    direct = pair_maps(model, reported, pairs, "lrp_gradcam")
    np.testing.assert_allclose(maps["lrp_gradcam"], direct, rtol=1e-5,
                               atol=1e-6 * float(np.abs(direct).max()))
    alone = method_maps(model, reported, pairs, ["lrp_gradcam"])  # no parts: computed itself
    np.testing.assert_array_equal(alone["lrp_gradcam"], direct)


def test_bootstrap_and_summary():
    values = np.array([0.1, 0.5, 0.9, np.nan, 0.3])
    mean, low, high = bootstrap_mean(values, n_boot=500)
    assert mean == pytest.approx(0.45) and low < mean < high
    assert np.isnan(bootstrap_mean([np.nan])[0])
    scores = pd.DataFrame({"method": ["a", "a", "b"], "m": [1.0, 3.0, np.nan]})
    table = summary_table(scores, ["method"], ["m"], n_boot=100)
    assert list(table["m"][:1]) == [2.0] and list(table["m n"]) == [2, 0]


def test_shortcut_correlation_is_phi(run):
    reported, _, _ = run
    phi = shortcut_correlation(reported)
    marker = np.array([reported.outline(r, "shortcut") is not None for r in range(len(reported))])
    assert 0 < marker.sum() < len(marker)  # the demo run has images with and without it
    checked = 0
    for j, name in enumerate(OBSERVATIONS):
        y = reported.labels[:, j]
        if y.std() > 0:
            assert phi[name] == pytest.approx(np.corrcoef(marker, y)[0, 1])
            checked += 1
        else:  # a constant label has no correlation: NaN, not 0
            assert np.isnan(phi[name])
    assert checked >= 5


def test_key_insights_follow_the_numbers():
    from chexlib.heatmap_quality.summaries import key_insights

    rng = np.random.default_rng(0)
    scores = pd.DataFrame({
        "method": ["a"] * 40 + ["b"] * 40 + ["random"] * 40,
        "outcome": (["TP"] * 20 + ["FN"] * 20) * 3,
        "mass": np.concatenate([rng.uniform(0.7, 0.9, 20), rng.uniform(0.0, 0.1, 20),
                                rng.uniform(0.2, 0.3, 40), rng.uniform(0.0, 0.05, 40)])})
    localisation = summary_table(scores, ["method"], ["mass"], n_boot=200)
    aopc = pd.DataFrame({"method": ["a", "a", "b", "b", "random", "random"],
                         "order": ["morf", "lerf"] * 3, "aopc": [0.2, 0.1, 0.9, 0.0, 0.0, 0.0]})
    faithfulness = summary_table(aopc, ["method", "order"], ["aopc"], n_boot=50)
    share = pd.DataFrame({"method": ["a", "b", "random"] * 2,
                          "observation group": ["correlated with the marker"] * 3 + ["other"] * 3,
                          "share": [0.1, 0.6, 0.02, 0.1, 0.1, 0.02]})
    shortcut = summary_table(share, ["method", "observation group"], ["share"], n_boot=50)
    lines = key_insights(localisation, faithfulness, shortcut, scores, chance=0.03)
    assert lines[0].startswith("Localisation: a puts the largest share") and "b" in lines[0]
    assert "over 40 of 40 maps" in lines[0]  # what the mean is over (no blank column here)
    assert "do not overlap" in lines[0]
    assert "for 1 of 2 methods" in lines[1] and ": a." in lines[1]
    # The example names the method, both means with their intervals, and the n behind each.
    tp = scores[(scores["method"] == "a") & (scores["outcome"] == "TP")]["mass"].mean()
    assert f"The widest gap, a: mass {tp:.2f} (" in lines[1] and "n=20) on true" in lines[1]
    assert "in the order of the b map" in lines[2] and "0.90" in lines[2]
    morf = faithfulness[(faithfulness["method"] == "b") & (faithfulness["order"] == "morf")].iloc[0]
    assert (f"b ({morf['aopc']:.2f} ({morf['aopc low']:.2f}-{morf['aopc high']:.2f}, n=1)"
            in lines[2])
    random = faithfulness[(faithfulness["method"] == "random")
                          & (faithfulness["order"] == "morf")].iloc[0]
    apart = morf["aopc low"] > random["aopc high"]  # one value each: 0.9 against 0.0
    assert apart and "the intervals do not overlap" in lines[2]
    assert "b reveals it most" in lines[3] and "0.60" in lines[3] and "over 1 map (" in lines[3]


def test_key_insights_name_methods_as_the_browser_does():
    from chexlib.heatmap_quality.summaries import key_insights

    rng = np.random.default_rng(1)
    scores = pd.DataFrame({
        "method": ["alpha2_beta1"] * 40 + ["gradcam"] * 40,
        "outcome": (["TP"] * 20 + ["FN"] * 20) * 2,
        "mass": np.concatenate([rng.uniform(0.7, 0.9, 20), rng.uniform(0.0, 0.1, 20),
                                rng.uniform(0.2, 0.3, 40)])})
    localisation = summary_table(scores, ["method"], ["mass"], n_boot=100)
    aopc = pd.DataFrame({"method": ["alpha2_beta1"] * 2 + ["gradcam"] * 2,
                         "order": ["morf", "lerf"] * 2, "aopc": [0.9, 0.1, 0.2, 0.1]})
    faithfulness = summary_table(aopc, ["method", "order"], ["aopc"], n_boot=20)
    share = pd.DataFrame({"method": ["alpha2_beta1", "gradcam"],
                          "observation group": ["correlated with the marker"] * 2,
                          "share": [0.5, 0.1]})
    shortcut = summary_table(share, ["method", "observation group"], ["share"], n_boot=20)
    text = " ".join(key_insights(localisation, faithfulness, shortcut, scores, chance=0.03))
    assert "alpha2_beta1" not in text and "gradcam" not in text
    assert "Localisation: LRP-α2β1 puts" in text and "order of the LRP-α2β1 map" in text
    assert "The widest gap, LRP-α2β1:" in text and "LRP-α2β1 reveals it most" in text


def test_localisation_scores_cover_every_method_on_masked_pairs(run):
    from chexlib.heatmap_quality import localisation
    from chexlib.heatmap_quality.compare import localisation_scores

    reported, model, _ = run
    pairs = evaluation_pairs(reported, n=2)
    masks = pair_masks(reported, pairs)
    maps = {"gradcam": pair_maps(model, reported, pairs, "gradcam"),
            "random": pair_maps(model, reported, pairs, "random")}
    scores = localisation_scores(pairs, maps, masks)
    keep = pairs["has_mask"].to_numpy()
    assert keep.sum() > 0 and len(scores) == 2 * keep.sum()
    grad = scores[scores["method"] == "gradcam"]
    np.testing.assert_array_equal(
        grad["mass"], localisation.relevance_mass_accuracy(maps["gradcam"][keep], masks[keep]))
    assert list(grad["row"]) == list(pairs["row"][keep])


def test_faithfulness_sample_is_a_seeded_shuffle_in_pair_order():
    from chexlib.heatmap_quality.compare import faithfulness_sample

    pairs = pd.DataFrame({"row": np.arange(10) * 3, "class": np.arange(10) % 14})
    sample = faithfulness_sample(pairs, 4, seed=7)
    expected = np.sort(np.random.RandomState(7).permutation(10)[:4])
    np.testing.assert_array_equal(sample.index, expected)
    np.testing.assert_array_equal(sample["row"], pairs["row"].to_numpy()[expected])
    assert len(faithfulness_sample(pairs, 50)) == 10  # fewer pairs than asked: all of them


def test_faithfulness_curves_are_region_perturbation_and_aopc(run):
    from chexlib.heatmap_quality import faithfulness
    from chexlib.heatmap_quality.compare import faithfulness_curves, faithfulness_sample

    reported, model, _ = run
    pairs = evaluation_pairs(reported, n=1, observations=["Edema", "Cardiomegaly"])
    maps = {"gradcam": pair_maps(model, reported, pairs, "gradcam"),
            "random": pair_maps(model, reported, pairs, "random", seed=1)}
    subset = faithfulness_sample(pairs, 3, seed=2)
    curves, scores = faithfulness_curves(model, reported, subset, maps, ["gradcam", "random"],
                                         fill="mean", steps=4, batch_size=8, seed=5)
    assert list(curves) == [("gradcam", "morf"), ("gradcam", "lerf"), ("random", "morf"),
                            ("random", "lerf")]
    images = reported.images(subset["row"].tolist())
    for k, (name, order) in enumerate(curves):
        expected = faithfulness.region_perturbation(
            model, images, maps[name][subset.index], subset["class"].tolist(), order=order,
            patch=8, steps=4, fill="mean", batch_size=8, seed=5)
        np.testing.assert_allclose(curves[name, order], expected, rtol=1e-6, atol=1e-6)
        block = scores.iloc[k * len(subset):(k + 1) * len(subset)]
        assert (block["method"] == name).all() and (block["order"] == order).all()
        np.testing.assert_allclose(block["aopc"], faithfulness.aopc(expected), rtol=1e-6,
                                   atol=1e-6)
        assert list(block["row"]) == list(subset["row"])
    assert len(scores) == 4 * len(subset)


def test_sanity_sample_prefers_true_positives():
    from chexlib.heatmap_quality.compare import sanity_sample

    pairs = pd.DataFrame({"row": range(8), "outcome": ["FP", "TP", "FN", "TP", "TP", "FP", "TP",
                                                       "TP"]})
    assert list(sanity_sample(pairs, 3)["row"]) == [1, 3, 4]
    no_tp = pairs.assign(outcome="FN")
    assert list(sanity_sample(no_tp, 2)["row"]) == [0, 1]


def test_randomisation_check_runs_the_cascade_on_the_named_methods(run):
    from chexlib.heatmap_quality import sanity
    from chexlib.heatmap_quality.compare import randomisation_check, sanity_sample

    reported, model, _ = run
    pairs = evaluation_pairs(reported, n=1, observations=["Edema", "Cardiomegaly", "Fracture"])
    blocks = sanity.CASCADE[:2]
    # The combination reuses its parts' maps of the same randomised network: still the
    # combination's own maps.
    names = [DEFAULT_COMPOSITE, "gradcam", "lrp_gradcam"]
    table = randomisation_check(model, reported, pairs, names, n=2, seed=3)
    sample = sanity_sample(pairs, 2)
    expected = sanity.cascading_randomisation(
        model, reported.images(sample["row"].tolist()), sample["class"].tolist(),
        {name: lambda net, x, c, name=name: explain(net, x, name, c) for name in names}, seed=3)
    pd.testing.assert_frame_equal(table, expected, atol=1e-6, rtol=1e-6)
    assert set(table["block"]) >= set(blocks) and set(table["method"]) == set(names)
    assert (table.loc[table["step"] == 0, "spearman"] == 1.0).all()


def test_shortcut_shares_are_relevance_mass_on_the_marker():
    from chexlib.heatmap_quality.compare import MARKER_GROUP, shortcut_shares

    rng = np.random.default_rng(0)
    pairs = pd.DataFrame({"row": [0, 1, 2, 3], "observation": ["Edema", "Support Devices",
                                                               "Edema", "Fracture"]})
    marker = np.zeros((4, 6, 6), dtype=bool)
    marker[0, :2, :3] = True
    marker[1, 4:, 4:] = True
    marker[3, 0, 0] = True  # pair 2: no marker on its image
    maps = {"a": rng.normal(size=(4, 6, 6)), "b": rng.normal(size=(4, 6, 6))}
    shares = shortcut_shares(pairs, maps, marker, {"Support Devices"})
    assert list(shares["method"]) == ["a"] * 3 + ["b"] * 3
    assert list(shares["row"]) == [0, 1, 3] * 2
    for (name, m), start in zip(maps.items(), (0, 3)):
        positive = np.clip(m, 0, None)
        by_hand = [positive[i][marker[i]].sum() / positive[i].sum() for i in (0, 1, 3)]
        np.testing.assert_allclose(shares["share"][start:start + 3], by_hand, rtol=1e-6)
    assert list(shares["observation group"][:3]) == ["other", MARKER_GROUP, "other"]


def test_metric_summary_joins_the_tables_by_method():
    from chexlib.heatmap_quality.summaries import metric_summary

    localisation_summary = pd.DataFrame({
        "method": ["b", "a", "random"], "pointing": [0.5, 1.0, 0.0], "mass": [0.4, 0.6, 0.1],
        "mass low": [0.3, 0.5, 0.0], "rank": [0.3, 0.2, 0.1], "iou": [0.2, 0.25, 0.05]})
    faithfulness_summary = pd.DataFrame({
        "method": ["a", "a", "b", "b"], "order": ["morf", "lerf", "lerf", "morf"],
        "aopc": [0.9, 0.2, 0.5, 0.6]})
    shortcut = pd.DataFrame({"method": ["a", "a", "b", "random", "random"],
                             "share": [0.1, 0.3, 0.5, 0.0, 0.2]})
    summary = metric_summary(localisation_summary, faithfulness_summary, shortcut)
    assert list(summary.index) == ["b", "a", "random"]
    assert list(summary.columns) == ["pointing", "mass", "rank", "iou", "AOPC gap", "AOPC MoRF",
                                     "AOPC LeRF", "shortcut"]
    assert summary.loc["a", "AOPC MoRF"] == 0.9 and summary.loc["a", "AOPC LeRF"] == 0.2
    assert summary.loc["a", "AOPC gap"] == pytest.approx(0.9 - 0.2)
    assert summary.loc["b", "AOPC gap"] == pytest.approx(0.6 - 0.5)
    assert np.isnan(summary.loc["random", "AOPC gap"])  # not measured: NaN, not 0
    assert list(summary["shortcut"]) == pytest.approx([0.5, 0.2, 0.1])
    assert list(summary["mass"]) == [0.4, 0.6, 0.1]
    sensitivity = pd.DataFrame({"method": ["a", "a", "b"], "class correlation": [0.9, 0.7, 0.1]})
    with_sensitivity = metric_summary(localisation_summary.assign(blank_rate=[0.0, 0.5, 0.0]),
                                      faithfulness_summary, shortcut, sensitivity)
    assert list(with_sensitivity.columns) == ["blank_rate", "pointing", "mass", "rank", "iou",
                                              "AOPC gap", "AOPC MoRF", "AOPC LeRF", "shortcut",
                                              "class correlation"]
    signed = metric_summary(localisation_summary, pd.concat([faithfulness_summary, pd.DataFrame(
        {"method": ["s", "s"], "order": ["morf", "lerf"], "aopc": [0.5, -0.4]})]), shortcut)
    assert list(signed.index) == ["b", "a", "random", "s"]  # a faithfulness-only method
    assert signed.loc["s", "AOPC gap"] == pytest.approx(0.9) and np.isnan(signed.loc["s", "mass"])
    assert with_sensitivity.loc["a", "class correlation"] == pytest.approx(0.8)
    assert np.isnan(with_sensitivity.loc["random", "class correlation"])


def test_one_value_per_patient_makes_the_cluster_bootstrap_the_plain_one():
    values = np.random.default_rng(1).uniform(size=30)
    plain = bootstrap_mean(values, n_boot=300, seed=4)
    clustered = bootstrap_mean(values, n_boot=300, seed=4, groups=[f"p{i:02d}" for i in range(30)])
    assert clustered == pytest.approx(plain)


def test_the_cluster_bootstrap_widens_intervals_of_correlated_pairs():
    # 10 patients, 6 pairs each, pairs of one patient nearly equal: 10 independent values, not 60.
    rng = np.random.default_rng(2)
    per_patient = rng.uniform(size=10)
    values = np.repeat(per_patient, 6) + rng.normal(scale=0.01, size=60)
    patients = np.repeat([f"p{i}" for i in range(10)], 6)
    _, low, high = bootstrap_mean(values, n_boot=2000, seed=0, groups=patients)
    _, naive_low, naive_high = bootstrap_mean(values, n_boot=2000, seed=0)
    assert (high - low) > 1.8 * (naive_high - naive_low)  # about sqrt(6) = 2.4 wider
    # Reference: the plain bootstrap of the 10 patient means (equal patient sizes).
    _, ref_low, ref_high = bootstrap_mean(values.reshape(10, 6).mean(axis=1), n_boot=2000, seed=5)
    assert low == pytest.approx(ref_low, abs=0.03) and high == pytest.approx(ref_high, abs=0.03)


def test_summaries_report_blank_rate_and_n_and_score_the_positive_part():
    from chexlib.heatmap_quality.compare import localisation_scores
    from chexlib.heatmap_quality.summaries import localisation_by_observation

    size = 8
    pairs = pd.DataFrame({"row": [0, 1, 2, 3], "observation": ["Edema"] * 3 + ["Cardiomegaly"],
                          "class": [5, 5, 5, 2], "outcome": ["TP", "TP", "FN", "TP"],
                          "probability": 0.5, "has_mask": True,
                          "patient": ["p1", "p1", "p2", "p3"]})
    masks = np.zeros((4, size, size), dtype=bool)
    masks[:, :4, :4] = True  # a quarter: chance 0.25
    signed = np.full((4, size, size), -1.0)  # blank: only negative relevance
    signed[1, 0, 0] = 2.0  # one positive pixel, inside
    signed[3, 7, 7] = 2.0  # one positive pixel, outside
    scores = localisation_scores(pairs, {"m": signed}, masks)
    np.testing.assert_array_equal(scores["blank"], [True, False, True, False])
    assert np.isnan(scores["mass"][0]) and scores["mass"][1] == 1.0 and scores["mass"][3] == 0.0
    # Rank on the positive part: the one positive pixel, then the 63 zeros tied (-1 clipped).
    assert scores["rank"][1] == pytest.approx((1 + 15 * 15 / 63) / 16)
    table = summary_table(scores, ["method"], ["mass"], n_boot=50)
    assert table["blank_rate"][0] == 0.5 and table["mass n"][0] == 2 and table["pairs"][0] == 4
    by_observation = localisation_by_observation(scores, masks, pairs, {"Edema": 0.8})
    edema_tp = by_observation[(by_observation["observation"] == "Edema")
                              & (by_observation["outcome"] == "TP")].iloc[0]
    assert edema_tp["n"] == 2 and edema_tp["blank_rate"] == 0.5 and edema_tp["mass"] == 1.0
    assert edema_tp["chance"] == 0.25 and edema_tp["auroc"] == 0.8
    assert np.isnan(by_observation.loc[by_observation["observation"] == "Cardiomegaly",
                                       "auroc"].iloc[0])
    assert list(by_observation.columns) == ["observation", "method", "outcome", "n", "chance",
                                            "blank_rate", "pointing", "mass", "rank", "iou",
                                            "auroc"]


def test_class_map_correlation_is_one_for_class_blind_maps():
    from scipy.stats import spearmanr

    from chexlib.heatmap_quality.sanity import class_map_correlation

    rng = np.random.default_rng(0)
    same = np.repeat(rng.normal(size=(2, 1, 6, 6)), 4, axis=1)  # every class the same map
    assert class_map_correlation(same) == pytest.approx([1.0, 1.0])
    own = rng.normal(size=(1, 3, 6, 6))
    expected = np.mean([spearmanr(own[0, i].ravel(), own[0, j].ravel()).statistic
                        for i, j in ((0, 1), (0, 2), (1, 2))])
    assert class_map_correlation(own)[0] == pytest.approx(expected)


def test_class_sensitivity_is_the_mean_spearman_of_one_images_class_maps(run):
    from scipy.stats import spearmanr

    from chexlib.heatmap_quality.compare import class_sensitivity

    reported, model, _ = run
    table = class_sensitivity(model, reported, [0, 1], ["gradcam", "z"])
    assert list(table.columns) == ["row", "method", "class correlation"] and len(table) == 4
    # Reference: scipy over the 91 pairs of image 1's 14 maps under z, skipping constant maps.
    maps = explain(model, reported.images([0, 1]), "z", list(range(14)))[1].numpy()  # same batch
    rho = [spearmanr(maps[i].ravel(), maps[j].ravel()).statistic
           for i in range(14) for j in range(i + 1, 14)]
    expected = np.nanmean(rho)
    got = table[(table["row"] == 1) & (table["method"] == "z")]["class correlation"].item()
    assert got == pytest.approx(expected, abs=1e-9)


def test_masked_pair_scores_take_every_tp_and_fn_pair_with_a_mask(run):
    from chexlib.heatmap_quality.compare import masked_pair_scores

    reported, model, outcomes = run
    pairs, masks, scores = masked_pair_scores(model, reported, ["gradcam", "random"])
    expected = sum(1 for r in range(len(reported)) for j, name in enumerate(OBSERVATIONS)
                   if outcomes[r, j] in ("TP", "FN") and reported.outline(r, name) is not None)
    assert len(pairs) == expected > 0 and pairs["has_mask"].all() and masks.any(axis=(1, 2)).all()
    assert list(scores["method"].unique()) == ["gradcam", "random"] and len(scores) == 2 * expected


def test_class_aurocs_reads_metrics_json_and_names_a_malformed_file(tmp_path):
    import json

    from chexlib.artefacts import class_aurocs
    from chexlib.errors import LabelFileError

    good = tmp_path / "metrics.json"
    good.write_text(json.dumps({"per_class": {"Edema": {"auroc": 0.9}, "Fracture": {"auroc": None}},
                                "summary": {}}))
    aurocs = class_aurocs(good)
    assert aurocs["Edema"] == 0.9 and np.isnan(aurocs["Fracture"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"per_class": {"Edema": {"AUC": 0.9}}}))
    with pytest.raises(LabelFileError, match="bad.json.*auroc"):
        class_aurocs(bad)


def test_observation_verdicts_claim_only_what_the_interval_supports():
    from chexlib.heatmap_quality.summaries import key_insights, observation_verdicts

    rng = np.random.default_rng(0)
    rows = []
    for name, centre in (("Edema", 0.9), ("Cardiomegaly", 0.25), ("Fracture", 0.02)):
        for i in range(20):
            mass = np.clip(centre + rng.normal(scale=0.05), 0, 1)
            rows.append({"method": "m", "outcome": "TP", "observation": name, "mass": mass,
                         "chance": 0.25, "blank": False, "patient": f"{name}{i}"})
    rows.append({"method": "m", "outcome": "TP", "observation": "Atelectasis", "mass": 0.99,
                 "chance": 0.25, "blank": False, "patient": "one"})  # a single pair
    verdicts = observation_verdicts(pd.DataFrame(rows), "m").set_index("observation")
    assert verdicts.loc["Edema", "verdict"] == "localises"
    assert verdicts.loc["Fracture", "verdict"] == "below chance"
    assert verdicts.loc["Cardiomegaly", "verdict"] == "undetermined"  # at chance
    assert verdicts.loc["Atelectasis", "verdict"] == "undetermined" and verdicts.loc[
        "Atelectasis", "n"] == 1
    table = observation_verdicts(pd.DataFrame(rows), "m")
    empty = pd.DataFrame(columns=["method", "mass", "mass low", "mass high"])
    line = key_insights(empty, pd.DataFrame(), pd.DataFrame(columns=["observation group",
                                                                     "method", "share"]),
                        pd.DataFrame(columns=["outcome", "method", "mass"]), 0.25, table)[1]
    assert "localises Edema (n=20)" in line and "below chance Fracture (n=20)" in line
    assert "Cardiomegaly (n=20), Atelectasis (n=1)" in line


def test_chexlocalize_evaluation_scores_the_ground_truth_images(run):
    import torch.nn.functional as F

    from chexlib.heatmap_quality.chexlocalize import LOCALIZED_OBSERVATIONS
    from chexlib.heatmap_quality.compare import chexlocalize_evaluation
    from chexlib.masks import rle_encode

    reported, model, _ = run
    frame = (60, 50)  # a full-resolution frame other than the model's square input
    box = np.zeros(frame, dtype=bool)
    box[10:40, 5:30] = True
    truth = {}
    for row in (0, 1):  # two reported images get ground truth; Cardiomegaly only in the first
        truth[reported.image_id(row)] = {
            name: rle_encode(box if (name == "Cardiomegaly" and row == 0) else
                             np.zeros(frame, dtype=bool)) for name in LOCALIZED_OBSERVATIONS}
    table = chexlocalize_evaluation(model, reported, truth, ["gradcam"], n_boot=40)
    hit = table.loc[("gradcam", "hit rate", "Cardiomegaly")]
    assert hit["n"] == 1  # only the image with the finding counts
    # Hand computation: bilinear upsampling to the frame, the first maximum inside the box?
    k = OBSERVATIONS.index("Cardiomegaly")
    m = explain(model, reported.images([0]), "gradcam", [k])[0, 0]
    up = F.interpolate(m[None, None], size=frame, mode="bilinear", align_corners=False)[0, 0]
    peak = np.unravel_index(int(up.argmax()), frame)
    assert hit["estimate"] == float(box[peak])
    assert np.isnan(table.loc[("gradcam", "hit rate", "Edema"), "estimate"])  # no finding anywhere
    assert chexlocalize_evaluation(model, reported, {}, ["gradcam"]).empty


def test_morf_insight_says_whether_the_interval_clears_random_removal():
    from chexlib.heatmap_quality.summaries import _morf_apart

    table = pd.DataFrame({"method": ["x", "random"], "order": ["morf", "morf"],
                          "aopc": [3.06, 1.23], "aopc low": [1.81, 0.23],
                          "aopc high": [4.35, 2.12]})
    assert "intervals overlap" in _morf_apart(table, "x")  # 1.81 < 2.12
    table.loc[0, "aopc low"] = 2.5
    assert _morf_apart(table, "x") == ": the intervals do not overlap"
    assert _morf_apart(table.iloc[:1], "x") == ""  # no random order measured: nothing said
