"""chexlib.explain.reported_maps and notebooks 04/05's outcome galleries, on the demo run."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from chexlib.checkpoint import model_from_checkpoint, weights_fingerprint
from chexlib.explain import MapStore, gradcam, lrp
from chexlib.explain.reported_maps import fill_cases, fill_store, outcome_explainer
from chexlib.plots import galleries
from chexlib.reported import ReportedImages
from chexlib.run import RunFolder

SIZE = 48  # conftest.TINY_SIZE


@pytest.fixture(scope="module")
def run(tiny_run):
    root, run_dir, _, _ = tiny_run
    model, _ = model_from_checkpoint(RunFolder(run_dir).checkpoint, image_size=SIZE)
    return ReportedImages(run_dir, root, SIZE), model.eval()


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_outcome_explainer_is_the_method_on_the_rows_for_the_observation(run):
    reported, model = run
    rows = [3, 0]
    lrp_maps = outcome_explainer(model, reported, "epsilon_plus_flat")(rows, "Edema")
    expected = lrp(model, reported.images(rows), ["Edema"], composite="epsilon_plus_flat")[:, 0]
    assert lrp_maps.shape == (2, SIZE, SIZE)
    torch.testing.assert_close(lrp_maps, expected)
    cam = outcome_explainer(model, reported, "gradcam-features.denseblock3")(rows, "Cardiomegaly")
    torch.testing.assert_close(cam, gradcam(model, reported.images(rows), ["Cardiomegaly"],
                                            layer="features.denseblock3")[:, 0])


def test_fill_store_stores_every_class_of_the_first_n_images_once(run, tmp_path):
    reported, model = run
    store = MapStore(tmp_path, model=weights_fingerprint(model), durable=False)
    computed, seconds = fill_store(store, model, reported, "gradcam", 3, batch_size=2)
    assert computed == 3 and seconds >= 0
    expected = gradcam(model, reported.images([0, 1, 2])).numpy()
    for r in range(3):
        np.testing.assert_allclose(store.load("gradcam", reported.paths[r]), expected[r],
                                   rtol=1e-3, atol=1e-6)  # float16 storage
    assert not store.has("gradcam", reported.paths[3])
    assert fill_store(store, model, reported, "gradcam", 4)[0] == 1  # only the new image
    assert fill_store(store, model, reported, "gradcam", 1000)[0] == len(reported) - 4


def test_fill_store_also_stores_the_rows_the_galleries_show(run, tmp_path):
    from chexlib.explain.reported_maps import focus_rows

    reported, model = run
    picked = focus_rows(reported, ["Edema", "Support Devices"])
    expected_rows = sorted({r for name in ("Edema", "Support Devices")
                            for kind in ("TP", "FP", "FN") for r in reported.pick(name, kind, 1)})
    assert picked == expected_rows and picked  # the demo run has cases
    extra = [r for r in picked if r >= 2]
    store = MapStore(tmp_path, model=weights_fingerprint(model), durable=False)
    computed, _ = fill_store(store, model, reported, "gradcam", 2, extra_rows=extra)
    assert computed == 2 + len(extra)
    # Each stored file holds its own image's maps (not those of the k-th image of the batch).
    reference = gradcam(model, reported.images(extra)).numpy()
    for k, r in enumerate(extra):
        np.testing.assert_allclose(store.load("gradcam", reported.paths[r]), reference[k],
                                   rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match=r"extra_rows=\[-1, 5000\]: expected reported rows"):
        fill_store(store, model, reported, "gradcam", 2, extra_rows=[-1, 3, 5000])


def test_fill_cases_stores_every_class_of_the_rows_under_each_method(run, tmp_path):
    reported, model = run
    store = MapStore(tmp_path, model=weights_fingerprint(model), durable=False)
    rows = [5, 1]
    computed, seconds = fill_cases(store, model, reported, ["gradcam", "gradcam_pp"], rows)
    assert computed == 4 and seconds >= 0
    expected = gradcam(model, reported.images(rows)).numpy()
    for k, r in enumerate(rows):
        np.testing.assert_allclose(store.load("gradcam", reported.paths[r]), expected[k],
                                   rtol=1e-3, atol=1e-6)
        assert store.has("gradcam_pp", reported.paths[r])
    assert not store.has("gradcam", reported.paths[0])  # no leading images
    assert fill_cases(store, model, reported, ["gradcam", "epsilon"], rows)[0] == 2  # new only
    with pytest.raises(ValueError, match=r"extra_rows=\[9999\]"):
        fill_cases(store, model, reported, ["gradcam"], [9999])


def test_outcome_galleries_are_outcome_gallery_per_observation_with_names(run):
    reported, _ = run
    calls = []

    def explain(rows, observation):
        calls.append((list(rows), observation))
        return np.stack([np.full((SIZE, SIZE), float(r)) for r in rows])

    names = ["Edema", "Support Devices"]
    drawn = galleries.outcome_galleries(reported, names, explain, "04_outcomes", n=1, method="m")
    out = [next(drawn)]
    assert [c[1] for c in calls] == ["Edema"]  # lazy: one figure at a time
    out += list(drawn)
    assert [c[1] for c in calls] == names
    assert [name for name, _, _ in out] == ["04_outcomes_Edema", "04_outcomes_Support_Devices"]
    for (_, fig, note), observation in zip(out, names):
        single, single_note = galleries.outcome_gallery(reported, observation, explain, n=1,
                                                        method="m")
        assert note == single_note
        assert fig._suptitle.get_text() == single._suptitle.get_text()
        assert fig._suptitle.get_text() == f"{observation}: correct and incorrect predictions · m"
        assert [ax.get_title() for ax in fig.axes] == [ax.get_title() for ax in single.axes]
    assert [c[0] for c in calls[:2]] == [c[0] for c in calls[2:]]  # the same images


def test_outcome_galleries_pass_on_the_note_when_nothing_is_left(run):
    reported, _ = run
    out = list(galleries.outcome_galleries(reported, ["Edema"], lambda r, o: None, "05_outcomes",
                                           outcomes=("TN",), n=0))
    assert len(out) == 1
    name, fig, note = out[0]
    assert name == "05_outcomes_Edema" and fig is None and note == (
        "Edema: no TN case(s) among the reported images")
