"""The same phantom image rendered again, with or without its planted confounders.

A phantom knows what no real data set does: how each image would look without its chest drain
or its "PORTABLE" marker. :func:`image_specs` rebuilds the render specification of every image
of a generated phantom from its ``phantom.json`` (the label plan is sampled again with the same
seed and rates; the rebuilt paths are checked against the CSV), and :func:`render_stored` renders
one, optionally without a confounder, and passes it through the same JPEG encoding as the stored
file: the image a model reads, minus the confounder and nothing else. Without the drain, only
the drain's mask and the 8x8 JPEG blocks it touches differ (tested).
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from chexlib.errors import PhantomError
from chexlib.phantom import sampling
from chexlib.phantom.generate import GENERATOR, VERSION, jpeg_bytes, plan_specs
from chexlib.phantom.render import ImageSpec, render_image

__all__ = ["image_specs", "render_stored"]


def image_specs(data_root: str | Path, split: str = "valid") -> dict[str, ImageSpec]:
    """The render specification of every image of one split of a generated phantom.

    Parameters
    ----------
    data_root : path
        A folder written by :func:`chexlib.phantom.generate`.
    split : {"train", "valid"}

    Returns
    -------
    dict
        CSV ``Path`` -> :class:`~chexlib.phantom.render.ImageSpec`, in CSV order.

    Raises
    ------
    PhantomError
        When the folder is not a complete phantom of this chexlib version, or its CSV does not
        list the images the rebuilt plan holds (the file is named).
    """
    root = Path(data_root)
    manifest_file = root / "phantom.json"
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PhantomError(f"{manifest_file}: cannot read the phantom's manifest ({err}); "
                        "expected a folder written by chexlib.phantom.generate") from err
    if manifest.get("generator") != GENERATOR or manifest.get("version") != VERSION:
        raise PhantomError(f"{manifest_file}: a phantom of version {manifest.get('version')!r}; "
                        f"this chexlib renders version {VERSION} (regenerate the data)")
    p = manifest["parameters"]
    plan = sampling.sample_labels(
        p["n_train"], p["n_valid"], p["seed"], p_uncertain_drawn=p["p_uncertain_drawn"],
        p_missed=p["p_missed_positive"], p_spurious=p["p_spurious_positive"],
        p_shortcut_ap=p["p_shortcut_ap"], p_shortcut_pa=p["p_shortcut_pa"],
        p_drain=p["p_drain"], p_drain_valid=p["p_drain_valid"], p_drain_other=p["p_drain_other"])
    rows = np.flatnonzero(plan.split == split)
    paths = plan.table["Path"].iloc[rows].tolist()
    csv_file = root / f"{split}.csv"
    listed = pd.read_csv(csv_file, usecols=["Path"])["Path"].tolist()
    if listed != paths:
        raise PhantomError(f"{csv_file}: its Path column is not the phantom's {split} images "
                        f"({len(listed)} listed, {len(paths)} in the plan of phantom.json)")
    specs = plan_specs(plan, p["seed"])
    return {path: specs[i] for path, i in zip(paths, rows)}


def render_stored(spec: ImageSpec, *, drain: bool | None = None, marker: bool | None = None,
                  with_drain_mask: bool = False):
    """One image as the phantom stores it (JPEG-decoded, uint8 [320, W]), confounders chosen.

    ``drain`` / ``marker``: None keeps what the image has; False removes it, True adds it.
    ``with_drain_mask``: also return the drain's mask (bool [320, W], or None without a drain).
    """
    changes = {k: v for k, v in (("drain", drain), ("shortcut", marker)) if v is not None}
    rendered = render_image(dataclasses.replace(spec, **changes))
    image = np.asarray(Image.open(io.BytesIO(jpeg_bytes(rendered.image))))
    return (image, rendered.drain) if with_drain_mask else image
