"""Figures of the evaluation (notebook 03): ROC/PR curves, reliability, outcomes, AUROC vs study.

Each function returns a matplotlib Figure and shows nothing. A class whose labels take a single
value has no ROC/PR curve: its panel says why instead of drawing an empty or misleading curve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from chexlib.metrics import auprc, auroc
from chexlib.metrics._inputs import check_labels_probs, check_thresholds, class_names

OUTCOME_COLOURS = {"TP": "#27ae60", "FP": "#f39c12", "FN": "#c0392b", "TN": "#aab7b8"}
CURVE_COLOUR = "#2e86c1"
POINT_COLOUR = "#c0392b"
STUDY_COLOUR = "#7d3c98"


def roc_pr_curves(y_true, y_prob, classes: Sequence[str] | None = None, thresholds=None,
                  columns: int = 5) -> plt.Figure:
    """ROC and precision-recall curve of every class, as small multiples.

    Classes are laid out ``columns`` per row; under each row of ROC panels (AUROC in the title)
    comes the row of the same classes' PR panels (average precision in the title, the
    prevalence as the no-skill baseline).

    Parameters
    ----------
    y_true : array-like, shape [N, C]
        Binary labels, 0 or 1.
    y_prob : array-like, shape [N, C]
        Predicted probabilities in [0, 1].
    classes : list of C str, optional
        Panel titles; default the 14 CheXpert observations when C == 14.
    thresholds : array-like, shape [C], optional
        Operating thresholds (positive iff prob >= threshold), marked as a dot on both curves.
    columns : int
        Classes per row.
    """
    y_true, y_prob = check_labels_probs(y_true, y_prob)
    names = class_names(classes, y_true.shape[1])
    if thresholds is not None:
        thresholds = check_thresholds(thresholds, len(names))
    rows = int(np.ceil(len(names) / columns))
    fig, axes = plt.subplots(2 * rows, columns, figsize=(3.0 * columns, 5.6 * rows),
                             squeeze=False)
    aurocs, auprcs = auroc(y_true, y_prob), auprc(y_true, y_prob)
    for k in range(rows * columns):
        roc_ax, pr_ax = axes[2 * (k // columns), k % columns], axes[2 * (k // columns) + 1,
                                                                     k % columns]
        if k >= len(names):
            roc_ax.axis("off")
            pr_ax.axis("off")
            continue
        labels, probs = y_true[:, k], y_prob[:, k]
        threshold = None if thresholds is None else thresholds[k]
        _roc_panel(roc_ax, labels, probs, names[k], aurocs[k], threshold)
        _pr_panel(pr_ax, labels, probs, names[k], auprcs[k], threshold)
    fig.tight_layout()
    return fig


def _undefined_reason(labels: np.ndarray) -> str | None:
    """The note for a single-valued class, or None when both labels are present."""
    if labels.sum() == 0:
        return "undefined:\nno positives"
    if labels.sum() == len(labels):
        return "undefined:\nno negatives"
    return None


def _note_panel(ax: plt.Axes, title: str, note: str) -> None:
    """An empty panel carrying a note instead of a curve."""
    ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=9, color="0.35",
            transform=ax.transAxes)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _roc_panel(ax, labels, probs, name, area, threshold) -> None:
    """One class's ROC curve with the chance diagonal and the operating point."""
    reason = _undefined_reason(labels)
    if reason:
        _note_panel(ax, f"{name}\nROC", reason)
        return
    fpr, tpr, _ = roc_curve(labels, probs)
    ax.plot([0, 1], [0, 1], ls=":", color="0.6", lw=0.8)
    ax.plot(fpr, tpr, color=CURVE_COLOUR, lw=1.4)
    if threshold is not None:
        predicted = probs >= threshold
        ax.plot(predicted[labels == 0].mean(), predicted[labels == 1].mean(), "o",
                color=POINT_COLOUR, ms=5, label=f"t = {threshold:.2f}")
        ax.legend(loc="lower right", fontsize=7, frameon=False)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="1 - specificity", ylabel="sensitivity")
    ax.set_title(f"{name}\nAUROC {area:.3f}", fontsize=8)
    _small_ticks(ax)


def _pr_panel(ax, labels, probs, name, area, threshold) -> None:
    """One class's precision-recall curve with the prevalence baseline and operating point."""
    reason = _undefined_reason(labels)
    if reason:
        _note_panel(ax, f"{name}\nprecision-recall", reason)
        return
    precision, recall, _ = precision_recall_curve(labels, probs)
    prevalence = labels.mean()
    ax.axhline(prevalence, ls=":", color="0.6", lw=0.8, label=f"prevalence {prevalence:.2f}")
    ax.step(recall, precision, where="post", color=CURVE_COLOUR, lw=1.4)
    if threshold is not None:
        predicted = probs >= threshold
        if predicted.any():  # precision is undefined when nothing is predicted positive
            ax.plot(predicted[labels == 1].mean(), labels[predicted].mean(), "o",
                    color=POINT_COLOUR, ms=5)
    ax.legend(loc="lower left", fontsize=7, frameon=False)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    ax.set_title(f"{name}\nAP {area:.3f}", fontsize=8)
    _small_ticks(ax)


def _small_ticks(ax: plt.Axes) -> None:
    ax.tick_params(labelsize=7)
    ax.xaxis.label.set_size(7)
    ax.yaxis.label.set_size(7)


def reliability_diagram(calibration_table: pd.DataFrame, classes: Sequence[str] | None = None,
                        brier=None, columns: int = 5) -> plt.Figure:
    """Observed positive rate against mean predicted probability per bin, one panel per class.

    Parameters
    ----------
    calibration_table : DataFrame
        From :func:`chexlib.metrics.calibration_table` (long format).
    classes : list of str, optional
        Which classes to show, in this order; default all, in table order.
    brier : array-like [len(classes)] or mapping class -> float, optional
        Brier scores (:func:`chexlib.metrics.brier_scores`), shown in each panel's title. The
        binned table alone cannot give them exactly.
    columns : int
        Panels per row.

    Notes
    -----
    Points on the diagonal are calibrated; below it the model over-predicts. Marker area grows
    with the number of images in the bin, since a bin of 2 images says little.
    """
    names = list(dict.fromkeys(calibration_table["class"])) if classes is None else list(classes)
    scores = _brier_lookup(brier, names)
    rows = int(np.ceil(len(names) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.0 * rows), squeeze=False)
    largest = max(1, int(calibration_table["count"].max())) if len(calibration_table) else 1
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        part = calibration_table[calibration_table["class"] == name]
        ax.plot([0, 1], [0, 1], ls=":", color="0.6", lw=0.8)
        ax.plot(part["mean_predicted"], part["observed_rate"], color=CURVE_COLOUR, lw=1.2)
        ax.scatter(part["mean_predicted"], part["observed_rate"], color=CURVE_COLOUR,
                   s=8 + 80 * part["count"] / largest, zorder=3)
        title = name if name not in scores else f"{name}\nBrier {scores[name]:.3f}"
        ax.set_title(title, fontsize=8)
        ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="mean predicted", ylabel="observed rate")
        _small_ticks(ax)
    fig.tight_layout()
    return fig


def _brier_lookup(brier, names: list[str]) -> dict[str, float]:
    """Brier scores by class name from an array aligned with ``names`` or a mapping."""
    if brier is None:
        return {}
    if isinstance(brier, (Mapping, pd.Series)):
        return {name: float(brier[name]) for name in names if name in brier}
    return dict(zip(names, np.asarray(brier, dtype=float)))


def outcome_bars(counts: pd.DataFrame) -> plt.Figure:
    """Stacked horizontal bars of TP / FP / FN / TN per class.

    Parameters
    ----------
    counts : DataFrame [C x 4]
        From :func:`chexlib.metrics.outcome_counts` (columns TP, FP, FN, TN).
    """
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(counts) + 1.5))
    left = np.zeros(len(counts))
    names = [str(name) for name in counts.index]
    for kind, colour in OUTCOME_COLOURS.items():
        values = counts[kind].to_numpy(dtype=float)
        ax.barh(names, values, left=left, color=colour, label=kind)
        left += values
    ax.invert_yaxis()  # first class on top, as in the tables
    ax.set_xlabel("images")
    ax.set_title("Outcome per class at the chosen thresholds")
    ax.legend(ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.06), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def auroc_comparison(table: pd.DataFrame, study: Mapping[str, float],
                     label: str = "this run (bootstrap CI)",
                     study_label: str = "original study, REAL CheXpert valid.csv (234 images)"
                     ) -> plt.Figure:
    """Our per-class AUROC with its interval beside a published reference.

    Parameters
    ----------
    table : DataFrame
        From :func:`chexlib.metrics.per_class_table`.
    study : mapping class -> float
        Reference AUROCs, e.g. :data:`chexlib.reference.STUDY_AUROC`. These come from other
        data (the real CheXpert validation set), so the legend says so; NaN or absent classes
        are written "missing".
    label, study_label : str
        Legend entries of the two series.
    """
    names = [str(name) for name in table.index]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.8))
    ax.axvline(0.5, ls=":", color="0.6", lw=0.8)
    ours = table["auroc"].to_numpy(dtype=float)
    low, high = table["auroc_low"].to_numpy(dtype=float), table["auroc_high"].to_numpy(dtype=float)
    has_ci = np.isfinite(ours) & np.isfinite(low) & np.isfinite(high)
    ax.errorbar(ours[has_ci], y[has_ci], xerr=[ours[has_ci] - low[has_ci],
                                               high[has_ci] - ours[has_ci]],
                fmt="o", color=CURVE_COLOUR, capsize=3, label=label)
    no_ci = np.isfinite(ours) & ~has_ci
    ax.plot(ours[no_ci], y[no_ci], "o", color=CURVE_COLOUR)
    reference = np.array([float(study.get(name, np.nan)) for name in names])
    ax.plot(reference, y + 0.2, "D", color=STUDY_COLOUR, ms=5, label=study_label)
    for k in np.flatnonzero(~np.isfinite(ours)):
        ax.text(0.02, y[k] - 0.1, "this run: undefined", va="center", fontsize=7,
                color=CURVE_COLOUR)
    for k in np.flatnonzero(~np.isfinite(reference)):
        ax.text(0.02, y[k] + 0.25, "study: missing", va="center", fontsize=7,
                color=STUDY_COLOUR)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.02), xlabel="AUROC")
    ax.set_title("Per-class AUROC (the study's numbers are on other data)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.08), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
