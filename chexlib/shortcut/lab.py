"""Notebook 07's steps on a run: subgroups of the reported images, counterfactual inputs, effects.

The reported images (``valid.csv``) of a phantom run are split into the drain subgroups
(:func:`reported_subgroups`); :func:`counterfactual_images` renders reported images again with
or without their drain, through the stored JPEG encoding and the model's resize, so that they
differ from the images the model read by the drain alone; :func:`drain_cases` pairs them: the
images with a drain taken out of it, and (the same effect measured the other way) the positive
images without one given one; :func:`drain_effects` measures every class's logit change and
:func:`case_maps` each method's maps of the images with the drain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from chexlib.data.dataset import normalize
from chexlib.data.images import square_grayscale
from chexlib.data.labels import patient_ids
from chexlib.errors import MissingFileError, PhantomError
from chexlib.explain.dispatch import explain
from chexlib.masks import resize_mask
from chexlib.methods import BASELINES
from chexlib.methods import get as get_method
from chexlib.observations import OBSERVATIONS
from chexlib.phantom.counterfactual import image_specs, render_stored
from chexlib.shortcut.causal import logit_changes
from chexlib.shortcut.subgroups import SUBGROUPS, drain_subgroups

__all__ = ["ADDED", "case_maps", "control_causal", "counterfactual_images", "drain_cases",
           "drain_effects", "reported_patients", "reported_subgroups", "strongest_case"]

#: The subgroup name of positive images without a drain that had one put in.
ADDED = "finding without drain (drain added)"


def reported_subgroups(reported, observation: str = "Pneumothorax") -> np.ndarray:
    """:func:`chexlib.shortcut.subgroups.drain_subgroups` of every reported image."""
    finding = reported.labels[:, OBSERVATIONS.index(observation)] == 1
    return drain_subgroups(finding, reported.drains())


def reported_patients(reported) -> np.ndarray:
    """The patient of every reported image (the bootstrap's clusters)."""
    paths = pd.DataFrame({"Path": reported.paths})
    return patient_ids(paths).fillna(paths["Path"]).to_numpy()


def counterfactual_images(reported, data_root: str | Path, rows, *,
                          drain: bool) -> tuple[torch.Tensor, np.ndarray]:
    """Reported rows rendered with or without the drain (everything else as stored).

    Returns
    -------
    images : Tensor [len(rows), 3, S, S]
        Normalised model inputs, through the stored JPEG encoding and the model's resize.
    drain_masks : ndarray bool [len(rows), S, S]
        The drain's pixels in the model frame (all False without a drain).

    Raises
    ------
    PhantomError
        When the data are not a phantom this chexlib can render again.
    """
    rows = [int(r) for r in rows]
    size = reported.image_size
    if not rows:
        return torch.zeros((0, 3, size, size)), np.zeros((0, size, size), bool)
    specs = image_specs(data_root, "valid")
    paths = reported.paths
    missing = [paths[r] for r in rows if paths[r] not in specs]
    if missing:
        raise PhantomError(f"{Path(data_root) / 'valid.csv'}: {missing[0]} is not an image of the "
                           "phantom's plan; expected the data notebook 03 scored")
    images, masks = [], np.zeros((len(rows), size, size), bool)
    for k, r in enumerate(rows):
        rendered, drain_mask = render_stored(specs[paths[r]], drain=drain, with_drain_mask=True)
        images.append(normalize(square_grayscale(rendered, size)))
        if drain_mask is not None:
            masks[k] = resize_mask(drain_mask, (size, size))
    return torch.stack(images), masks


def drain_cases(reported, data_root: str | Path,
                observation: str = "Pneumothorax") -> tuple[pd.DataFrame, dict]:
    """The images whose drain effect notebook 07 measures, with and without the drain.

    Images with a drain are taken out of it ("removed"); positive images without one get one
    (subgroup :data:`ADDED`, "added"): the same effect measured the other way.

    Returns
    -------
    cases : DataFrame
        ``row``, ``subgroup``, ``direction``, ``patient``, one row per image.
    tensors : dict
        ``with`` and ``without`` (Tensor [N, 3, S, S]), ``drain`` and ``finding`` (bool masks
        [N, S, S] in the model frame; the finding's is all False where it is absent).
    """
    subgroups = reported_subgroups(reported, observation)
    patients = reported_patients(reported)
    size = reported.image_size
    frames, withs, withouts, drains = [], [], [], []
    removed, added = np.flatnonzero(reported.drains()), np.flatnonzero(subgroups == SUBGROUPS[1])
    for rows, direction in ((removed, "removed"), (added, "added")):
        if not len(rows):
            continue
        stored = reported.images(rows)
        other, masks = counterfactual_images(reported, data_root, rows,
                                             drain=direction == "added")
        if direction == "removed":
            masks = np.stack([reported.outline(int(r), "drain") for r in rows])
        withs.append(stored if direction == "removed" else other)
        withouts.append(other if direction == "removed" else stored)
        drains.append(masks)
        frames.append(pd.DataFrame({
            "row": rows, "subgroup": subgroups[rows] if direction == "removed" else ADDED,
            "direction": direction, "patient": patients[rows]}))
    if not frames:
        empty = torch.zeros((0, 3, size, size))
        return (pd.DataFrame(columns=["row", "subgroup", "direction", "patient"]),
                {"with": empty, "without": empty, "drain": np.zeros((0, size, size), bool),
                 "finding": np.zeros((0, size, size), bool)})
    cases = pd.concat(frames, ignore_index=True)
    finding = np.zeros((len(cases), size, size), bool)
    for k, r in enumerate(cases["row"]):
        mask = reported.outline(int(r), observation)
        if mask is not None:
            finding[k] = mask
    return cases, {"with": torch.cat(withs), "without": torch.cat(withouts),
                   "drain": np.concatenate(drains), "finding": finding}


def drain_effects(model: nn.Module, cases: pd.DataFrame, tensors: dict,
                  device: str | torch.device = "cpu", batch_size: int = 16) -> pd.DataFrame:
    """Every class's logit change ``logit(without drain) - logit(with drain)`` per case.

    Negative where the drain raises the class's logit. ``cases`` and ``tensors``:
    :func:`drain_cases`.

    Returns
    -------
    DataFrame
        The columns of ``cases`` and one per observation.
    """
    model = model.to(device).eval()
    changes = logit_changes(model, tensors["with"].to(device), tensors["without"].to(device),
                            batch_size=batch_size)
    if not len(cases):
        changes = np.zeros((0, len(OBSERVATIONS)))
    return pd.concat([cases.reset_index(drop=True),
                      pd.DataFrame(changes, columns=list(OBSERVATIONS))], axis=1)


def case_maps(model: nn.Module, images: torch.Tensor, methods, observation: str,
              device: str | torch.device = "cpu", seed: int = 0,
              batch_size: int = 8) -> dict[str, np.ndarray]:
    """Each method's map [N, S, S] of ``observation`` on ``images`` (float32, LRP unrectified)."""
    j = OBSERVATIONS.index(observation)
    out = {}
    for method in methods:
        parts = []
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device)
            if method in BASELINES:
                parts.append(get_method(method)(model, batch, [j], seed=seed + start)[:, 0])
            else:
                parts.append(explain(model, batch, method, [j])[:, 0].detach().cpu())
        size = images.shape[-1]
        out[method] = (torch.cat(parts).numpy().astype(np.float32) if parts
                       else np.zeros((0, size, size), np.float32))
    return out


def strongest_case(effects: pd.DataFrame, observation: str = "Pneumothorax") -> int | None:
    """The case whose ``observation`` logit the drain raises most (most negative change).

    Ties go to the first case; ``None`` when there is no case (the gallery has nothing to show).
    """
    if not len(effects):
        return None
    return int(np.argmin(effects[observation].to_numpy()))


def control_causal(control_run: str | Path | None) -> pd.DataFrame | None:
    """``tables/07_causal.csv`` of a control run (``phantom_drain_rate`` 0), or ``None``.

    Raises
    ------
    MissingFileError
        ``control_run`` is given but holds no causal table (notebook 07 has not run there).
    """
    if not control_run:
        return None
    path = Path(control_run) / "tables" / "07_causal.csv"
    if not path.is_file():
        raise MissingFileError(f"control_run {control_run}: {path} does not exist; expected the "
                               "run folder of a control run (phantom_drain_rate 0) that ran "
                               "notebook 07")
    return pd.read_csv(path)
