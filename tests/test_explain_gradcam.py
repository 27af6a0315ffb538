"""chexlib.explain Grad-CAM and Grad-CAM++ checked against independent references.

References: pytorch-grad-cam (``GradCAM``, ``GradCAMPlusPlus``) on the same model and layer
module, with its own post-processing reproduced on chexlib's low-resolution maps; and CAM's
closed form at the head's ReLU (weights = the classifier's row / (h * w)).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM as ReferenceGradCAM
from pytorch_grad_cam import GradCAMPlusPlus as ReferenceGradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from chexlib.explain import explainable_copy, gradcam, gradcam_pp, layer_names
from chexlib.model import densenet121
from chexlib.observations import OBSERVATIONS
from support import random_batchnorm

SIZE, BATCH = 64, 2


@pytest.fixture(scope="module")
def model():
    """Random weights, random BatchNorm statistics and shifts, a classifier bias."""
    torch.manual_seed(0)
    net = densenet121(num_classes=14, weights="none")
    random_batchnorm(net, torch.Generator().manual_seed(1))
    with torch.no_grad():
        net.classifier.bias.copy_(torch.linspace(-0.5, 0.5, 14))
    return net.eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


def _as_pytorch_grad_cam_does(low: torch.Tensor, size) -> np.ndarray:
    """pytorch-grad-cam's post-processing: ReLU, min-max per map, resize, min-max again."""
    def minmax(x):
        x = x - x.amin(dim=(-2, -1), keepdim=True)
        return x / (1e-7 + x.amax(dim=(-2, -1), keepdim=True))

    up = F.interpolate(minmax(low.clamp(min=0)), size=size, mode="bilinear", align_corners=False)
    return minmax(up).numpy()


@pytest.mark.parametrize("layer", ["relu", "features.transition2"])
@pytest.mark.parametrize("ours, reference", [(gradcam, ReferenceGradCAM),
                                             (gradcam_pp, ReferenceGradCAMPlusPlus)])
def test_agrees_with_pytorch_grad_cam_on_every_class(model, images, layer, ours, reference):
    _, low = ours(model, images, layer=layer, return_low_res=True)
    mine = _as_pytorch_grad_cam_does(low, images.shape[-2:])
    net = explainable_copy(model).requires_grad_(True)  # pytorch-grad-cam needs a graph
    module = dict(net.named_modules())[layer]
    with reference(model=net, target_layers=[module]) as cam:
        for k in range(14):
            expected = cam(input_tensor=images, targets=[ClassifierOutputTarget(k)] * BATCH)
            assert np.abs(mine[:, k] - expected).max() <= 1e-3, (layer, k)  # 0.03 required


def test_signed_map_at_the_head_is_cam_and_relu_clips_it(model, images):
    # CAM's closed form: at the rectified final feature maps A of a GAP + linear head,
    # dy_c/dA_k(ij) = W_ck / (h w), so the signed Grad-CAM map is sum_k W_ck A_k / (h w).
    captured = {}
    hook = model.relu.register_forward_hook(lambda m, i, o: captured.setdefault("a", o.detach()))
    with torch.no_grad():
        model(images)
    hook.remove()
    a = captured["a"]
    h, w = a.shape[-2:]
    expected = torch.einsum("kc,bchw->bkhw", model.classifier.weight.detach(), a) / (h * w)
    signed, low = gradcam(model, images, relu=False, return_low_res=True)
    torch.testing.assert_close(low, expected, rtol=1e-4, atol=1e-6)
    assert (low < 0).any() and (signed < 0).any()  # negative where the weighted sum is
    rectified, low_rectified = gradcam(model, images, return_low_res=True)
    torch.testing.assert_close(low_rectified, expected.clamp(min=0), rtol=1e-4, atol=1e-6)
    assert (rectified >= 0).all()
    upsampled = F.interpolate(expected.clamp(min=0), size=(SIZE, SIZE), mode="bilinear",
                              align_corners=False)
    torch.testing.assert_close(rectified, upsampled, rtol=1e-4, atol=1e-6)


def test_shapes_classes_and_layers(model, images):
    maps, low = gradcam(model, images, classes=["Edema", 0], return_low_res=True)
    assert maps.shape == (BATCH, 2, SIZE, SIZE) and low.shape == (BATCH, 2, SIZE // 32, SIZE // 32)
    everything = gradcam(model, images)
    assert everything.shape == (BATCH, 14, SIZE, SIZE)
    torch.testing.assert_close(maps[:, 0], everything[:, OBSERVATIONS.index("Edema")])
    torch.testing.assert_close(maps[:, 1], everything[:, 0])
    _, finer = gradcam(model, images, classes=[3], layer="features.denseblock3", return_low_res=True)
    assert finer.shape == (BATCH, 1, SIZE // 16, SIZE // 16)
    one_by_one = torch.cat([gradcam(model, images[i:i + 1], classes=[3]) for i in range(BATCH)])
    torch.testing.assert_close(gradcam(model, images, classes=[3], batch_size=1), one_by_one)
    names = layer_names(explainable_copy(model))
    assert names[-1] == "relu" and "features.transition3" in names and "features.norm5" in names


def test_all_classes_come_from_one_forward_pass_and_the_model_is_untouched(model, images):
    net = explainable_copy(model)
    calls = []
    hook = net.features.conv0.register_forward_hook(lambda *_: calls.append(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gradcam(net, images, layer="features.transition2")
    hook.remove()
    assert len(calls) == 1
    gradcam(model, images[:1])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_layer_and_class_names_list_the_valid_ones(model, images):
    with pytest.raises(ValueError, match=r"layer='features\.norm6'.*features\.transition3.*relu"):
        gradcam(model, images, layer="features.norm6")
    with pytest.raises(ValueError, match="layer='classifier'.*features.denseblock4"):
        gradcam(model, images, layer="classifier")
    with pytest.raises(ValueError, match="'Pneumonitis'.*Support Devices"):
        gradcam(model, images, classes="Pneumonitis")


def test_the_static_layer_list_matches_the_model(model):
    from chexlib.methods import CAM_LAYERS, cam_method_name

    assert tuple(layer_names(explainable_copy(model))) == CAM_LAYERS
    assert cam_method_name() == "gradcam"
    assert cam_method_name("gradcam_pp", "features.denseblock3") == "gradcam_pp-features.denseblock3"
    with pytest.raises(ValueError, match="gradcam, gradcam_pp"):
        cam_method_name("scorecam")


def test_cam_maps_by_layer_are_each_method_on_each_layer(model, images):
    from chexlib.explain.dispatch import cam_maps_by_layer

    layers = ["relu", "features.denseblock3"]
    maps, sizes = cam_maps_by_layer(model, images[:1], "Edema", layers)
    assert list(maps) == ["gradcam · relu", "gradcam · features.denseblock3",
                          "gradcam_pp · relu", "gradcam_pp · features.denseblock3"]
    for method, fn in (("gradcam", gradcam), ("gradcam_pp", gradcam_pp)):
        for layer in layers:
            expected = fn(model, images[:1], ["Edema"], layer=layer)[0, 0]
            torch.testing.assert_close(maps[f"{method} · {layer}"], expected)
            assert maps[f"{method} · {layer}"].shape == (SIZE, SIZE)
    assert sizes == {"relu": (SIZE // 32, SIZE // 32),
                     "features.denseblock3": (SIZE // 16, SIZE // 16)}


@pytest.mark.parametrize("ours, reference", [(gradcam, ReferenceGradCAM),
                                             (gradcam_pp, ReferenceGradCAMPlusPlus)])
def test_per_image_targets_agree_with_pytorch_grad_cam_per_image_targets(model, images, ours,
                                                                         reference):
    # Image 0 is explained for classes 3 and 9, image 1 for class 11 only (-1: no second map).
    table = torch.tensor([[3, 9], [11, -1]])
    _, low = ours(model, images, table, layer="features.transition2", return_low_res=True)
    mine = _as_pytorch_grad_cam_does(low, images.shape[-2:])
    net = explainable_copy(model).requires_grad_(True)
    module = dict(net.named_modules())["features.transition2"]
    with reference(model=net, target_layers=[module]) as cam:
        first = cam(input_tensor=images, targets=[ClassifierOutputTarget(3),
                                                  ClassifierOutputTarget(11)])
        second = cam(input_tensor=images[:1], targets=[ClassifierOutputTarget(9)])
    assert np.abs(mine[:, 0] - first).max() <= 1e-3
    assert np.abs(mine[0, 1] - second[0]).max() <= 1e-3
    assert not low[1, 1].any()  # the empty slot is a zero map


def test_per_image_target_tables_are_checked(model, images):
    with pytest.raises(ValueError, match=r"row 1, slot 0 holds 14; expected an index 0..13 or -1"):
        gradcam(model, images, torch.tensor([[0], [14]]))
    with pytest.raises(ValueError, match=r"shape \(3, 1\); expected \[2, K >= 1\]"):
        gradcam(model, images, torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="must hold integers"):
        gradcam(model, images, torch.zeros(2, 1))
