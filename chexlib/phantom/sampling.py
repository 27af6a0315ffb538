"""Label rows for the phantom, sampled from the real CheXpert ``train.csv``.

The phantom copies real *patients*: a seeded permutation of the real patients is walked and
each patient's frontal rows are taken until the split has its size (the last patient is trimmed).
Every label row is therefore a real one, with the real marginals and co-occurrences, the real
Sex / Age / AP-PA, and the real number of studies per patient. Patients are renumbered (train from
``patient00001``, valid after the last train patient, as in CheXpert) and their studies and
frontal views renumbered 1, 2, ... in the original order.

The validation split takes only each patient's first study (as CheXpert's validation set has one
study per patient); the training split takes all of a patient's studies.

From the real row the phantom decides what is *drawn* in the image (:func:`decide_drawn`):

* positive (1)   -> drawn at full strength;
* uncertain (-1) -> drawn faintly (strength :data:`FAINT_STRENGTH`) with probability
  ``p_uncertain_drawn``, otherwise not drawn;
* negative (0) or blank -> not drawn. "No Finding" is never drawn: it is true iff none of the 12
  pathologies is drawn (Support Devices does not count, as in CheXpert).

``train.csv`` keeps the labels as the report gave them (the real row) plus documented label noise
(:func:`add_report_noise`); ``valid.csv`` holds certain labels derived from what is drawn, like
CheXpert's radiologist-labelled validation set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from chexlib.data.labels import PATH_PATTERN, chexpert_train_labels
from chexlib.errors import ParameterError
from chexlib.observations import OBSERVATIONS

#: Folder name every ``Path`` starts with, whatever the output folder is called.
DATASET_NAME = "CheXphantom-v1.0"
#: Probability that an uncertain (-1) finding of the real row is drawn (faintly).
P_UNCERTAIN_DRAWN = 0.5
#: Strength of a drawn uncertain finding (1.0 = a positive finding).
FAINT_STRENGTH = 0.5
#: train.csv noise: a drawn full-strength positive is reported blank ("missed by the report").
P_MISSED_POSITIVE = 0.02
#: train.csv noise: a pathology that is neither drawn nor reported is reported positive, per cell.
P_SPURIOUS_POSITIVE = 0.002
#: Probability of the burned-in "PORTABLE" marker on AP films and on PA films (the shortcut).
P_SHORTCUT_AP = 0.90
P_SHORTCUT_PA = 0.03
#: Probability of a chest drain (:mod:`chexlib.phantom.drain`) on a pneumothorax image of
#: train.csv and of valid.csv, and on any other image (a drain left after a pleural effusion was
#: drained, say). 0 by default: the lab of notebook 07 sets them.
P_DRAIN = 0.0
P_DRAIN_VALID = 0.0
P_DRAIN_OTHER = 0.0

#: The 12 pathologies whose absence defines "No Finding" (all but No Finding and Support Devices).
PATHOLOGIES: tuple[str, ...] = OBSERVATIONS[1:13]
#: Observations that can be drawn (all but No Finding).
DRAWABLE: tuple[str, ...] = OBSERVATIONS[1:]
_NO_FINDING = 0
_PATHOLOGY_COLUMNS = np.arange(1, 13)

_real_cache: pd.DataFrame | None = None


@dataclass
class LabelPlan:
    """The label side of a phantom: one entry per image, train rows first, then valid rows.

    Attributes
    ----------
    table : DataFrame, N rows
        The CSV rows: ``Path, Sex, Age, Frontal/Lateral, AP/PA`` and the 14 reported labels
        (float: 1.0, 0.0, -1.0, NaN for blank).
    drawn : ndarray float32, shape [N, 14]
        Strength of each drawn observation (0 = not drawn, :data:`FAINT_STRENGTH`, or 1.0);
        column 0 ("No Finding") is 1.0 iff none of the 12 pathologies is drawn.
    real : ndarray float64, shape [N, 14]
        The real row each image was sampled from (before noise).
    shortcut : ndarray bool, shape [N]
        Whether the image carries the planted "PORTABLE" marker.
    drain : ndarray bool, shape [N]
        Whether the image carries the planted chest drain (:func:`sample_drains`).
    split : ndarray str, shape [N]
        ``"train"`` or ``"valid"``.
    patient : ndarray int64, shape [N]
        New patient number (1, 2, ...); the same number means the same phantom anatomy.
    """

    table: pd.DataFrame
    drawn: np.ndarray
    real: np.ndarray
    shortcut: np.ndarray
    split: np.ndarray
    patient: np.ndarray
    drain: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.drain is None:
            self.drain = np.zeros(len(self.table), bool)

    def __len__(self) -> int:
        return len(self.table)


def real_frontal_rows() -> pd.DataFrame:
    """The frontal rows of the real CheXpert ``train.csv``, loaded once per process (about 5 s).

    Returns
    -------
    DataFrame
        191,027 rows with the CSV columns plus integer columns ``patient_id``, ``study_no`` and
        ``view_no`` parsed from ``Path``, sorted by patient, study and view.
    """
    global _real_cache
    if _real_cache is None:
        df = chexpert_train_labels()
        df = df[df["Frontal/Lateral"] == "Frontal"].copy()
        parts = df["Path"].str.extract(PATH_PATTERN.pattern)
        df["patient_id"] = parts["patient"].str[len("patient") :].astype(np.int64)
        df["study_no"] = parts["study"].str[len("study") :].astype(np.int64)
        df["view_no"] = df["Path"].str.extract(r"/view(\d+)_")[0].astype(np.int64)
        _real_cache = df.sort_values(["patient_id", "study_no", "view_no"], kind="stable")
        _real_cache = _real_cache.reset_index(drop=True)
    return _real_cache


def sample_patient_rows(
    real: pd.DataFrame,
    sizes: dict[str, int],
    rng: np.random.Generator,
    first_study_only: tuple[str, ...] = ("valid",),
) -> pd.DataFrame:
    """Copy real patients into each split until it has its size.

    Parameters
    ----------
    real : DataFrame
        As :func:`real_frontal_rows`.
    sizes : dict split -> int
        Rows per split, in the order the splits are filled (e.g. ``{"train": 2000, "valid": 234}``).
    rng : numpy Generator
        The sampling generator.
    first_study_only : tuple of str
        Splits that take only each patient's first study (all its frontal views), as CheXpert's
        validation set has one study per patient; other splits take all of a patient's studies.

    Returns
    -------
    DataFrame
        The sampled real rows with the added columns ``split``, ``patient`` (new number, counting
        on across splits), ``study`` and ``view`` (renumbered 1, 2, ... within patient / study).
    """
    patient_ids = real["patient_id"].to_numpy()
    study_no = real["study_no"].to_numpy()
    starts = np.flatnonzero(np.r_[True, patient_ids[1:] != patient_ids[:-1]])
    counts = np.diff(np.r_[starts, len(real)])
    in_first = study_no == np.repeat(study_no[starts], counts)  # rows sorted by study
    first_counts = np.add.reduceat(in_first.astype(np.int64), starts)
    order = rng.permutation(len(starts))
    pieces, used = [], 0
    for split, size in sizes.items():
        per_patient = (first_counts if split in first_study_only else counts)[order[used:]]
        cumulative = np.cumsum(per_patient)
        if len(cumulative) == 0 or size > cumulative[-1]:
            raise ParameterError(
                f"n_train + n_valid = {sum(sizes.values())} is more than the real CheXpert "
                f"train.csv can supply ({len(real)} frontal rows); ask for fewer images"
            )
        # The first k patients cover the split; the last one is trimmed.
        k = int(np.searchsorted(cumulative, size, side="left")) + 1
        patients = order[used : used + k]
        rows = np.concatenate(
            [np.arange(starts[p], starts[p] + n) for p, n in zip(patients, per_patient[:k])]
        )
        part = real.iloc[rows[:size]].copy()
        part["split"] = split
        part["patient"] = np.repeat(np.arange(used, used + k) + 1, per_patient[:k])[:size]
        pieces.append(part)
        used += k
    out = pd.concat(pieces, ignore_index=True)
    out["study"] = out.groupby("patient")["study_no"].rank(method="dense").astype(np.int64)
    out["view"] = out.groupby(["patient", "study"]).cumcount().astype(np.int64) + 1
    return out


def decide_drawn(
    real: np.ndarray, rng: np.random.Generator, p_uncertain_drawn: float
) -> np.ndarray:
    """What each image shows, from its real label row.

    Parameters
    ----------
    real : ndarray, shape [N, 14]
        Real labels (1, 0, -1, NaN).
    rng : numpy Generator
    p_uncertain_drawn : float
        Probability that an uncertain finding is drawn (faintly).

    Returns
    -------
    ndarray float32, shape [N, 14]
        Drawn strength per observation; column 0 is 1.0 iff no pathology is drawn.
    """
    drawn = np.where(real == 1.0, 1.0, 0.0)
    faint = (real == -1.0) & (rng.random(real.shape) < p_uncertain_drawn)
    drawn = np.where(faint, FAINT_STRENGTH, drawn)
    drawn[:, _NO_FINDING] = (drawn[:, _PATHOLOGY_COLUMNS] == 0).all(axis=1)
    return drawn.astype(np.float32)


def add_report_noise(
    real: np.ndarray,
    drawn: np.ndarray,
    rng: np.random.Generator,
    p_missed: float,
    p_spurious: float,
) -> np.ndarray:
    """train.csv labels: the real (report) labels with a small, documented rate of noise.

    A drawn full-strength positive is reported blank with probability ``p_missed``; a drawable
    observation that is neither drawn nor reported positive / uncertain becomes positive with
    probability ``p_spurious``. Rows that change get their "No Finding" recomputed the way the
    CheXpert labeler sets it (1.0 iff no pathology is positive or uncertain, else blank).

    Returns
    -------
    ndarray float64, shape [N, 14]
    """
    report = real.copy()
    cells = np.zeros(real.shape, bool)
    cells[:, 1:] = True
    missed = cells & (drawn == 1.0) & (rng.random(real.shape) < p_missed)
    quiet = cells & (drawn == 0) & ~np.isin(real, (1.0, -1.0))
    spurious = quiet & (rng.random(real.shape) < p_spurious)
    report[missed] = np.nan
    report[spurious] = 1.0
    changed = (missed | spurious)[:, _PATHOLOGY_COLUMNS].any(axis=1)
    findings = np.isin(report[:, _PATHOLOGY_COLUMNS], (1.0, -1.0)).any(axis=1)
    report[changed, _NO_FINDING] = np.where(findings[changed], np.nan, 1.0)
    return report


def certain_labels(drawn: np.ndarray) -> np.ndarray:
    """valid.csv labels: 1.0 where drawn, 0.0 elsewhere ("No Finding" from the drawn pathologies)."""
    return (drawn > 0).astype(np.float64)


def sample_labels(
    n_train: int,
    n_valid: int,
    seed: int,
    *,
    p_uncertain_drawn: float = P_UNCERTAIN_DRAWN,
    p_missed: float = P_MISSED_POSITIVE,
    p_spurious: float = P_SPURIOUS_POSITIVE,
    p_shortcut_ap: float = P_SHORTCUT_AP,
    p_shortcut_pa: float = P_SHORTCUT_PA,
    p_drain: float = P_DRAIN,
    p_drain_valid: float = P_DRAIN_VALID,
    p_drain_other: float = P_DRAIN_OTHER,
    real: pd.DataFrame | None = None,
) -> LabelPlan:
    """Sample the labels of a phantom without rendering anything.

    Parameters
    ----------
    n_train, n_valid : int
        Number of images in each split (``n_valid`` may be 0).
    seed : int
        The phantom's seed; the same seed gives the same plan.
    p_uncertain_drawn, p_missed, p_spurious, p_shortcut_ap, p_shortcut_pa : float
        The documented rates (see the module constants).
    p_drain, p_drain_valid, p_drain_other : float
        The chest drain's rates (:func:`sample_drains`).
    real : DataFrame, optional
        The real frontal rows (default :func:`real_frontal_rows`).

    Returns
    -------
    LabelPlan
    """
    real = real_frontal_rows() if real is None else real
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2,)))
    sizes = {"train": int(n_train)} | ({"valid": int(n_valid)} if n_valid else {})
    rows = sample_patient_rows(real, sizes, rng)
    real_labels = rows[list(OBSERVATIONS)].to_numpy(np.float64)
    drawn = decide_drawn(real_labels, rng, p_uncertain_drawn)
    noisy = add_report_noise(real_labels, drawn, rng, p_missed, p_spurious)
    is_train = (rows["split"] == "train").to_numpy()
    labels = np.where(is_train[:, None], noisy, certain_labels(drawn))
    # LL / RL (17 real frontal rows) are lateral-decubitus frontal films: portable, so AP.
    view = rows["AP/PA"].where(rows["AP/PA"] == "PA", "AP").to_numpy()
    p_marker = np.where(view == "AP", p_shortcut_ap, p_shortcut_pa)
    shortcut = rng.random(len(rows)) < p_marker
    paths = (
        DATASET_NAME
        + "/"
        + rows["split"]
        + "/patient"
        + rows["patient"].map("{:05d}".format)
        + "/study"
        + rows["study"].astype(str)
        + "/view"
        + rows["view"].astype(str)
        + "_frontal.jpg"
    )
    table = pd.DataFrame(
        {
            "Path": paths.to_numpy(),
            "Sex": rows["Sex"].to_numpy(),
            "Age": rows["Age"].to_numpy(np.int64),
            "Frontal/Lateral": "Frontal",
            "AP/PA": view,
        }
    )
    table[list(OBSERVATIONS)] = labels
    split = rows["split"].to_numpy(str)
    return LabelPlan(
        table=table,
        drawn=drawn,
        real=real_labels,
        shortcut=shortcut,
        split=split,
        patient=rows["patient"].to_numpy(np.int64),
        drain=sample_drains(drawn, split, seed, p_drain, p_drain_valid, p_drain_other),
    )


def sample_drains(drawn: np.ndarray, split: np.ndarray, seed: int, p_drain: float,
                  p_drain_valid: float, p_drain_other: float) -> np.ndarray:
    """Which images carry a chest drain: a share of the pneumothorax images, rarely others.

    The draws come from their own stream (``SeedSequence(seed, spawn_key=(3,))``), so a phantom
    with drains has the same labels, marker and images (outside the drains) as one without.

    Parameters
    ----------
    drawn : ndarray [N, 14]
        Drawn strengths; a pneumothorax image is one whose Pneumothorax is drawn (faint or not).
    split : ndarray str [N]
    seed : int
    p_drain, p_drain_valid : float
        Share of pneumothorax images with a drain in train.csv and in valid.csv.
    p_drain_other : float
        Share of the other images with a drain (both splits).

    Returns
    -------
    ndarray bool [N]
    """
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(3,)))
    pneumothorax = drawn[:, OBSERVATIONS.index("Pneumothorax")] > 0
    rate = np.where(split == "valid", p_drain_valid, p_drain)
    return rng.random(len(drawn)) < np.where(pneumothorax, rate, p_drain_other)


def format_label(value: float) -> str:
    """CSV cell of a label: "1.0", "0.0", "-1.0" or "" (blank)."""
    return "" if np.isnan(value) else f"{value:.1f}"
