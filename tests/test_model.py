"""chexlib.model: the explainable DenseNet-121 head and where its weights come from.

References are independent of chexlib: torchvision's own DenseNet-121 (its forward pass, its
state dict, its random init) and tensors the tests write themselves. No test touches the network:
an autouse fixture points the torch hub cache at tmp_path and makes every download fail.
"""

from __future__ import annotations

import re
import socket
import warnings
from collections import OrderedDict
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torch.hub
import torchvision
from torch import nn

from chexlib.checkpoint import save_checkpoint
from chexlib.errors import CheckpointError, MissingFileError, ParameterError
from chexlib.model import DenseNet121, densenet121, imagenet_cache_path
from chexlib.observations import OBSERVATIONS

IMAGENET_URL = "https://download.pytorch.org/models/densenet121-a639ec97.pth"
IMAGENET_FILE = "densenet121-a639ec97.pth"


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """A fresh TORCH_HOME under tmp_path; downloads and sockets fail like on this machine."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)  # in case set_dir was called
    calls = []

    def refuse_download(url, dst, *args, **kwargs):
        calls.append(url)
        raise URLError("test: no network")

    def refuse_connect(*args, **kwargs):
        raise OSError("test: sockets are disabled")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse_download)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    return {"home": home, "downloads": calls}




def torchvision_model(seed: int = 0, num_classes: int = 14) -> nn.Module:
    """torchvision's DenseNet-121 with non-trivial BatchNorm parameters and statistics."""
    torch.manual_seed(seed)
    model = torchvision.models.densenet121(weights=None, num_classes=num_classes)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.3 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
        model.classifier.bias.copy_(0.1 * torch.randn(num_classes, generator=gen))
    return model.eval()


def images(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def legacy_keys(state: dict[str, torch.Tensor]) -> OrderedDict:
    """The 2017 torchvision naming (``norm.1`` ...), without ``num_batches_tracked`` (as there)."""
    old = OrderedDict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        # Hand-written reverse of the renaming, independent of the code under test.
        key = re.sub(r"(denselayer\d+\.)(norm|relu|conv)([12])\.", r"\1\2.\3.", key)
        old[key] = value.clone()
    return old


def assert_backbone_equal(model: nn.Module, reference: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    keys = [k for k in reference if k.startswith("features.") and "num_batches" not in k]
    assert len(keys) > 600
    for key in keys:
        assert torch.equal(state[key], reference[key]), key


# ---------------------------------------------------------------- architecture


def test_same_function_as_torchvision_with_nontrivial_batchnorm():
    reference = torchvision_model(seed=3)
    ours = DenseNet121(num_classes=14)
    ours.load_state_dict(reference.state_dict())  # strict: the key sets are identical
    ours.eval()
    x = images()
    with torch.no_grad():
        expected = reference(x.clone())
        got = ours(x.clone())
    assert got.shape == (2, 14)
    assert expected.abs().max() > 0.1  # a non-degenerate comparison
    assert (got - expected).abs().max().item() <= 1e-5


def test_state_dict_keys_and_shapes_equal_torchvision():
    ours = DenseNet121(num_classes=5).state_dict()
    theirs = torchvision.models.densenet121(weights=None, num_classes=5).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_random_init_is_torchvision_init_under_the_same_seed():
    torch.manual_seed(11)
    ours = densenet121(num_classes=14, weights="none")
    torch.manual_seed(11)
    theirs = torchvision.models.densenet121(weights=None, num_classes=14)
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    assert ours.weights_source == "none"
    assert ours.arch == "densenet121" and ours.num_classes == 14
    assert ours.training


def test_head_is_made_of_modules():
    model = DenseNet121()
    assert isinstance(model.relu, nn.ReLU) and not model.relu.inplace
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d)
    assert isinstance(model.flatten, nn.Flatten)
    assert isinstance(model.classifier, nn.Linear)
    assert model.classifier.in_features == 1024 and model.classifier.out_features == 14
    assert list(model.features.named_children())[-1][0] == "norm5"


def test_relu_hook_fires_on_norm5_output_and_norm5_output_survives():
    model = torchvision_model(seed=5)
    ours = DenseNet121()
    ours.load_state_dict(model.state_dict())
    ours.eval()
    seen = {}
    ours.features.norm5.register_forward_hook(lambda m, i, o: seen.__setitem__("norm5", o))
    ours.relu.register_forward_hook(lambda m, i, o: seen.__setitem__("relu", o))
    ours.pool.register_forward_hook(lambda m, i, o: seen.__setitem__("pool", o))
    with torch.no_grad():
        logits = ours(images())
    # norm5's stored output is not overwritten by an in-place ReLU: it still has negatives.
    assert (seen["norm5"] < 0).any()
    assert torch.equal(seen["relu"], torch.clamp(seen["norm5"], min=0))
    assert torch.allclose(seen["pool"].flatten(1), seen["relu"].mean(dim=(2, 3)), atol=1e-6)
    expected = seen["relu"].mean(dim=(2, 3)) @ ours.classifier.weight.T + ours.classifier.bias
    assert torch.allclose(logits, expected, atol=1e-5)


def test_forward_goes_through_the_relu_module():
    # If forward used a functional ReLU, replacing the module would change nothing.
    model = DenseNet121().eval()
    x = images()
    model.relu = nn.Identity()
    with torch.no_grad():
        got = model(x)
        feats = model.features(x)
        expected = model.classifier(feats.mean(dim=(2, 3)))
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "14"])
def test_bad_num_classes(bad):
    with pytest.raises(ParameterError, match="num_classes"):
        densenet121(num_classes=bad)


# ---------------------------------------------------------------- ImageNet weights


def write_imagenet_cache(state: dict, legacy_format: bool = False) -> Path:
    """Put a stand-in for torchvision's ImageNet file where torchvision looks for it."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE
    path.parent.mkdir(parents=True)
    torch.save(state, path, _use_new_zipfile_serialization=not legacy_format)
    return path


def test_cache_path_follows_torch_home(offline):
    assert imagenet_cache_path() == offline["home"] / "hub" / "checkpoints" / IMAGENET_FILE
    assert torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.url == IMAGENET_URL


def test_imagenet_loads_cached_file_with_fresh_head(offline):
    reference = torchvision_model(seed=7, num_classes=1000).state_dict()
    write_imagenet_cache(reference)
    torch.manual_seed(0)
    model = densenet121(num_classes=14, weights="imagenet")
    assert model.weights_source == "imagenet"
    assert offline["downloads"] == []  # the cache was used
    assert_backbone_equal(model, reference)
    assert model.classifier.weight.shape == (14, 1024)
    # The head is torchvision's fresh init: zero bias (ImageNet's bias was made non-zero).
    assert torch.equal(model.classifier.bias, torch.zeros(14))


def test_imagenet_downloads_into_the_cache_when_absent(offline, monkeypatch):
    reference = torchvision_model(seed=6, num_classes=1000).state_dict()
    urls = []

    def fake_download(url, dst, *args, **kwargs):  # stands in for a working network
        urls.append(url)
        torch.save(reference, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = densenet121(weights="imagenet")
    assert urls == [IMAGENET_URL]
    assert (offline["home"] / "hub" / "checkpoints" / IMAGENET_FILE).is_file()
    assert_backbone_equal(model, reference)
    densenet121(weights="imagenet")
    assert urls == [IMAGENET_URL]  # the second call used the cache


def test_imagenet_old_style_keys_and_legacy_format_load(offline):
    reference = torchvision_model(seed=8, num_classes=1000).state_dict()
    old = legacy_keys(reference)
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    write_imagenet_cache(old, legacy_format=True)
    model = densenet121(weights="imagenet")
    assert_backbone_equal(model, reference)
    # A same-function check: eval logits before the head equal torchvision's features.
    tv = torchvision_model(seed=8, num_classes=1000)
    with torch.no_grad():
        assert torch.allclose(model.eval().features(images()), tv.features(images()), atol=1e-5)


def test_imagenet_without_network_or_cache_names_url_and_path(offline):
    with pytest.raises(MissingFileError) as info:
        densenet121(weights="imagenet")
    message = str(info.value)
    assert IMAGENET_URL in message
    assert str(offline["home"] / "hub" / "checkpoints" / IMAGENET_FILE) in message
    assert offline["downloads"] == [IMAGENET_URL]  # a download was tried (and failed)


def test_auto_without_network_warns_and_trains_from_scratch(offline):
    with pytest.warns(UserWarning, match="FROM SCRATCH") as record:
        model = densenet121(weights="auto")
    message = str(record[0].message)
    assert IMAGENET_URL in message and IMAGENET_FILE in message
    assert model.weights_source == "scratch (ImageNet unavailable)"
    logits = model(images())
    assert logits.shape == (2, 14) and torch.isfinite(logits).all()


def test_auto_with_cached_file_loads_imagenet_without_warning(offline):
    reference = torchvision_model(seed=9, num_classes=1000).state_dict()
    write_imagenet_cache(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = densenet121(weights="auto")
    assert model.weights_source == "imagenet"
    assert_backbone_equal(model, reference)


# ---------------------------------------------------------------- weights from a path


def test_path_to_plain_state_dict_loads_backbone_and_fitting_head(tmp_path):
    reference = torchvision_model(seed=12, num_classes=14)
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    model = densenet121(weights=path).eval()
    assert model.weights_source == f"state_dict:{path}"
    with torch.no_grad():
        assert torch.allclose(model(images()), reference(images()), atol=1e-5)


def test_path_to_imagenet_style_file_with_old_keys(tmp_path):
    reference = torchvision_model(seed=13, num_classes=1000).state_dict()
    path = tmp_path / IMAGENET_FILE
    torch.save(legacy_keys(reference), path, _use_new_zipfile_serialization=False)
    model = densenet121(num_classes=14, weights=str(path))
    assert_backbone_equal(model, reference)
    assert model.classifier.weight.shape == (14, 1024)  # 1000-class head did not fit: fresh
    assert model.weights_source == f"state_dict:{path}"


def test_path_to_chexlib_checkpoint(tmp_path):
    reference = torchvision_model(seed=14)
    source = DenseNet121()
    source.load_state_dict(reference.state_dict())
    path = save_checkpoint(
        tmp_path / "run.ckpt", source, classes=OBSERVATIONS, image_size=64,
        uncertainty_policy="ones",
    )  # fmt: skip
    model = densenet121(weights=path).eval()
    assert model.weights_source == f"checkpoint:{path}"
    with torch.no_grad():
        assert torch.allclose(model(images()), reference(images()), atol=1e-5)


def test_path_to_checkpoint_with_other_classes_is_refused(tmp_path):
    classes = list(OBSERVATIONS)
    classes[3] = "Something Else"
    path = save_checkpoint(
        tmp_path / "c.ckpt", DenseNet121(), classes=classes, image_size=64,
        uncertainty_policy="zeros",
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="Something Else"):
        densenet121(weights=path)


def test_path_errors(tmp_path):
    with pytest.raises(MissingFileError, match="imagenet"):
        densenet121(weights=tmp_path / "nope.pth")
    with pytest.raises(MissingFileError, match="no such file"):
        densenet121(weights="imagnet")  # a typo of a keyword is a missing path, with choices
    resnet = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    with pytest.raises(CheckpointError, match="not a DenseNet-121 state dict"):
        densenet121(weights=resnet)
    other = tmp_path / "list.pth"
    torch.save([1, 2, 3], other)
    with pytest.raises(CheckpointError, match="not a chexlib checkpoint nor a state dict"):
        densenet121(weights=other)
    with pytest.raises(ParameterError, match="weights=3"):
        densenet121(weights=3)
