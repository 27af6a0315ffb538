"""What every explanation method needs first: an explainable copy of the model, the classes
to explain, and checked inputs.

The explainable copy is an eval-mode deep copy of the chexlib DenseNet-121 whose ReLUs are not
in-place (an in-place ReLU overwrites the tensor a hook of the layer before it holds: the cause of
pytorch-grad-cam's device-dependent DenseNet results) and whose parameters need no gradient. It
computes the model's logits; :func:`explainable` makes it once per model and BatchNorm treatment
and reuses it while the model's weights do not change.

BatchNorm treatment (:data:`BATCHNORM_CHOICES`): ``"pass"`` keeps the BatchNorms (the copy
Grad-CAM and ``lrp(..., batchnorm="pass")`` use); ``"fold"`` also merges every BatchNorm into a
linear layer (:func:`chexlib.explain.canonizers.canonize_densenet`), the canonical form LRP
needs.
"""

from __future__ import annotations

import copy
import numbers
import weakref
from collections.abc import Sequence

import numpy as np
import torch
import torchvision
from torch import nn

from chexlib.errors import ParameterError
from chexlib.explain.canonizers import canonize_densenet
from chexlib.methods import BATCHNORM_CHOICES
from chexlib.observations import OBSERVATIONS

_EXPLAINABLE = "_chexlib_explainable"
# model -> {batchnorm: (fingerprint of its tensors, explainable copy)}. Weak keys: the cache never keeps a
# model alive, and nothing is stored on the caller's model.
_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def explainable_copy(model: nn.Module, batchnorm: str = "pass") -> nn.Module:
    """A deep copy of ``model`` that LRP hooks can work on; the model itself is untouched.

    The copy is in eval mode (BatchNorm uses its running statistics), every ``nn.ReLU`` is made
    non-in-place (an in-place ReLU overwrites the tensor a backward hook of the layer before it
    holds), and its parameters do not require gradients (LRP needs only the input's). It computes
    the same logits as ``model.eval()``.

    Parameters
    ----------
    model : nn.Module
        A chexlib :class:`~chexlib.model.DenseNet121` (or, with ``batchnorm="pass"``, any
        network whose nonlinearities are modules); an explainable copy made with ``"pass"`` may
        be canonized further.
    batchnorm : {"pass", "fold"}
        ``"fold"``: merge every BatchNorm into a linear layer
        (:func:`~chexlib.explain.canonizers.canonize_densenet`); ``"pass"``: keep them.

    Returns
    -------
    nn.Module
        Marked as explainable: :func:`lrp` uses it as it is.

    Raises
    ------
    ParameterError
        ``model`` is torchvision's DenseNet, whose functional ReLU and pooling in ``forward``
        no LRP rule can attach to; an unknown ``batchnorm``; a folded copy asked for
        ``"pass"`` (a merge cannot be undone).
    """
    check_batchnorm(batchnorm)
    if explainable_batchnorm(model) == "fold" and batchnorm == "pass":
        raise ParameterError("model: an explainable copy with its BatchNorms folded; "
                             "batchnorm='pass' needs the model itself")
    if isinstance(model, torchvision.models.DenseNet):
        raise ParameterError(
            "model: torchvision's DenseNet ends in functional relu/pool that LRP rules cannot "
            "reach (relevance is not conserved); expected chexlib.model.DenseNet121 "
            "(load the same state dict into chexlib.model.densenet121())"
        )
    clone = canonize_densenet(model) if batchnorm == "fold" else copy.deepcopy(model).eval()
    for module in clone.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    for param in clone.parameters():
        param.requires_grad_(False)
    setattr(clone, _EXPLAINABLE, batchnorm)
    return clone


def is_explainable(model: nn.Module) -> bool:
    """Whether ``model`` was made by :func:`explainable_copy`."""
    return explainable_batchnorm(model) is not None


def explainable_batchnorm(model: nn.Module) -> str | None:
    """``"fold"`` or ``"pass"`` for an explainable copy (how it treats BatchNorms), else None."""
    value = getattr(model, _EXPLAINABLE, None)
    return value if value in BATCHNORM_CHOICES else None


def check_batchnorm(batchnorm: object) -> str:
    """``batchnorm`` itself if it is one of :data:`BATCHNORM_CHOICES`, else a ParameterError."""
    if batchnorm not in BATCHNORM_CHOICES:
        raise ParameterError(f"batchnorm={batchnorm!r}: expected one of "
                             f"{', '.join(map(repr, BATCHNORM_CHOICES))}")
    return batchnorm


def class_indices(
    classes: Sequence[str | int] | str | int | None, num_outputs: int = len(OBSERVATIONS)
) -> list[int]:
    """Logit indices of classes given by observation name or index (None: all outputs).

    Raises
    ------
    ParameterError
        A ValueError: an unknown name (the message lists the valid ones) or an index out of range.
    """
    if classes is None:
        return list(range(num_outputs))
    if isinstance(classes, (str, numbers.Integral)):
        classes = [classes]
    indices = []
    for item in classes:
        if isinstance(item, str):
            if item not in OBSERVATIONS[:num_outputs]:
                raise ParameterError(
                    f"classes: unknown observation {item!r}; expected one of "
                    f"{', '.join(OBSERVATIONS[:num_outputs])} or an index 0..{num_outputs - 1}"
                )
            indices.append(OBSERVATIONS.index(item))
        elif (
            isinstance(item, numbers.Integral)
            and not isinstance(item, bool)
            and (0 <= item < num_outputs)
        ):
            indices.append(int(item))
        else:
            raise ParameterError(
                f"classes: {item!r} is not an observation name nor an index 0..{num_outputs - 1}"
            )
    if not indices:
        raise ParameterError("classes: empty; expected at least one observation name or index")
    return indices


def class_targets(classes, count: int, num_outputs: int = len(OBSERVATIONS)) -> torch.Tensor:
    """The classes each of ``count`` images is explained for, a LongTensor [count, K].

    ``classes`` is what :func:`class_indices` takes (the same classes for every image), or an
    integer array [count, K]: per image its own classes, ``-1`` for a slot without one (its map
    is zero). Per-image targets let one forward pass serve pairs of different classes: the
    comparison explains each (image, class) pair once, not every class of every image.

    Raises
    ------
    ParameterError
        What :func:`class_indices` refuses; for an array, a shape other than [count, K >= 1], a
        non-integer type or an index outside -1 .. num_outputs - 1 (the message names it).
    """
    if isinstance(classes, (torch.Tensor, np.ndarray)) and classes.ndim == 2:
        table = torch.as_tensor(classes)
        if table.dtype.is_floating_point or table.dtype == torch.bool or table.is_complex():
            raise ParameterError(f"classes: a per-image table must hold integers, got {table.dtype}")
        if table.shape[0] != count or table.shape[1] < 1:
            raise ParameterError(f"classes: a per-image table of shape {tuple(table.shape)}; "
                                 f"expected [{count}, K >= 1] (one row per image)")
        bad = (table < -1) | (table >= num_outputs)
        if bool(bad.any()):
            row, slot = (int(v) for v in bad.nonzero()[0])
            raise ParameterError(f"classes: row {row}, slot {slot} holds {int(table[row, slot])}; "
                                 f"expected an index 0..{num_outputs - 1} or -1 (no class)")
        return table.to(torch.long).cpu()
    indices = class_indices(classes, num_outputs)
    return torch.tensor(indices, dtype=torch.long).expand(count, -1).clone()


def target_seed(logits: torch.Tensor, targets: torch.Tensor, values: torch.Tensor | None = None
                ) -> torch.Tensor | None:
    """A [b, C] tensor, zero but at (i, targets[i]) where it holds ``values[i, targets[i]]`` (1
    without ``values``); None when no image has a target (a ``-1`` column)."""
    rows = (targets >= 0).nonzero().flatten()
    if not len(rows):
        return None
    seed = torch.zeros_like(logits)
    cols = targets[rows].to(logits.device)
    rows = rows.to(logits.device)
    seed[rows, cols] = 1.0 if values is None else values[rows, cols].to(seed.dtype)
    return seed


def explainable(model: nn.Module, batchnorm: str = "pass") -> nn.Module:
    """``model`` itself if it is an explainable copy with that BatchNorm treatment, else its
    cached :func:`explainable_copy` (a folded copy of a ``"pass"`` copy too)."""
    if not isinstance(model, nn.Module):
        raise ParameterError(f"model: expected a torch nn.Module, got {type(model).__name__}")
    check_batchnorm(batchnorm)
    if explainable_batchnorm(model) == batchnorm:
        return model.eval()
    fingerprint = _fingerprint(model)
    copies = _COPIES.setdefault(model, {})
    cached = copies.get(batchnorm)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    clone = explainable_copy(model, batchnorm)
    copies[batchnorm] = (fingerprint, clone)
    return clone


def _fingerprint(model: nn.Module) -> tuple:
    # A tensor's _version rises with every in-place change (optimiser steps, load_state_dict);
    # a new tensor (model.to(...)) has a new id. Either makes the cached copy stale.
    return tuple((id(t), t._version) for t in [*model.parameters(), *model.buffers()])


def num_outputs(net: nn.Module) -> int:
    count = getattr(net, "num_classes", None)
    return int(count) if isinstance(count, int) else len(OBSERVATIONS)


def device_dtype(net: nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(net.parameters(), None)
    return (
        (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    )


def check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ParameterError(f"images: expected a tensor of shape [B, 3, H, W], got {shape}")
    if len(images) == 0:
        raise ParameterError("images: empty batch; expected at least one image")
    return images


def check_batch_size(batch_size: int | None, count: int) -> int:
    if batch_size is None:
        return count
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(f"batch_size={batch_size!r}: expected a positive integer or None")
    return batch_size
