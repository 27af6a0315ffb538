"""chexlib.masks against pycocotools, the reference implementation of COCO RLE."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from chexlib.errors import MaskFormatError, MissingFileError
from chexlib.masks import (
    chexlocalize_image_id,
    read_chexlocalize,
    rle_decode,
    rle_encode,
    write_chexlocalize,
)

coco = pytest.importorskip("pycocotools.mask")

# pycocotools' decode trips a numpy 2 deprecation inside pycocotools itself.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def coco_encode(mask: np.ndarray) -> dict:
    return coco.encode(np.asfortranarray(mask.astype(np.uint8)))


def coco_decode(rle: dict) -> np.ndarray:
    counts = rle["counts"]
    counts = counts.encode() if isinstance(counts, str) else counts
    return coco.decode({"size": list(rle["size"]), "counts": counts}).astype(bool)


def assert_agrees_with_coco(mask: np.ndarray) -> None:
    ours = rle_encode(mask)
    theirs = coco_encode(mask)
    assert isinstance(ours["counts"], str)
    assert ours["counts"].encode("ascii") == theirs["counts"]  # byte for byte
    assert ours["size"] == [int(v) for v in theirs["size"]] == list(mask.shape)
    decoded = rle_decode(theirs)
    assert decoded.dtype == bool and decoded.shape == mask.shape
    np.testing.assert_array_equal(decoded, mask)
    np.testing.assert_array_equal(coco_decode(ours), mask)


def _blob(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.5, max(h, w) / 2 + 1)
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


SHAPES = [(1, 1), (1, 7), (7, 1), (2, 3), (31, 17), (64, 64), (97, 130), (320, 389)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.02, 0.5, 0.97])
def test_random_masks_match_pycocotools(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    assert_agrees_with_coco(rng.random(shape) < density)


@pytest.mark.parametrize("shape", SHAPES)
def test_blob_masks_match_pycocotools(shape):
    rng = np.random.default_rng(sum(shape))
    assert_agrees_with_coco(_blob(*shape, rng))


@pytest.mark.parametrize("shape", [(1, 1), (5, 9), (320, 320)])
@pytest.mark.parametrize("fill", [False, True])
def test_empty_and_full_masks(shape, fill):
    assert_agrees_with_coco(np.full(shape, fill))


@pytest.mark.parametrize("pos", [(0, 0), (0, 8), (4, 0), (4, 8), (2, 3)])
def test_single_pixel(pos):
    m = np.zeros((5, 9), dtype=bool)
    m[pos] = True
    assert_agrees_with_coco(m)


def test_large_masks_match_pycocotools():
    rng = np.random.default_rng(7)
    # Random noise gives ~500k runs (many multi-group numbers); blobs give long runs and large
    # negative/positive deltas.
    assert_agrees_with_coco(rng.random((1000, 1000)) < 0.5)
    assert_agrees_with_coco(_blob(1000, 1000, rng) | _blob(1000, 1000, rng))
    stripes = np.zeros((1000, 1000), dtype=bool)
    stripes[:, ::3] = True  # whole columns: runs of 1000 and 2000 pixels
    assert_agrees_with_coco(stripes)


def test_known_encoding():
    # Hand-worked: column-major [0, 1, 1, 0] on a 2x2 mask: runs 1, 2, 1 -> "121".
    m = np.array([[0, 1], [1, 0]], dtype=bool)
    assert rle_encode(m) == {"size": [2, 2], "counts": "121"}


def test_integer_01_mask_accepted_and_bad_values_rejected():
    m = np.array([[0, 1], [1, 1]], dtype=np.uint8)
    assert rle_encode(m) == rle_encode(m.astype(bool))
    with pytest.raises(MaskFormatError, match="only 0 and 1"):
        rle_encode(np.array([[0, 2]]))
    with pytest.raises(MaskFormatError, match="2-D"):
        rle_encode(np.zeros(5, dtype=bool))


def test_decode_accepts_bytes_and_uncompressed_list_counts():
    rng = np.random.default_rng(3)
    m = rng.random((13, 11)) < 0.3
    theirs = coco_encode(m)
    assert isinstance(theirs["counts"], bytes)
    np.testing.assert_array_equal(rle_decode(theirs), m)
    # Uncompressed runs, built independently: column-major flat mask, 0-run first.
    flat = m.ravel(order="F").astype(int)
    runs, value, count = [], 0, 0
    for v in flat:
        if v != value:
            runs.append(count)
            value, count = v, 0
        count += 1
    runs.append(count)
    np.testing.assert_array_equal(rle_decode({"size": [13, 11], "counts": runs}), m)
    # pycocotools agrees on the meaning of the uncompressed form.
    compressed = coco.frPyObjects({"size": [13, 11], "counts": runs}, 13, 11)
    assert compressed["counts"] == theirs["counts"]


@settings(max_examples=200, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_property_matches_pycocotools(mask):
    assert_agrees_with_coco(mask)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(1, 30),
    st.lists(st.integers(0, 2000), min_size=1, max_size=60),
)
def test_property_runs_of_any_length(h, w, lengths):
    # Long runs exercise multi-group numbers and negative deltas more than random pixels do.
    flat = np.repeat(np.arange(len(lengths)) % 2 == 1, lengths)
    flat = np.resize(flat, h * w) if flat.size else np.zeros(h * w, dtype=bool)
    assert_agrees_with_coco(flat.reshape((h, w), order="F"))


# ------------------------------------------------------------------------------------------
# malformed RLEs
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rle, message",
    [
        ({"counts": "121"}, "missing 'size'"),
        ({"size": [2, 2]}, "missing 'counts'"),
        ({"size": [2], "counts": "121"}, "'size'"),
        ({"size": [2, -1], "counts": "121"}, "'size'"),
        ({"size": [2, 2], "counts": "12"}, "add up to 3 pixels; expected h \\* w = 2 \\* 2 = 4"),
        ({"size": [2, 2], "counts": "1211"}, "add up to 7"),
        ({"size": [2, 2], "counts": "1 1"}, "alphabet"),
        ({"size": [2, 2], "counts": "1\x7f"}, "alphabet"),
        ({"size": [2, 2], "counts": "1P"}, "ends in the middle"),  # "P" = 48 + 32: more follows
        ({"size": [2, 2], "counts": ""}, "empty"),
        ({"size": [2, 2], "counts": 4}, "expected a COCO RLE string"),
        ({"size": [2, 2], "counts": [1, -1, 4]}, "negative"),
        ("121", "expected an object"),
    ],
)
def test_malformed_rle(rle, message):
    with pytest.raises(MaskFormatError, match=message):
        rle_decode(rle)


# ------------------------------------------------------------------------------------------
# CheXlocalize files
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, expected",
    [
        (
            "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg",
            "patient64541_study1_view1_frontal",
        ),
        (
            "CheXpert-v1.0/test/patient64741/study1/view2_lateral.jpg",
            "patient64741_study1_view2_lateral",
        ),
        ("patient00001/study12/view1_frontal.jpg", "patient00001_study12_view1_frontal"),
        (
            "C:\\data\\CheXphantom-v1.0\\valid\\patient7\\study2\\view1_frontal.jpg",
            "patient7_study2_view1_frontal",
        ),
    ],
)
def test_chexlocalize_image_id(path, expected):
    assert chexlocalize_image_id(path) == expected


@pytest.mark.parametrize(
    "path", ["valid/patient1/view1_frontal.jpg", "patient1/study1/view1_frontal.png", ""]
)
def test_chexlocalize_image_id_rejects_other_paths(path):
    with pytest.raises(MaskFormatError, match="does not end in"):
        chexlocalize_image_id(path)


def test_json_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    a, b, c = rng.random((40, 50)) < 0.2, _blob(320, 390, rng), np.zeros((8, 8), dtype=bool)
    coco_rle = coco_encode(c)  # an RLE dict with bytes counts, as pycocotools returns it
    path = tmp_path / "nested" / "dir" / "gt.json"
    write_chexlocalize(
        path,
        {
            "patient1_study1_view1_frontal": {"Cardiomegaly": a, "Edema": b},
            "patient2_study1_view1_frontal": {"Pleural Effusion": coco_rle},
        },
    )
    # The file is plain CheXlocalize JSON that pycocotools can decode.
    doc = json.loads(path.read_text())
    np.testing.assert_array_equal(coco_decode(doc["patient1_study1_view1_frontal"]["Edema"]), b)
    back = read_chexlocalize(path)
    assert set(back) == {"patient1_study1_view1_frontal", "patient2_study1_view1_frontal"}
    np.testing.assert_array_equal(
        rle_decode(back["patient1_study1_view1_frontal"]["Cardiomegaly"]), a
    )
    np.testing.assert_array_equal(rle_decode(back["patient1_study1_view1_frontal"]["Edema"]), b)
    np.testing.assert_array_equal(
        rle_decode(back["patient2_study1_view1_frontal"]["Pleural Effusion"]), c
    )
    assert (
        back["patient2_study1_view1_frontal"]["Pleural Effusion"]["counts"]
        == coco_rle["counts"].decode()
    )
    assert [p.name for p in path.parent.iterdir()] == ["gt.json"]  # no temp file left behind


def test_write_rejects_bad_entries_and_leaves_no_file(tmp_path):
    path = tmp_path / "gt.json"
    with pytest.raises(MaskFormatError, match=r"masks\['img'\]\['Edema'\].*only 0 and 1"):
        write_chexlocalize(path, {"img": {"Edema": np.array([[0, 3]])}})
    with pytest.raises(MaskFormatError, match=r"masks\['img'\]\['Edema'\].*add up to"):
        write_chexlocalize(path, {"img": {"Edema": {"size": [3, 3], "counts": "121"}}})
    assert not path.exists()


def _write_json(path, doc):
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"counts": "121"}, "missing 'size'"),
        ({"size": [2, 2]}, "missing 'counts'"),
        ({"size": [2, 2], "counts": "1 1"}, "not a valid COCO RLE string"),
        ({"size": [2, 3], "counts": "121"}, "add up to 4 pixels"),
    ],
)
def test_read_malformed_entry_names_file_image_and_observation(tmp_path, entry, message):
    path = _write_json(
        tmp_path / "gt.json",
        {
            "patient1_study1_view1_frontal": {
                "Cardiomegaly": {"size": [2, 2], "counts": "121"},
                "Edema": entry,
            }
        },
    )
    with pytest.raises(MaskFormatError) as info:
        read_chexlocalize(path)
    text = str(info.value)
    assert str(path) in text and "'patient1_study1_view1_frontal'" in text and "'Edema'" in text
    assert message in text


def test_read_malformed_files(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        read_chexlocalize(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MaskFormatError, match="not a valid JSON"):
        read_chexlocalize(bad)
    with pytest.raises(MaskFormatError, match="expected a JSON object"):
        read_chexlocalize(_write_json(tmp_path / "list.json", [1, 2]))
    with pytest.raises(MaskFormatError, match="image 'img'.*expected an object"):
        read_chexlocalize(_write_json(tmp_path / "flat.json", {"img": "121"}))


def test_resize_mask_by_area():
    from chexlib.masks import resize_mask

    mask = np.zeros((320, 380), bool)
    mask[100:200, 50:250] = True
    small = resize_mask(mask, (64, 64))
    assert small.shape == (64, 64)
    # the share of the image covered is kept (area interpolation, then a 0.5 threshold)
    assert abs(small.mean() - mask.mean()) < 0.02
    assert small[30, 20] and not small[5, 5]
    assert resize_mask(np.zeros((10, 10), bool), (4, 4)).sum() == 0
