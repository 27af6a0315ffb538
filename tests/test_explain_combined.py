"""LRP gated by Grad-CAM, and the method-name dispatch, against their parts computed separately."""

from __future__ import annotations

import pytest
import torch

from chexlib.explain import gradcam, lrp
from chexlib.explain.combined import gradcam_gate, lrp_gradcam
from chexlib.explain.dispatch import explain, method_names, parse_method
from chexlib.model import densenet121


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return densenet121(num_classes=14, weights="none").eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_combination_is_lrp_times_the_normalised_gradcam(model, images):
    combined = lrp_gradcam(model, images, classes=[2, 9])
    relevance = lrp(model, images, [2, 9])
    cam = gradcam(model, images, [2, 9])
    peak = cam.flatten(2).max(dim=2).values[..., None, None]
    expected = torch.where(peak > 0, relevance * cam / peak, torch.zeros_like(relevance))
    torch.testing.assert_close(combined, expected, rtol=1e-5, atol=1e-9)
    outside = cam == 0
    assert (combined[outside] == 0).all()  # nothing where Grad-CAM sees nothing
    inside = (cam > 0) & (relevance < 0)
    assert (combined[inside] < 0).all()  # LRP's negative evidence survives inside the gate


def test_gate_is_in_unit_range_and_zero_maps_stay_zero():
    cam = torch.tensor([[[0.0, 2.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    gate = gradcam_gate(cam)
    torch.testing.assert_close(gate[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert (gate[1] == 0).all()


def test_dispatch_knows_every_method_and_rejects_others(model, images):
    names = method_names()
    assert names[0] == "epsilon" and {"gradcam", "gradcam_pp", "lrp_gradcam"} <= set(names)
    assert parse_method("gradcam-features.denseblock3") == ("gradcam", "features.denseblock3")
    torch.testing.assert_close(explain(model, images, "zplus", classes=[4]),
                               lrp(model, images, [4], composite="zplus"))
    torch.testing.assert_close(explain(model, images, "gradcam-features.transition2", [4]),
                               gradcam(model, images, [4], layer="features.transition2"))
    with pytest.raises(ValueError, match="method='smoothgrad'.*epsilon_plus_flat.*lrp_gradcam"):
        parse_method("smoothgrad")
    with pytest.raises(ValueError, match="gradcam-features.nope"):
        parse_method("gradcam-features.nope")
