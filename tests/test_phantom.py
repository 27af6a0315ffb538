"""chexlib.phantom: layout, labels, masks, determinism, the planted shortcut, the CLI.

One tiny phantom is generated per module (with two workers) and shared by the tests; statistical
checks run on label-only samples of 20,000 rows (no rendering).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from chexlib.data.labels import PATH_PATTERN, REQUIRED_COLUMNS, label_distribution, read_labels
from chexlib.errors import ParameterError
from chexlib.masks import chexlocalize_image_id, read_chexlocalize, rle_decode, rle_encode
from chexlib.observations import OBSERVATIONS
from chexlib.phantom import generate, sampling
from chexlib.phantom.__main__ import main
from chexlib.phantom.anatomy import HEIGHT, WIDTH_RANGE, cardiothoracic_ratio
from chexlib.phantom.findings import FINDINGS
from chexlib.phantom.render import ImageSpec, render_image

N_TRAIN, N_VALID, SEED = 30, 10, 0
PATHOLOGIES = list(OBSERVATIONS[1:13])
SPLITS = ("train", "valid")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "CheXphantom"
    summary = generate(out, n_train=N_TRAIN, n_valid=N_VALID, seed=SEED, workers=2, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def big_plan():
    """Label-only sample: 20,000 train rows (no images)."""
    return sampling.sample_labels(20_000, 0, seed=1)


def files_of(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def image_file(root: Path, path_value: str) -> Path:
    return root.joinpath(*Path(path_value).parts[1:])


def spec(
    number: int,
    drawn=(),
    *,
    patient: int | None = None,
    view: str = "PA",
    strength: float = 1.0,
    shortcut: bool = False,
    sex: str = "Male",
    age: int = 60,
) -> ImageSpec:
    strengths = [0.0] * len(OBSERVATIONS)
    for name in drawn:
        strengths[OBSERVATIONS.index(name)] = strength
    return ImageSpec(
        seed=7,
        image_number=number,
        patient=number if patient is None else patient,
        sex=sex,
        age=age,
        view=view,
        drawn=tuple(strengths),
        shortcut=shortcut,
    )


# ---------------------------------------------------------------------------------- layout


def test_csvs_have_the_chexpert_schema_and_every_row_its_image(phantom):
    root, _ = phantom
    for split, n in zip(SPLITS, (N_TRAIN, N_VALID)):
        with open(root / f"{split}.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert tuple(rows[0]) == REQUIRED_COLUMNS
        assert len(rows) == n + 1
        assert {cell for row in rows[1:] for cell in row[5:]} <= {"1.0", "0.0", "-1.0", ""}
        df = read_labels(root / f"{split}.csv")
        for value in df["Path"]:
            match = PATH_PATTERN.match(value)
            assert match and match["dataset"] == "CheXphantom-v1.0" and match["split"] == split
            assert match["view"] == "frontal"
            with Image.open(image_file(root, value)) as image:
                assert image.format == "JPEG" and image.mode == "L"
                assert image.height == HEIGHT and WIDTH_RANGE[0] <= image.width <= WIDTH_RANGE[1]
        assert (df["Frontal/Lateral"] == "Frontal").all()
        assert set(df["AP/PA"]) <= {"AP", "PA"}
        assert len(list((root / split).rglob("*.jpg"))) == n  # no stray images
    assert not list(root.rglob("*.tmp")) and not (root / ".phantom-partial").exists()


def test_valid_labels_are_certain_and_equal_what_was_drawn(phantom):
    root, _ = phantom
    valid = read_labels(root / "valid.csv")
    drawn = pd.read_csv(root / "drawn_valid.csv")
    assert list(drawn.columns) == ["Path", *OBSERVATIONS, "Shortcut", "Drain"]
    labels = valid[list(OBSERVATIONS)].to_numpy()
    assert np.isin(labels, (0.0, 1.0)).all()
    assert (valid["Path"].to_numpy() == drawn["Path"].to_numpy()).all()
    assert (labels == drawn[list(OBSERVATIONS)].to_numpy()).all()


def test_no_finding_is_consistent(phantom):
    root, _ = phantom
    for split in SPLITS:
        drawn = pd.read_csv(root / f"drawn_{split}.csv")
        none_drawn = (drawn[PATHOLOGIES] == 0).all(axis=1)
        assert (drawn["No Finding"] == none_drawn.astype(int)).all()
    train = read_labels(root / "train.csv")
    # As CheXpert's labeler: "No Finding" = 1 only without a positive or uncertain pathology.
    reported = np.isin(train[PATHOLOGIES].to_numpy(), (1.0, -1.0)).any(axis=1)
    assert not ((train["No Finding"] == 1.0).to_numpy() & reported).any()


def test_patients_are_disjoint_and_some_have_several_studies(phantom, big_plan):
    root, _ = phantom
    patients = {}
    for split in SPLITS:
        parts = read_labels(root / f"{split}.csv")["Path"].str.extract(PATH_PATTERN.pattern)
        patients[split] = parts["patient"].str[7:].astype(int)
        studies = parts.groupby("patient")["study"].nunique()
        if split == "train":
            assert (studies > 1).any()
        else:  # like CheXpert's validation set: one study per patient
            assert (studies == 1).all()
    assert patients["train"].min() == 1
    assert set(patients["train"]).isdisjoint(patients["valid"])
    assert patients["valid"].min() == patients["train"].max() + 1  # valid continues the numbering
    per_patient = pd.Series(big_plan.patient).value_counts()
    assert 0.2 < (per_patient > 1).mean() < 0.7


# ---------------------------------------------------------------------------------- masks


def test_every_drawn_finding_has_a_nonempty_mask_that_round_trips(phantom):
    root, _ = phantom
    for split in SPLITS:
        drawn = pd.read_csv(root / f"drawn_{split}.csv")
        findings = read_chexlocalize(root / "masks" / f"{split}_findings.json")
        shortcut = read_chexlocalize(root / "masks" / f"{split}_shortcut.json")
        for _, row in drawn.iterrows():
            image_id = chexlocalize_image_id(row["Path"])
            with Image.open(image_file(root, row["Path"])) as image:
                size = [image.height, image.width]
                pixels = np.asarray(image)
            expected = {name for name in OBSERVATIONS[1:] if row[name] == 1}
            assert set(findings.get(image_id, {})) == expected
            for rle in findings.get(image_id, {}).values():
                mask = rle_decode(rle)
                assert rle["size"] == size and mask.any()
                assert rle_encode(mask) == rle
            assert (image_id in shortcut) == bool(row["Shortcut"])
            if row["Shortcut"]:
                box = rle_decode(shortcut[image_id]["Shortcut"])
                assert box.any() and box.mean() < 0.05
                assert box[: HEIGHT // 4].sum() == box.sum()  # a top corner
                assert pixels[box].max() > 200  # the burned-in text is bright


def test_every_finding_draws_a_mask_at_both_strengths():
    assert set(FINDINGS) == set(OBSERVATIONS[1:])  # in drawing order, not CSV order
    for k, strength in enumerate((1.0, sampling.FAINT_STRENGTH)):
        rendered = render_image(spec(100 + k, OBSERVATIONS[1:], view="AP", strength=strength))
        assert set(rendered.masks) == set(OBSERVATIONS[1:])
        for name, mask in rendered.masks.items():
            assert mask.shape == rendered.image.shape and mask.any(), name


@pytest.mark.parametrize(
    "name, sign",
    [
        ("Lung Opacity", 1),
        ("Lung Lesion", 1),
        ("Edema", 1),
        ("Consolidation", 1),
        ("Pneumonia", 1),
        ("Atelectasis", 1),
        ("Pleural Effusion", 1),
        ("Pleural Other", 1),
        ("Support Devices", 1),
        ("Pneumothorax", -1),
    ],
)
def test_findings_change_the_image_inside_their_mask(name, sign):
    """Same patient and film with and without the finding: opacities brighten their mask,
    a pneumothorax darkens it; faint findings change it less."""
    changes = []
    for strength in (1.0, sampling.FAINT_STRENGTH):
        delta = []
        for number in range(3):
            with_it = render_image(spec(200 + number, [name], strength=strength))
            without = render_image(spec(200 + number))
            mask = with_it.masks[name]
            delta.append(float(with_it.image[mask].mean()) - float(without.image[mask].mean()))
        changes.append(sign * np.mean(delta))
    assert changes[0] > 8 and changes[1] > 2
    if name != "Support Devices":  # a faint device is one device, not necessarily a fainter one
        assert changes[0] > changes[1]


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_cardiomegaly_raises_the_cardiothoracic_ratio_above_half(view):
    for number in range(4):
        ratios = {}
        for label, drawn, strength in (
            ("normal", [], 1.0),
            ("faint", ["Cardiomegaly"], 0.5),
            ("full", ["Cardiomegaly"], 1.0),
        ):
            scene = render_image(spec(300 + number, drawn, view=view, strength=strength)).scene
            thorax = scene.lung_r | scene.lung_l | scene.heart
            ratios[label] = cardiothoracic_ratio(scene.heart, thorax)
        assert 0.37 < ratios["normal"] < 0.5 < ratios["faint"] < ratios["full"] < 0.7


def test_same_patient_same_anatomy():
    a = render_image(spec(400, patient=9)).scene
    b = render_image(spec(401, patient=9, view="AP")).scene
    c = render_image(spec(402, patient=10)).scene
    assert a.patient == b.patient and a.patient != c.patient
    assert a.study != b.study


# ---------------------------------------------------------------------------------- labels


def test_sampling_keeps_the_real_marginals(big_plan):
    """Positive rates of 20,000 sampled rows against the real frontal rows they come from."""
    real = label_distribution(sampling.real_frontal_rows())["positive_%"]
    train = pd.DataFrame(big_plan.table)
    sampled = label_distribution(pd.DataFrame(big_plan.real, columns=list(OBSERVATIONS)))[
        "positive_%"
    ]
    reported = label_distribution(train)["positive_%"]
    assert (sampled - real).abs().max() < 2.0  # percentage points
    assert (reported - real).abs().max() < 2.5  # plus the documented label noise


def test_drawn_and_reported_labels_follow_the_documented_rates(big_plan):
    real, drawn, report = (
        big_plan.real,
        big_plan.drawn,
        big_plan.table[list(OBSERVATIONS)].to_numpy(),
    )
    cells = np.zeros(real.shape, bool)
    cells[:, 1:] = True
    assert (drawn[cells & (real == 1.0)] == 1.0).all()
    assert (drawn[cells & ((real == 0.0) | np.isnan(real))] == 0.0).all()
    uncertain = drawn[cells & (real == -1.0)]
    assert set(np.unique(uncertain)) == {0.0, sampling.FAINT_STRENGTH}
    assert abs((uncertain > 0).mean() - sampling.P_UNCERTAIN_DRAWN) < 0.02
    missed = (np.isnan(report) & (drawn == 1.0))[:, 1:].sum() / (drawn[:, 1:] == 1.0).sum()
    assert abs(missed - sampling.P_MISSED_POSITIVE) < 0.005
    quiet = cells & (drawn == 0) & ~np.isin(real, (1.0, -1.0))
    spurious = (report[quiet] == 1.0).mean()
    assert abs(spurious - sampling.P_SPURIOUS_POSITIVE) < 0.001


def test_shortcut_marks_most_ap_and_few_pa_films(big_plan):
    view = big_plan.table["AP/PA"].to_numpy()
    assert set(view) == {"AP", "PA"}
    assert abs(big_plan.shortcut[view == "AP"].mean() - sampling.P_SHORTCUT_AP) < 0.015
    assert abs(big_plan.shortcut[view == "PA"].mean() - sampling.P_SHORTCUT_PA) < 0.015
    # AP films belong to sicker patients in the real labels, so the marker predicts findings.
    sick = (big_plan.drawn[:, 1:13] > 0).any(axis=1)
    assert sick[big_plan.shortcut].mean() > sick[~big_plan.shortcut].mean() + 0.05


# ---------------------------------------------------------------------------------- files


def test_same_seed_gives_identical_bytes_whatever_the_workers(phantom, tmp_path):
    root, _ = phantom
    again = tmp_path / "again"
    generate(again, n_train=N_TRAIN, n_valid=N_VALID, seed=SEED, workers=1, progress=False)
    assert files_of(again) == files_of(root)
    other = tmp_path / "other"
    generate(other, n_train=N_TRAIN, n_valid=N_VALID, seed=SEED + 1, workers=1, progress=False)
    first, second = files_of(root), files_of(other)
    assert first["train.csv"] != second["train.csv"]
    common = [name for name in first if name.endswith(".jpg") and name in second]
    assert all(first[name] != second[name] for name in common)


def test_reuses_a_complete_phantom_and_refuses_a_foreign_folder(phantom, tmp_path):
    root, summary = phantom
    assert not summary["reused"] and summary["images_per_second"] > 0
    before = (root / "phantom.json").stat().st_mtime_ns
    again = generate(root, n_train=N_TRAIN, n_valid=N_VALID, seed=SEED, progress=False)
    assert again["reused"] and (root / "phantom.json").stat().st_mtime_ns == before
    with pytest.raises(ParameterError, match="not empty"):
        generate(root, n_train=N_TRAIN + 1, n_valid=N_VALID, seed=SEED, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ParameterError, match="overwrite"):
        generate(foreign, n_train=4, n_valid=2, progress=False)
    generate(foreign, n_train=4, n_valid=2, workers=1, overwrite=True, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine" and (foreign / "phantom.json").is_file()


def test_an_interrupted_run_is_regenerated_not_trusted(tmp_path):
    out = tmp_path / "data"
    generate(out, n_train=4, n_valid=2, workers=1, progress=False)
    complete = files_of(out)
    # What an interruption leaves: no phantom.json, the partial marker, a damaged image.
    (out / "phantom.json").unlink()
    (out / ".phantom-partial").write_text("{}")
    next(out.rglob("*.jpg")).write_bytes(b"truncated")
    summary = generate(out, n_train=4, n_valid=2, workers=1, progress=False)
    assert not summary["reused"] and files_of(out) == complete


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_train": 0}, "n_train"),
        ({"n_valid": 0}, "n_valid"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
        ({"n_train": 2.5}, "n_train"),
        ({"p_shortcut_ap": 1.5}, "p_shortcut_ap"),
    ],
)
def test_bad_parameters_are_named(tmp_path, kwargs, name):
    with pytest.raises(ParameterError, match=name):
        generate(tmp_path / "x", **({"n_train": 4, "n_valid": 2} | kwargs))
    assert not (tmp_path / "x").exists()


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "--out",
        str(out),
        "--n-train",
        "4",
        "--n-valid",
        "2",
        "--seed",
        "3",
        "--workers",
        "1",
        "--quiet",
    ]
    assert main(args) == 0
    assert "wrote 6 images" in capsys.readouterr().out
    assert read_labels(out / "valid.csv").shape[0] == 2
    assert main(args) == 0 and "already holds" in capsys.readouterr().out
    assert main(args[:2] + ["--n-train", "0", "--quiet"]) == 2
    done = subprocess.run(
        [sys.executable, "-m", "chexlib.phantom", "--help"],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "--n-train" in done.stdout


def test_look_check_grid(phantom, tmp_path):
    """A 4 x 4 grid of phantom images with their mask outlines, for a person to look at
    (written to $PHANTOM_GRID if set, e.g. /tmp/phantom_grid.png)."""
    root, _ = phantom
    df = pd.concat([read_labels(root / f"{split}.csv") for split in SPLITS]).head(16)
    masks = {}
    for split in SPLITS:
        for kind in ("findings", "shortcut"):
            for image_id, per in read_chexlocalize(root / "masks" / f"{split}_{kind}.json").items():
                masks.setdefault(image_id, {}).update(per)
    colours = np.array(
        [(255, 64, 64), (64, 255, 64), (64, 160, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
    )
    grid = np.zeros((4 * HEIGHT, 4 * WIDTH_RANGE[1], 3), np.uint8)
    for k, path_value in enumerate(df["Path"]):
        pixels = np.asarray(Image.open(image_file(root, path_value)).convert("L"))
        tile = np.repeat(pixels[:, :, None], 3, axis=2)
        for j, rle in enumerate(masks.get(chexlocalize_image_id(path_value), {}).values()):
            mask = rle_decode(rle)
            tile[mask & ~ndimage.binary_erosion(mask)] = colours[j % len(colours)]
        r, c = divmod(k, 4)
        grid[
            r * HEIGHT : (r + 1) * HEIGHT, c * WIDTH_RANGE[1] : c * WIDTH_RANGE[1] + tile.shape[1]
        ] = tile
    target = Path(os.environ.get("PHANTOM_GRID", tmp_path / "phantom_grid.png"))
    Image.fromarray(grid).save(target)
    assert target.stat().st_size > 10_000
