"""The planted chest drain: its mask covers it, removing it changes only its pixels, its rates.

The counterfactual claim notebook 07 relies on is checked on the rendered arrays (the image
without the drain equals the image with it outside the drain's mask, to the grey level) and on
the stored JPEGs (outside the mask they differ only in the 8x8 JPEG blocks the mask touches: the
documented compression noise). The drain's sampling comes from its own stream, so a phantom with
drains has the same labels, markers and, for every image without a drain, the same bytes as one
without drains.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage, stats

from chexlib.errors import ParameterError
from chexlib.masks import chexlocalize_image_id, read_chexlocalize, rle_decode
from chexlib.observations import OBSERVATIONS
from chexlib.phantom import generate, sampling
from chexlib.phantom.generate import jpeg_bytes
from chexlib.phantom.render import ImageSpec, render_image

PTX = OBSERVATIONS.index("Pneumothorax")


def _spec(number: int, pneumothorax: bool, drain: bool = True, shortcut: bool = True) -> ImageSpec:
    drawn = [0.0] * len(OBSERVATIONS)
    if pneumothorax:
        drawn[PTX] = 1.0
    else:
        drawn[0] = 1.0  # No Finding
    return ImageSpec(seed=11, image_number=number, patient=number, sex="Female", age=55,
                     view="AP", drawn=tuple(drawn), shortcut=shortcut, drain=drain)


@pytest.mark.parametrize("number, pneumothorax", [(1, True), (2, True), (3, True), (4, False),
                                                  (5, False)])
def test_removing_the_drain_changes_exactly_its_masked_pixels(number, pneumothorax):
    spec = _spec(number, pneumothorax)
    with_drain = render_image(spec)
    without = render_image(dataclasses.replace(spec, drain=False))
    mask = with_drain.drain
    assert without.drain is None and mask is not None and mask.dtype == bool
    changed = with_drain.image != without.image
    assert not (changed & ~mask).any()  # nothing outside the mask differs, to the grey level
    # The mask is the drain, not the image: thin (a tube), a small share of the frame, and its
    # pixels got brighter, by tens of grey levels on average (the radio-opaque stripe most).
    assert 0.002 < mask.mean() < 0.03
    gain = with_drain.image.astype(int) - without.image.astype(int)
    assert gain[mask].min() >= 0 and gain[mask].mean() > 15 and gain[mask].max() > 100
    assert ndimage.binary_erosion(mask, iterations=5).sum() == 0  # a 5 px tube: nowhere 11 px thick
    # Findings, marker and scene are those of the image without the drain.
    assert with_drain.masks.keys() == without.masks.keys()
    for name in with_drain.masks:
        assert np.array_equal(with_drain.masks[name], without.masks[name])
    assert np.array_equal(with_drain.shortcut, without.shortcut)


@pytest.mark.parametrize("number", [1, 2, 3, 6, 7])
def test_the_drain_enters_on_the_side_of_the_pneumothorax(number):
    rendered = render_image(_spec(number, True))
    scene, air = rendered.scene, rendered.masks["Pneumothorax"]
    air_side = np.mean(np.flatnonzero(air.any(axis=0))) < scene.mid
    drain_side = np.mean(np.flatnonzero(rendered.drain.any(axis=0))) < scene.mid
    assert air_side == drain_side
    # It reaches into the lung field of that side (from the chest wall towards the apex).
    lung = scene.lung("R" if air_side else "L")
    assert (rendered.drain & lung).sum() > 0.3 * rendered.drain.sum()


def test_the_stored_jpegs_differ_outside_the_mask_only_in_the_blocks_it_touches():
    spec = _spec(2, True)
    with_drain = render_image(spec)
    without = render_image(dataclasses.replace(spec, drain=False))

    def decoded(image):
        return np.asarray(Image.open(io.BytesIO(jpeg_bytes(image))), np.int16)

    changed = decoded(with_drain.image) != decoded(without.image)
    height, width = with_drain.drain.shape
    blocks = np.zeros_like(with_drain.drain)
    for y, x in zip(*np.nonzero(with_drain.drain)):
        blocks[y // 8 * 8:(y // 8 + 1) * 8, x // 8 * 8:(x // 8 + 1) * 8] = True
    assert changed.any() and not (changed & ~blocks).any()
    assert blocks.mean() < 0.1 and blocks.sum() < height * width


# ---------------------------------------------------------------------------------- sampling


def test_drains_follow_their_rates_and_change_nothing_else():
    plain = sampling.sample_labels(6_000, 2_000, seed=4)
    drained = sampling.sample_labels(6_000, 2_000, seed=4, p_drain=0.8, p_drain_valid=0.5,
                                     p_drain_other=0.02)
    pd.testing.assert_frame_equal(plain.table, drained.table)
    assert np.array_equal(plain.drawn, drained.drawn)
    assert np.array_equal(plain.shortcut, drained.shortcut)
    assert not plain.drain.any()
    ptx = drained.drawn[:, PTX] > 0
    for split, rate in (("train", 0.8), ("valid", 0.5)):
        rows = ptx & (drained.split == split)
        got = int(drained.drain[rows].sum())
        assert stats.binomtest(got, int(rows.sum()), rate).pvalue > 1e-3, (split, got, rows.sum())
    others = ~ptx
    got = int(drained.drain[others].sum())
    assert stats.binomtest(got, int(others.sum()), 0.02).pvalue > 1e-3


def test_a_phantom_with_drains_writes_their_masks_and_keeps_every_other_image(tmp_path):
    kwargs = dict(n_train=24, n_valid=12, seed=2, workers=1, progress=False)
    plain = generate(tmp_path / "plain", **kwargs)
    summary = generate(tmp_path / "drained", p_drain=1.0, p_drain_valid=1.0, p_drain_other=0.3,
                       **kwargs)
    assert plain["version"] == summary["version"] == "1.3"
    assert summary["rates"]["p_drain_other"] == 0.3
    total = 0
    for split in ("train", "valid"):
        drawn = pd.read_csv(tmp_path / "drained" / f"drawn_{split}.csv")
        assert list(drawn.columns[-2:]) == ["Shortcut", "Drain"]
        masks = read_chexlocalize(tmp_path / "drained" / "masks" / f"{split}_drain.json")
        counts = summary["counts"][split]["drain"]
        assert counts["Pneumothorax"] + counts["other"] == int(drawn["Drain"].sum()) == len(masks)
        assert counts["Pneumothorax"] == int((drawn["Pneumothorax"] == 1).sum())  # rate 1
        for _, row in drawn.iterrows():
            image_id = chexlocalize_image_id(row["Path"])
            parts = row["Path"].split("/", 1)[1]
            a = (tmp_path / "plain" / parts).read_bytes()
            b = (tmp_path / "drained" / parts).read_bytes()
            assert (image_id in masks) == bool(row["Drain"])
            if row["Drain"]:
                mask = rle_decode(masks[image_id]["Drain"])
                assert mask.any() and a != b
                total += 1
            else:
                assert a == b  # no drain: byte-identical to the phantom without drains
        plain_csv = (tmp_path / "plain" / f"{split}.csv").read_bytes()
        assert (tmp_path / "drained" / f"{split}.csv").read_bytes() == plain_csv
    assert total > 0


@pytest.mark.parametrize("name", ["p_drain", "p_drain_valid", "p_drain_other"])
def test_a_drain_rate_out_of_range_is_named(tmp_path, name):
    with pytest.raises(ParameterError, match=f"{name}=1.5: expected a probability"):
        generate(tmp_path / "x", n_train=4, n_valid=2, **{name: 1.5})
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------- counterfactual


@pytest.fixture(scope="module")
def drained(tmp_path_factory):
    out = tmp_path_factory.mktemp("drained") / "phantom"
    generate(out, n_train=20, n_valid=16, seed=5, workers=1, progress=False, p_drain=1.0,
             p_drain_valid=1.0, p_drain_other=0.4)
    return out


def test_rebuilt_specs_render_exactly_the_stored_images(drained):
    from chexlib.phantom.counterfactual import image_specs, render_stored

    specs = image_specs(drained, "valid")
    listed = pd.read_csv(drained / "drawn_valid.csv")
    assert list(specs) == listed["Path"].tolist()
    masks = read_chexlocalize(drained / "masks" / "valid_drain.json")
    with_drain = 0
    for _, row in listed.iterrows():
        spec = specs[row["Path"]]
        assert spec.drain == bool(row["Drain"]) and spec.shortcut == bool(row["Shortcut"])
        stored = np.asarray(Image.open(drained / row["Path"].split("/", 1)[1]))
        assert np.array_equal(render_stored(spec), stored)  # the very pixels the model reads
        if spec.drain:
            with_drain += 1
            without = render_stored(spec, drain=False)
            blocks = ndimage.maximum_filter(
                rle_decode(masks[chexlocalize_image_id(row["Path"])]["Drain"]).astype(np.uint8),
                size=15) > 0  # within 7 px of the drain covers every 8x8 block it touches
            changed = without != stored
            assert changed.any() and not (changed & ~blocks).any()
            # Brighter with the drain: removing it darkens the drain's pixels.
            assert stored[blocks].astype(float).mean() > without[blocks].astype(float).mean()
    assert with_drain > 0


def test_a_phantom_of_another_version_or_csv_is_refused(drained, tmp_path):
    import json
    import shutil

    from chexlib.errors import PhantomError
    from chexlib.phantom.counterfactual import image_specs

    copy = tmp_path / "copy"
    shutil.copytree(drained, copy)
    (copy / "valid.csv").write_text("\n".join((copy / "valid.csv").read_text().splitlines()[:-1]))
    with pytest.raises(PhantomError, match=r"valid.csv: its Path column is not the phantom's"):
        image_specs(copy, "valid")
    manifest = json.loads((copy / "phantom.json").read_text())
    (copy / "phantom.json").write_text(json.dumps(manifest | {"version": "1.2"}))
    with pytest.raises(PhantomError, match=r"phantom.json: a phantom of version '1.2'"):
        image_specs(copy, "valid")
