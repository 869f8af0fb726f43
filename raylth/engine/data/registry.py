"""Data sets by name: the loaders, the driver's up-front check, train_size."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

from raylth.errors import SpecError, did_you_mean
from raylth.specs.groups import DataSpec

import torch

from .batches import seed_for
from .dataset import Dataset
from .zca import whitened

# name -> loader(spec, root) -> Dataset on the CPU, at full size;
# a ``stored`` one is loader(spec, root, store): it reads an artifact of the store.
DATASETS: dict[str, Callable[..., Dataset]] = {}
_STORED: set[str] = set()
_TAKES: dict[str, tuple[str, ...]] = {}  # which of data.path / data.test a set reads
# name -> {data.norm: (mean, std)} in the units of x.float(), for norms other than "standard"
_NORMS: dict[str, dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {}


def register_dataset(name: str, *, stored: bool = False, takes: tuple[str, ...] = (), norms: dict | None = None):
    def deco(fn):
        DATASETS[name] = fn
        _TAKES[name] = takes
        _NORMS[name] = dict(norms or {})
        if stored:
            _STORED.add(name)
        return fn
    return deco


def check_dataset_name(name: str, field: str = "data.name") -> None:
    if name not in DATASETS:
        raise SpecError(f"{field}: unknown data set {name!r}{did_you_mean(name, DATASETS)}; known data sets are "
                        f"{', '.join(sorted(DATASETS))}")


def _check_spec(spec: DataSpec) -> None:
    check_dataset_name(spec.name)
    for key in ("path", "test"):
        if getattr(spec, key) is not None and key not in _TAKES[spec.name]:
            takers = " and ".join(sorted(n for n, takes in _TAKES.items() if key in takes))
            raise SpecError(f"data.{key}: only the {takers} data sets take {key}; remove it for {spec.name}")
    if spec.validation and spec.name in _STORED:
        raise SpecError(f"data.validation: {spec.name} is made from a real data set; hold out images of that "
                        "one (its data.validation)")
    if spec.norm != "standard" and spec.norm not in _NORMS[spec.name]:
        having = sorted(n for n, norms in _NORMS.items() if spec.norm in norms)
        raise SpecError(f"data.norm: {spec.norm!r} is defined for {', '.join(having) or 'no data set'}, not "
                        f"{spec.name}; leave norm out (standard) for {spec.name}")


def load_dataset(spec: DataSpec, root=None, store=None) -> Dataset:
    """Load on the CPU, keep the first spec.train_size training images, set
    augment (spec.augment, or the set's default when None) and whiten when
    spec.zca (with a ZCA fitted on those training images). ``store``: where a
    stored data set (e.g. ``distilled``) reads its artifact."""
    _check_spec(spec)
    if spec.name in _STORED:
        if store is None:
            raise SpecError(f"data.name: {spec.name} is read from a store; load it through a stage "
                            "(StageContext.dataset)")
        data = DATASETS[spec.name](spec, root, store)
    else:
        data = DATASETS[spec.name](spec, root)
    if spec.train_size is not None:
        n = len(data.train_y)
        if spec.train_size > n:
            raise SpecError(f"data.train_size: {spec.train_size} is more than the {n} "
                            f"training images of {data.name}; use at most {n}")
        data = data.subset(spec.train_size)
    if spec.augment is not None:
        data.augment = spec.augment
    if spec.norm != "standard":
        mean, std = _NORMS[spec.name][spec.norm]
        data = dataclasses.replace(data, mean=mean, std=std)
    if spec.validation:
        data = data.hold_out(spec.validation, torch.Generator().manual_seed(seed_for(0, 0, "validation")))
    if spec.zca:
        data = whitened(data, spec.zca_eps)
    return data


@dataclasses.dataclass(frozen=True)
class DataSize:
    train: int  # training images
    input_shape: tuple
    num_classes: int


def check_dataset(spec: DataSpec, root=None) -> DataSize:
    """Called by the driver before any work: fetch (CIFAR) and read the whole
    set once so that every problem surfaces now as one-line DataError or
    SpecError. Returns its sizes, remembered for this process (the dry run
    prices jobs with them); a set that failed is read again next time."""
    return _checked(spec, None if root is None else str(root))


@functools.lru_cache(maxsize=64)
def _checked(spec: DataSpec, root: str | None) -> DataSize:
    data = load_dataset(spec, root)
    return DataSize(len(data.train_y), tuple(data.input_shape), data.num_classes)
