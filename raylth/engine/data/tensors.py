"""Image/label tensors from a .pt or .npz file, e.g. a distilled data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raylth.errors import DataError, SpecError
from raylth.specs.groups import DataSpec

from .dataset import Dataset
from .registry import DATASETS, check_dataset_name, register_dataset

KEYS = {"images": ("images", "x"), "labels": ("labels", "y"),
        "test_images": ("test_images", "test_x"), "test_labels": ("test_labels", "test_y")}


class _File:
    def __init__(self, path: Path):
        self.path = path
        self.items = self._read()

    def fail(self, what: str):
        raise DataError(f"tensors: {self.path}: {what}")

    def _read(self) -> dict:
        if not self.path.is_file():
            self.fail("no such file; check data.path")
        suffix = self.path.suffix.lower()
        if suffix not in (".pt", ".pth", ".npz"):
            self.fail(f"unknown file type {suffix!r}; save a .pt (torch.save of a dict) or .npz file")
        try:
            if suffix == ".npz":
                with np.load(self.path, allow_pickle=False) as z:
                    items = {k: z[k] for k in z.files}
            else:
                items = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(items, dict):
                self.fail(f"holds a {type(items).__name__}, not a dict with images and labels")
            return {str(k): torch.as_tensor(v) for k, v in items.items()}
        except DataError:
            raise
        except Exception as err:
            self.fail(f"cannot read it ({' '.join(f'{type(err).__name__}: {err}'.split())})")

    def get(self, key: str, required: bool = True, hint: str = ""):
        for name in KEYS.get(key, (key,)):
            if name in self.items:
                return name, self.items[name]
        if required:
            self.fail(f"holds no {' or '.join(KEYS.get(key, (key,)))} (keys: "
                      f"{', '.join(sorted(self.items)) or 'none'}){hint}")
        return key, None

    def images(self, key: str, hint: str = "") -> torch.Tensor:
        name, x = self.get(key, hint=hint)
        if x.dim() != 4 or len(x) == 0:
            self.fail(f"{name} has shape {list(x.shape)}; expected (N, C, H, W) with N >= 1")
        if x.dtype == torch.uint8:
            return x
        if not x.is_floating_point():
            self.fail(f"{name} is {x.dtype}; expected float or uint8 images")
        if not torch.isfinite(x).all():
            self.fail(f"{name} holds NaN or infinite values")
        return x.float()

    def labels(self, key: str, n: int, num_classes: int | None, hint: str = "") -> torch.Tensor:
        name, y = self.get(key, hint=hint)
        if y.dim() != 1:
            self.fail(f"{name} has shape {list(y.shape)}; expected class indices of shape ({n},)"
                      + (" (soft labels are not supported)" if y.dim() == 2 else ""))
        if len(y) != n:
            self.fail(f"{name} holds {len(y)} labels for {n} images")
        if y.is_floating_point() and not torch.equal(y, y.round()):
            self.fail(f"{name} holds non-integer values; expected class indices")
        if y.is_complex() or y.dtype == torch.bool:
            self.fail(f"{name} is {y.dtype}; expected integer class indices")
        y = y.long()
        if y.min() < 0 or (num_classes is not None and y.max() >= num_classes):
            bound = f"0..{num_classes - 1}" if num_classes is not None else "0 and up"
            self.fail(f"{name} holds values in {int(y.min())}..{int(y.max())}, outside {bound}")
        return y

    def channel_stats(self, channels: int):
        """The file's mean and std as per-channel tuples, or None."""
        _, mean = self.get("mean", required=False)
        _, std = self.get("std", required=False)
        if mean is None and std is None:
            return None
        if mean is None or std is None:
            self.fail("holds only one of mean and std; save both or neither")
        out = []
        for name, t in (("mean", mean), ("std", std)):
            t = t.double().flatten()
            if t.numel() not in (1, channels):
                self.fail(f"{name} has {t.numel()} values for {channels} channels")
            out.append(tuple(float(v) for v in t.expand(channels)))
        if min(out[1]) <= 0:
            self.fail("std must be positive")
        return out[0], out[1]


def _computed_stats(x: torch.Tensor):
    flat = x.double().transpose(0, 1).reshape(x.shape[1], -1)
    mean = flat.mean(1)
    std = flat.std(1) if flat.shape[1] > 1 else torch.ones_like(mean)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel: leave it unscaled
    return tuple(mean.tolist()), tuple(std.tolist())


@register_dataset("tensors", takes=("path", "test"))
def load_tensors(spec: DataSpec, root=None) -> Dataset:
    path = Path(spec.path).expanduser()
    if not path.is_absolute() and root is not None:
        path = Path(root) / path  # relative paths name files under the data root
    f = _File(path)
    x = f.images("images")
    stats = f.channel_stats(x.shape[1])
    if spec.test is not None:
        return _with_real_test(spec, root, f, x, stats)
    hint = "; add them or set data.test to the data set whose test split to use, e.g. cifar10"
    test_x = f.images("test_images", hint=hint)
    if test_x.shape[1:] != x.shape[1:]:
        f.fail(f"test images are {list(test_x.shape[1:])} but images are {list(x.shape[1:])}")
    y = f.labels("labels", len(x), None)
    test_y = f.labels("test_labels", len(test_x), None)
    _, k = f.get("num_classes", required=False)
    if k is None:  # infer from the labels themselves
        k = int(max(y.max(), test_y.max())) + 1
    elif k.numel() != 1 or k.is_floating_point() or int(k) < 1:
        f.fail(f"num_classes {k.tolist()} is not a positive integer")
    else:
        k = int(k)
        y, test_y = f.labels("labels", len(x), k), f.labels("test_labels", len(test_x), k)
    mean, std = stats or _computed_stats(x)
    return Dataset("tensors", x, y, test_x, test_y, mean, std, k, augment=False)


def _with_real_test(spec, root, f: _File, x, stats) -> Dataset:
    """Train on the file, evaluate on a registered set's test split; the file's
    images are brought into that set's units so one normalisation fits both."""
    check_dataset_name(spec.test, "data.test")
    if spec.test == "tensors":
        raise SpecError("data.test: must name a real data set (e.g. cifar10), not tensors")
    real = DATASETS[spec.test](DataSpec(name=spec.test), root)
    if tuple(x.shape[1:]) != real.input_shape:
        f.fail(f"images are {list(x.shape[1:])} but {real.name} images are {list(real.input_shape)}")
    y = f.labels("labels", len(x), real.num_classes)
    if stats is not None:  # file mean/std: x' = (x - m_f) / s_f * s_real + m_real
        shape = (1, -1, 1, 1)
        mf, sf = (torch.tensor(s, dtype=torch.float64).view(shape) for s in stats)
        mr, sr = (torch.tensor(s, dtype=torch.float64).view(shape) for s in (real.mean, real.std))
        x = ((x.double() - mf) / sf * sr + mr).float()
    return Dataset("tensors", x, y, real.test_x, real.test_y, real.mean, real.std,
                   real.num_classes, augment=False, pixel_max=real.pixel_max)
