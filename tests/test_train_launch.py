"""chexlib.train.launch's datasets: the split notebooks 02 and 03 share, and the reported split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from chexlib.data import CheXpertDataset, patient_split, read_labels
from chexlib.train.launch import reported_data, training_data


def _params(**over):
    return {"image_size": 48, "uncertainty_policy": "ones", "val_fraction": 0.3, "seed": 4,
            "num_workers": 0, **over}


def test_training_data_rows_are_patient_splits(tiny_run, tmp_path):
    root = tiny_run[0]
    params = _params()
    train_ds, val_ds = training_data(params, root, tmp_path, progress=False)
    labels = read_labels(root / "train.csv")
    train_rows, val_rows = patient_split(labels, val_fraction=0.3, seed=4)
    assert len(val_rows) > 0 and len(train_rows) > 0
    np.testing.assert_array_equal(val_ds.indices, val_rows)
    np.testing.assert_array_equal(train_ds.indices, train_rows)
    pd.testing.assert_frame_equal(val_ds.labels, labels)
    # exactly what notebook 03 built by hand before: same images, targets and loss masks
    by_hand = CheXpertDataset(root, labels, indices=val_rows, image_size=48, policy="ones",
                              cache_dir=tmp_path)
    assert (val_ds.image_size, val_ds.policy) == (48, "ones")
    np.testing.assert_array_equal(val_ds.targets, by_hand.targets)
    np.testing.assert_array_equal(val_ds.masks, by_hand.masks)
    for i in range(len(val_ds)):
        for ours, theirs in zip(val_ds[i], by_hand[i]):
            torch.testing.assert_close(torch.as_tensor(ours), torch.as_tensor(theirs))


def test_reported_data_is_valid_csv_in_file_order(tiny_run, tmp_path):
    root = tiny_run[0]
    valid_ds = reported_data(_params(uncertainty_policy="zeros"), root, tmp_path, progress=False)
    labels = pd.read_csv(root / "valid.csv")
    assert valid_ds.labels["Path"].tolist() == labels["Path"].tolist()
    np.testing.assert_array_equal(valid_ds.indices, np.arange(len(labels)))
    assert (valid_ds.image_size, valid_ds.policy) == (48, "zeros")
    by_hand = CheXpertDataset(root, "valid", image_size=48, policy="zeros", cache_dir=tmp_path)
    np.testing.assert_array_equal(valid_ds.targets, by_hand.targets)
    torch.testing.assert_close(valid_ds[3][0], by_hand[3][0])
