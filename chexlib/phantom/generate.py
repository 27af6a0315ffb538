"""Write a complete phantom data set: images, CSVs, masks and ``phantom.json``.

Layout (exactly CheXpert-v1.0-small's, plus the ground truth)::

    DIR/train.csv  DIR/valid.csv                 CheXpert columns; Path = CheXphantom-v1.0/<split>/...
    DIR/train/patientNNNNN/studyN/viewN_frontal.jpg   8-bit grayscale JPEG, 320 px high
    DIR/valid/...
    DIR/masks/<split>_findings.json               CheXlocalize: image id -> observation -> RLE
    DIR/masks/<split>_shortcut.json               image id -> {"Shortcut": RLE} (marked images)
    DIR/masks/<split>_drain.json                  image id -> {"Drain": RLE} (images with a drain)
    DIR/drawn_<split>.csv                         Path, 14 observations, Shortcut, Drain (1/0)
    DIR/phantom.json                              generator, version, parameters, rates, counts

Every file is written to a temporary name in its folder and renamed (atomic). ``phantom.json`` is
written last: its presence marks a complete data set. While generating, ``.phantom-partial``
records the parameters, so an interrupted run's folder is recognised and regenerated rather
than trusted. Images are rendered in a process pool; each image's randomness comes from its own
``SeedSequence([seed, image_number])``, so the output does not depend on the number of workers.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from chexlib.data.images import resolve_image_path
from chexlib.data.labels import REQUIRED_COLUMNS
from chexlib.errors import ParameterError
from chexlib.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from chexlib.masks import chexlocalize_image_id, rle_encode, write_chexlocalize
from chexlib.observations import OBSERVATIONS
from chexlib.phantom import sampling
from chexlib.phantom.render import ImageSpec, render_image
from chexlib.progress import progress_bar

GENERATOR = "chexlib.phantom"
#: Bump when the output for given parameters changes: a folder of another version is not reused.
VERSION = "1.3"
JPEG_QUALITY = 90
DEFAULT_N_TRAIN = 2000
DEFAULT_N_VALID = 234
#: Names the generator owns inside the output folder (only these are ever deleted).
_OWNED = (
    "train",
    "valid",
    "masks",
    "train.csv",
    "valid.csv",
    "drawn_train.csv",
    "drawn_valid.csv",
    "phantom.json",
    ".phantom-partial",
)
_PARTIAL = ".phantom-partial"


def generate(
    out: str | os.PathLike,
    n_train: int = DEFAULT_N_TRAIN,
    n_valid: int = DEFAULT_N_VALID,
    seed: int = 0,
    workers: int | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    p_uncertain_drawn: float = sampling.P_UNCERTAIN_DRAWN,
    p_missed_positive: float = sampling.P_MISSED_POSITIVE,
    p_spurious_positive: float = sampling.P_SPURIOUS_POSITIVE,
    p_shortcut_ap: float = sampling.P_SHORTCUT_AP,
    p_shortcut_pa: float = sampling.P_SHORTCUT_PA,
    p_drain: float = sampling.P_DRAIN,
    p_drain_valid: float = sampling.P_DRAIN_VALID,
    p_drain_other: float = sampling.P_DRAIN_OTHER,
) -> dict:
    """Generate a phantom data set in CheXpert-v1.0-small format.

    Parameters
    ----------
    out : str or path-like
        Output folder (created). If it already holds a complete phantom with the same
        parameters, it is reused and nothing is written.
    n_train, n_valid : int
        Images in train.csv (>= 1) and valid.csv (>= 1).
    seed : int
        Seed (>= 0); the same seed and parameters give byte-identical files.
    workers : int, optional
        Worker processes (default ``os.cpu_count()``); 1 renders in this process.
    overwrite : bool
        Replace a folder that holds something else (another phantom, a partial one, files of
        other names are kept). Without it such a folder is refused.
    progress : bool
        Show a tqdm progress bar.
    p_uncertain_drawn, p_missed_positive, p_spurious_positive, p_shortcut_ap, p_shortcut_pa : float
        The documented rates (defaults: the constants of :mod:`chexlib.phantom.sampling`).
    p_drain, p_drain_valid, p_drain_other : float
        The chest drain's rates: on pneumothorax images of train.csv and of valid.csv, and on
        any other image (:func:`chexlib.phantom.sampling.sample_drains`).

    Returns
    -------
    dict
        The content of ``phantom.json`` plus ``"reused"`` (bool), ``"seconds"`` and
        ``"images_per_second"`` (0 when reused).

    Raises
    ------
    ParameterError
        For a parameter out of range, or a non-empty ``out`` that is not this phantom and
        ``overwrite`` is False.
    """
    params = _check_parameters(
        n_train,
        n_valid,
        seed,
        workers,
        p_uncertain_drawn,
        p_missed_positive,
        p_spurious_positive,
        p_shortcut_ap,
        p_shortcut_pa,
        p_drain,
        p_drain_valid,
        p_drain_other,
    )
    out = Path(out)
    existing = _read_manifest(out)
    if (
        existing is not None
        and existing.get("parameters") == params
        and existing.get("version") == VERSION
    ):
        return existing | {"reused": True, "seconds": 0.0, "images_per_second": 0.0}
    _prepare_folder(out, params, overwrite)
    start = time.perf_counter()
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    pool = _start_pool(workers) if workers > 1 else None
    try:
        atomic_write_json(out / _PARTIAL, params, indent=1)
        plan = sampling.sample_labels(
            params["n_train"],
            params["n_valid"],
            params["seed"],
            p_uncertain_drawn=p_uncertain_drawn,
            p_missed=p_missed_positive,
            p_spurious=p_spurious_positive,
            p_shortcut_ap=p_shortcut_ap,
            p_shortcut_pa=p_shortcut_pa,
            p_drain=p_drain,
            p_drain_valid=p_drain_valid,
            p_drain_other=p_drain_other,
        )
        paths = [str(resolve_image_path(out, p)) for p in plan.table["Path"]]
        for folder in sorted({os.path.dirname(p) for p in paths}):
            os.makedirs(folder, exist_ok=True)
        results = _run(list(zip(plan_specs(plan, params["seed"]), paths)), pool, workers, progress)
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    if pool is not None:
        pool.close()
        pool.join()
    manifest = _write_outputs(out, plan, results, params)
    seconds = time.perf_counter() - start
    return manifest | {
        "reused": False,
        "seconds": seconds,
        "images_per_second": len(plan) / seconds,
    }


def _check_parameters(n_train, n_valid, seed, workers, *rates) -> dict:
    def whole(name, value, low):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ParameterError(f"{name}={value!r}: expected a whole number >= {low}")
        return int(value)

    params = {
        "n_train": whole("n_train", n_train, 1),
        "n_valid": whole("n_valid", n_valid, 1),
        "seed": whole("seed", seed, 0),
    }
    if workers is not None:
        whole("workers", workers, 1)
    names = (
        "p_uncertain_drawn",
        "p_missed_positive",
        "p_spurious_positive",
        "p_shortcut_ap",
        "p_shortcut_pa",
        "p_drain",
        "p_drain_valid",
        "p_drain_other",
    )
    for name, value in zip(names, rates):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0.0 <= value <= 1.0
        ):
            raise ParameterError(f"{name}={value!r}: expected a probability between 0 and 1")
        params[name] = float(value)
    return params


def _read_manifest(out: Path) -> dict | None:
    try:
        with open(out / "phantom.json", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("generator") == GENERATOR else None


def _prepare_folder(out: Path, params: dict, overwrite: bool) -> None:
    """Make ``out`` ready for writing: empty, our own partial output, or ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise ParameterError(f"out={str(out)!r} is a file; expected a folder for the phantom")
    entries = sorted(os.listdir(out)) if out.is_dir() else []
    ours_partial = (out / _PARTIAL).is_file() and all(e in _OWNED for e in entries)
    if entries and not (overwrite or ours_partial):
        manifest = _read_manifest(out)
        what = (
            f"a phantom with other parameters {manifest.get('parameters')}"
            if manifest
            else f"{len(entries)} entries that are not a complete phantom (e.g. {entries[0]!r})"
        )
        raise ParameterError(
            f"out={str(out)!r} is not empty: it holds {what}. Choose an empty folder, or pass "
            f"overwrite=True (--overwrite) to replace the phantom's files there; requested {params}"
        )
    for name in entries:
        if name in _OWNED:  # never delete what the generator did not write
            target = out / name
            shutil.rmtree(
                target
            ) if target.is_dir() and not target.is_symlink() else target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _start_pool(workers: int):
    # Workers read the lung shapes while the main process reads the real labels.
    from chexlib.phantom.lungs import lung_library

    return multiprocessing.get_context().Pool(workers, initializer=lung_library)


def plan_specs(plan: sampling.LabelPlan, seed: int) -> list[ImageSpec]:
    """The render specification of every image of a label plan, in plan order."""
    table = plan.table
    return [
        ImageSpec(
            seed=seed,
            image_number=i,
            patient=int(plan.patient[i]),
            sex=str(table["Sex"].iat[i]),
            age=int(table["Age"].iat[i]),
            view=str(table["AP/PA"].iat[i]),
            drawn=tuple(float(v) for v in plan.drawn[i]),
            shortcut=bool(plan.shortcut[i]),
            drain=bool(plan.drain[i]),
        )
        for i in range(len(plan))
    ]


def _run(jobs: list, pool, workers: int, progress: bool) -> list:
    bar = progress_bar(total=len(jobs), desc="phantom", unit="img", disable=not progress)
    try:
        if pool is None:
            results = []
            for job in jobs:
                results.append(_render_job(job))
                bar.update()
            return results
        chunk = max(1, min(16, len(jobs) // (8 * workers)))
        results = []
        for result in pool.imap(_render_job, jobs, chunksize=chunk):
            results.append(result)
            bar.update()
        return results
    finally:
        bar.close()


def jpeg_bytes(image: np.ndarray) -> bytes:
    """An 8-bit grayscale image as the phantom stores it (JPEG, :data:`JPEG_QUALITY`)."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _render_job(job: tuple[ImageSpec, str]) -> tuple[dict, dict | None, dict | None]:
    """Worker: render one image, write its JPEG atomically, return its RLE-encoded masks."""
    spec, path = job
    rendered = render_image(spec)
    atomic_write_bytes(Path(path), jpeg_bytes(rendered.image), durable=False)
    findings = {name: rle_encode(mask) for name, mask in rendered.masks.items()}
    shortcut = rle_encode(rendered.shortcut) if rendered.shortcut is not None else None
    drain = rle_encode(rendered.drain) if rendered.drain is not None else None
    return findings, shortcut, drain


def _write_outputs(out: Path, plan: sampling.LabelPlan, results: list, params: dict) -> dict:
    table = plan.table
    counts = {}
    for split in ("train", "valid"):
        rows = np.flatnonzero(plan.split == split)
        ids = [chexlocalize_image_id(p) for p in table["Path"].iloc[rows]]
        _write_csv(out / f"{split}.csv", list(REQUIRED_COLUMNS), [_csv_row(table, i) for i in rows])
        drawn_rows = [
            [table["Path"].iat[i]]
            + ["1" if v > 0 else "0" for v in plan.drawn[i]]
            + ["1" if plan.shortcut[i] else "0"]
            + ["1" if plan.drain[i] else "0"]
            for i in rows
        ]
        _write_csv(out / f"drawn_{split}.csv", ["Path", *OBSERVATIONS, "Shortcut", "Drain"],
                   drawn_rows)
        findings = {ids[k]: results[i][0] for k, i in enumerate(rows) if results[i][0]}
        shortcut = {
            ids[k]: {"Shortcut": results[i][1]} for k, i in enumerate(rows) if results[i][1]
        }
        write_chexlocalize(out / "masks" / f"{split}_findings.json", findings)
        write_chexlocalize(out / "masks" / f"{split}_shortcut.json", shortcut)
        drain = {ids[k]: {"Drain": results[i][2]} for k, i in enumerate(rows) if results[i][2]}
        write_chexlocalize(out / "masks" / f"{split}_drain.json", drain)
        counts[split] = _split_counts(plan, rows)
    manifest = _manifest(params, counts)
    atomic_write_json(out / "phantom.json", manifest, indent=1)
    (out / _PARTIAL).unlink(missing_ok=True)
    return manifest


def _csv_row(table, i: int) -> list[str]:
    meta = [str(table[c].iat[i]) for c in REQUIRED_COLUMNS[:5]]
    return meta + [sampling.format_label(float(table[c].iat[i])) for c in OBSERVATIONS]


def _split_counts(plan: sampling.LabelPlan, rows: np.ndarray) -> dict:
    view = plan.table["AP/PA"].to_numpy()[rows]
    drawn = plan.drawn[rows]
    patients = plan.patient[rows]
    studies = {p.rsplit("/", 1)[0] for p in plan.table["Path"].iloc[rows]}
    pneumothorax = drawn[:, OBSERVATIONS.index("Pneumothorax")] > 0
    return {
        "images": len(rows),
        "patients": len(set(patients.tolist())),
        "studies": len(studies),
        "patient_numbers": [int(patients.min()), int(patients.max())],
        "AP": int((view == "AP").sum()),
        "PA": int((view == "PA").sum()),
        "shortcut": {
            "AP": int(plan.shortcut[rows][view == "AP"].sum()),
            "PA": int(plan.shortcut[rows][view == "PA"].sum()),
        },
        "drain": {
            "Pneumothorax": int((plan.drain[rows] & pneumothorax).sum()),
            "other": int((plan.drain[rows] & ~pneumothorax).sum()),
        },
        "drawn": {name: int((drawn[:, j] > 0).sum()) for j, name in enumerate(OBSERVATIONS)},
        "drawn_faint": {
            name: int(((drawn[:, j] > 0) & (drawn[:, j] < 1)).sum())
            for j, name in enumerate(OBSERVATIONS)
            if j > 0
        },
    }


def _manifest(params: dict, counts: dict) -> dict:
    from chexlib.phantom import anatomy, devices, drain, findings, render

    try:
        xrv = importlib.metadata.version("torchxrayvision")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - it is a dependency
        xrv = "unknown"
    return {
        "generator": GENERATOR,
        "version": VERSION,
        "dataset": sampling.DATASET_NAME,
        "parameters": params,
        "rates": {
            "p_uncertain_drawn": params["p_uncertain_drawn"],
            "faint_strength": sampling.FAINT_STRENGTH,
            "p_missed_positive": params["p_missed_positive"],
            "p_spurious_positive": params["p_spurious_positive"],
            "p_shortcut_ap": params["p_shortcut_ap"],
            "p_shortcut_pa": params["p_shortcut_pa"],
            "p_drain": params["p_drain"],
            "p_drain_valid": params["p_drain_valid"],
            "p_drain_other": params["p_drain_other"],
        },
        "contrast": {
            "finding_density": findings.DENSITY,
            "cardiomegaly_ctr_excess": findings.CARDIOMEGALY_CTR_EXCESS,
            "mediastinum_widening": findings.MEDIASTINUM_WIDENING,
            "normal_ctr": anatomy.NORMAL_CTR,
            "lung_darkness": render.LUNG_DARKNESS,
            "vessel_brightness": render.VESSEL_BRIGHTNESS,
            "tube_brightness": devices.TUBE_BRIGHTNESS,
            "marker_brightness": render.MARKER_BRIGHTNESS,
            "drain_wall_brightness": drain.DRAIN_WALL_BRIGHTNESS,
            "drain_stripe_brightness": drain.DRAIN_STRIPE_BRIGHTNESS,
        },
        "image": {
            "height": anatomy.HEIGHT,
            "width_range": anatomy.WIDTH_RANGE,
            "jpeg_quality": JPEG_QUALITY,
        },
        "sources": {
            "labels": "CheXpert train.csv (frontal rows) shipped by torchxrayvision",
            "lung_shapes": "torchxrayvision semantic_masks_v7labs_lungs.zip",
            "torchxrayvision": xrv,
        },
        "counts": counts,
    }


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
