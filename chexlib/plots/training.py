"""Figures of training: learning curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd


def learning_curves(history: pd.DataFrame, best_epoch: int | None = None) -> plt.Figure:
    """Training and validation loss, and validation mean AUROC, per epoch.

    Parameters
    ----------
    history : DataFrame
        ``history.csv``: columns ``epoch``, ``train_loss``, ``val_loss``, ``val_auroc``.
    best_epoch : int, optional
        Marked with a vertical line (the checkpoint that is kept).
    """
    fig, (loss_ax, auc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    loss_ax.plot(history["epoch"], history["train_loss"], "o-", label="training")
    loss_ax.plot(history["epoch"], history["val_loss"], "o-", label="internal validation")
    loss_ax.set(xlabel="epoch", ylabel="masked BCE loss", title="Loss")
    loss_ax.legend()
    auc_ax.plot(history["epoch"], history["val_auroc"], "o-", color="C2")
    auc_ax.set(xlabel="epoch", ylabel="mean AUROC", title="Internal validation AUROC")
    for ax in (loss_ax, auc_ax):
        if best_epoch:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
