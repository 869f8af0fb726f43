"""scikit-learn's 8x8 handwritten digits: bundled, so it works offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset
from .registry import register_dataset

TEST_FRACTION = 0.3


def split_indices(labels: np.ndarray, fraction: float = TEST_FRACTION):
    """A fixed stratified split: per class, a RandomState(0) permutation picks
    round(fraction * count) test images. Independent of every run seed."""
    rng = np.random.RandomState(0)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        test.append(idx[rng.permutation(len(idx))[: int(round(fraction * len(idx)))]])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)  # sorted: classes stay interleaved
    return train, test


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 8, 8) in 0..16, labels (N,)), as sklearn.datasets.load_digits
    gives them. Read from the file scikit-learn bundles without importing
    scikit-learn when it is where load_digits reads it: the import pulls in
    SciPy, a second of start-up in every worker process."""
    spec = importlib.util.find_spec("sklearn")
    bundled = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if bundled is not None and bundled.is_file():
        table = np.loadtxt(bundled, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sk_load

    raw = sk_load()
    return raw.images, raw.target


@register_dataset("digits")
def load_digits(spec, root=None) -> Dataset:
    raw_images, raw_labels = digits_arrays()
    images = torch.from_numpy(raw_images.astype(np.float32)).unsqueeze(1)  # (N,1,8,8), 0..16
    labels = torch.from_numpy(raw_labels.astype(np.int64))
    train, test = (torch.from_numpy(i) for i in split_indices(raw_labels))
    train_x = images[train]
    return Dataset(
        name="digits",
        train_x=train_x, train_y=labels[train],
        test_x=images[test], test_y=labels[test],
        mean=(float(train_x.double().mean()),), std=(float(train_x.double().std()),),
        num_classes=10, augment=False, pixel_max=16.0)
