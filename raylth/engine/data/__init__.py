"""Data sets (digits, CIFAR-10/100, tensor files) and seeded training batches."""

from .batches import (Batch, epoch_batches, fixed_batches, points_seen, resolve_augment, seed_for,
                      steps_per_epoch)
from .dataset import Dataset
from .registry import DATASETS, check_dataset, check_dataset_name, load_dataset, register_dataset
from . import cifar, digits, tensors  # noqa: F401  (register the loaders)

__all__ = ["Dataset", "DATASETS", "register_dataset", "load_dataset", "check_dataset",
           "check_dataset_name", "epoch_batches", "fixed_batches", "steps_per_epoch", "seed_for",
           "Batch", "points_seen", "resolve_augment"]
