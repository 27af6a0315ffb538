"""chexlib.methods, the registry of explanation methods: today's names and order, the README's
table, and "adding a method is one entry", shown with throw-away methods registered here.

References: the method names and order the notebooks, the store and the comparison used before
the registry (written out below), the README's text, and the throw-away methods' own functions.
"""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from chexlib import methods
from chexlib import params as P
from chexlib.__main__ import main
from chexlib.browser import BrowserState, MapSource
from chexlib.errors import ParameterError
from chexlib.explain import explain, lrp, make_composite
from chexlib.explain.dispatch import method_names, parse_method
from chexlib.explain.inputs import class_indices
from chexlib.explain.store import MapStore
from chexlib.heatmap_quality.compare import RANDOM, pair_maps

README = Path(__file__).resolve().parents[1] / "README.md"
FOLDED = ["epsilon", "z", "alpha2_beta1", "zplus", "epsilon_plus_flat", "epsilon_gamma_box",
          "montavon2019", "montavon2019_epsilon_pixels"]
COMPOSITES = FOLDED + [f"{name}-pass" for name in FOLDED]
IDS = ["patient00001_study1_view1_frontal", "patient00002_study1_view1_frontal",
       "patient00003_study2_view1_lateral"]


def test_names_and_order_are_those_of_before():
    assert list(methods.LRP_COMPOSITES) == COMPOSITES
    assert list(methods.CAM_METHODS) == ["gradcam", "gradcam_pp"]
    assert list(methods.COMBINED_METHODS) == ["lrp_gradcam"]
    assert list(methods.BASELINES) == [RANDOM] == ["random"]
    assert method_names() == [*COMPOSITES, "gradcam", "gradcam_pp", "lrp_gradcam"]
    assert method_names(["relu", "features.denseblock3"])[16:20] == [
        "gradcam", "gradcam-features.denseblock3", "gradcam_pp", "gradcam_pp-features.denseblock3"]
    assert methods.comparison_methods(["zplus", "epsilon"]) == [
        "zplus", "epsilon", "gradcam", "gradcam_pp", "lrp_gradcam", "random"]
    assert parse_method("gradcam") == ("gradcam", "relu")
    assert parse_method("lrp_gradcam") == ("lrp_gradcam", None)
    assert parse_method("zplus") == ("lrp", "zplus")
    assert parse_method("zplus-pass") == ("lrp", "zplus-pass")
    assert [methods.lrp_batchnorm(name) for name in COMPOSITES] == ["fold"] * 8 + ["pass"] * 8
    assert {m.kind for m in methods.registered().values()} == set(methods.KINDS)
    assert P.SCHEMA["lrp_composite"].choices == tuple(COMPOSITES)
    assert P.SCHEMA["composites"].default == FOLDED + ["montavon2019_epsilon_pixels-pass"]
    assert P.SCHEMA["lrp_composite"].default == methods.DEFAULT_COMPOSITE


def test_descriptions_and_views_behave_as_dicts():
    assert dict(methods.CAM_METHODS)["gradcam"].startswith("Grad-CAM: channel weights")
    assert "gradcam" not in methods.LRP_COMPOSITES and "zplus" in methods.LRP_COMPOSITES
    with pytest.raises(KeyError):
        methods.LRP_COMPOSITES["gradcam"]
    assert pd.Series(methods.CAM_METHODS).to_dict() == dict(methods.CAM_METHODS)
    assert methods.names("cam") == ["gradcam", "gradcam_pp"] and methods.names("cam")[-1] == \
        "gradcam_pp"


def test_readme_lists_exactly_the_registered_methods(capsys):
    assert main(["methods"]) == 0
    printed = capsys.readouterr().out
    assert printed == methods.table() + "\n"
    text = README.read_text(encoding="utf-8")
    assert methods.table() in text, "README's method table differs: paste python -m chexlib methods"
    header = text.index("| method | kind | what it computes |")
    rows = text[header:].split("\n\n", 1)[0].splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(methods.registered())


def test_registry_and_parameter_check_import_no_torch():
    code = ("import sys; from chexlib import methods, params; params.validate({'composites': "
            "['z'], 'lrp_composite': 'zplus'}); methods.table(); methods.method_names(); "
            "print(sorted({'torch', 'zennit'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=120)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("call, match", [
    (lambda: methods.register("zplus", "lrp", "x", "m:f", composite="m:g"), "already registered"),
    (lambda: methods.register("new", "saliency", "x", "m:f"), "kind='saliency'"),
    (lambda: methods.register("grad-cam", "cam", "x", "m:f"), "must not contain '-'"),
    (lambda: methods.register("../up", "combination", "x", "m:f"), "method name '../up'"),
    (lambda: methods.register("new", "combination", "two\nlines", "m:f"), "one-line"),
    (lambda: methods.register("new", "combination", "x", "m:f", composite="m:g"), "only for"),
    (lambda: methods.register("new", "lrp", "x", "m:f"), "only for"),
    (lambda: methods.register("new", "combination", "x", "no_colon"), "function='no_colon'"),
    (lambda: methods.get("new"), "not a registered method"),
    (lambda: methods.names("saliency"), "kind='saliency'"),
])
def test_bad_registrations_are_refused(call, match):
    before = list(methods.registered())
    with pytest.raises(ParameterError, match=match):
        call()
    assert list(methods.registered()) == before


# ------------------------------------------------------------- throw-away methods, one entry each


def constant_maps(model, images, classes=None, batch_size=None, *, offset=0.25):
    """Maps [B, K, H, W] equal to ``offset + k`` for the k-th requested class."""
    count = len(class_indices(classes))
    values = offset + torch.arange(count, dtype=torch.float32)
    return values[None, :, None, None].expand(len(images), count, *images.shape[-2:]).clone()


@contextmanager
def temporary(register, name):
    """Register a method for the ``with`` block only."""
    register()
    try:
        yield methods.get(name)
    finally:
        methods.unregister(name)


def _constant():
    return temporary(lambda: methods.register(
        "test_constant", "combination", "Constant maps: 0.25 + the class's position", constant_maps,
        options={"offset": 0.25}), "test_constant")


@pytest.fixture
def constant_method():
    with _constant() as entry:
        yield entry


def test_a_registered_method_is_available_everywhere(constant_method, tmp_path):
    name = constant_method.name
    assert method_names()[-1] == name and name in methods.comparison_methods(["z"])
    assert parse_method(name) == (name, None)
    images = torch.zeros(3, 3, 8, 8)
    maps = explain(None, images, name, classes=["Edema", 0])
    assert maps.shape == (3, 2, 8, 8)
    torch.testing.assert_close(maps, constant_maps(None, images, [5, 0]), rtol=0, atol=0)
    store = MapStore(tmp_path)
    assert store.fill(name, IDS, lambda positions: explain(None, images[positions], name),
                      batch_size=2) == 3
    assert store.methods() == [name]
    assert np.array_equal(store.load(name, IDS[1]), constant_maps(None, images[:1])[0].numpy())
    source = MapSource(None, store, None)
    assert name in source.methods
    BrowserState(method=name).check(source.methods)
    assert name in methods.table()


def test_a_method_disappears_once_unregistered(tmp_path):
    with _constant():
        assert "test_constant" in method_names()
    assert "test_constant" not in method_names() and "test_constant" not in methods.table()
    with pytest.raises(ParameterError, match="method='test_constant': unknown explanation"):
        explain(None, torch.zeros(1, 3, 8, 8), "test_constant")
    with pytest.raises(ParameterError, match="method='test_constant'"):
        BrowserState(method="test_constant").check(
            MapSource(None, MapStore(tmp_path), None).methods)


def test_a_registered_composite_is_a_parameter_choice_and_an_lrp_method():
    from zennit.composites import EpsilonPlusFlat

    def builder(low, high, epsilon):
        return EpsilonPlusFlat(epsilon=0.5 if epsilon is None else epsilon)

    name = "test_flat_half"
    with temporary(lambda: methods.register_composite(name, "EpsilonPlusFlat, eps 0.5", builder),
                   name):
        assert list(methods.LRP_COMPOSITES)[-1] == name and method_names()[16] == name
        assert P.validate({"lrp_composite": name, "composites": ["z", name]})["composites"] == [
            "z", name]
        assert name in P.describe()
        assert isinstance(make_composite(name), EpsilonPlusFlat)
        torch.manual_seed(0)
        from chexlib.model import densenet121

        model = densenet121(weights="none").eval()
        images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        expected = lrp(model, images, [3], composite=EpsilonPlusFlat(epsilon=0.5))
        torch.testing.assert_close(explain(model, images, name, [3]), expected, rtol=0, atol=0)
    with pytest.raises(ParameterError, match=f"'{name}' is not allowed"):
        P.validate({"lrp_composite": name})
    with pytest.raises(ParameterError, match="unknown LRP composite"):
        make_composite(name)


def test_random_baseline_is_the_seeded_normal_map_and_a_new_baseline_joins_the_comparison():
    reported = SimpleNamespace(image_size=16)
    pairs = pd.DataFrame({"class": [1, 2, 3]})
    expected = np.random.default_rng(3).standard_normal((3, 16, 16)).astype(np.float32)
    assert np.array_equal(pair_maps(None, reported, pairs, RANDOM, seed=3), expected)

    def zeros(model, images, classes=None, batch_size=None, *, seed=0):
        return torch.zeros(len(images), len(class_indices(classes)), *images.shape[-2:])

    with temporary(lambda: methods.register("test_zero", "baseline", "All-zero maps", zeros),
                   "test_zero"):
        assert methods.comparison_methods(["z"])[-2:] == [RANDOM, "test_zero"]
        assert "test_zero" not in method_names()  # a baseline explains nothing
        assert (pair_maps(None, reported, pairs, "test_zero") == 0).all()
    assert methods.comparison_methods(["z"])[-1] == RANDOM
