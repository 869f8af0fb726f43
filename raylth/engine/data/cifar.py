"""CIFAR-10 and CIFAR-100 in the official python pickle format, with download."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raylth.errors import DataError

from .dataset import Dataset
from .registry import register_dataset


@dataclass(frozen=True)
class CifarInfo:
    name: str
    folder: str
    url: str
    md5: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int
    # Standard per-channel constants of the official train split, in 0..255
    # units; fixed so train_size subsets and re-encoded copies share them.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


SETS = {
    "cifar10": CifarInfo(
        "cifar10", "cifar-10-batches-py",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), b"labels", 10,
        (125.30691805, 122.95039414, 113.86538318), (62.99321928, 62.08870764, 66.70489964)),
    "cifar100": CifarInfo(
        "cifar100", "cifar-100-python",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
        ("train",), ("test",), b"fine_labels", 100,
        (129.30416561, 124.06996270, 112.43405006), (68.17024290, 65.39180804, 70.41837019)),
}

TIMEOUT_S = 10.0


def _line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def download(url: str, dest: Path, timeout: float = TIMEOUT_S) -> None:
    """Fetch url into the file dest. Module-level so tests can replace it."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _extract(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Python < 3.12 without the backported filter
            for m in tar.getmembers():
                if m.name.startswith(("/", "..")) or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                    raise DataError(f"unsafe member {m.name!r} in {archive}")
            tar.extractall(into)


def _fetch(info: CifarInfo, root: Path) -> None:
    if os.environ.get("RAYLTH_OFFLINE"):
        raise RuntimeError("RAYLTH_OFFLINE is set")
    root.mkdir(parents=True, exist_ok=True)
    # Temp names in root and a final rename: parallel workers never see half a folder.
    fd, archive = tempfile.mkstemp(prefix=f".{info.name}-", suffix=".tar.gz.part", dir=root)
    os.close(fd)
    archive = Path(archive)
    staging = Path(tempfile.mkdtemp(prefix=f".{info.name}-", dir=root))
    try:
        download(info.url, archive)
        got = _md5(archive)
        if got != info.md5:
            raise ValueError(f"md5 {got} is not the expected {info.md5}")
        _extract(archive, staging)
        if not (staging / info.folder).is_dir():
            raise ValueError(f"the archive holds no {info.folder} folder")
        try:
            os.rename(staging / info.folder, root / info.folder)
        except OSError:
            if not (root / info.folder).is_dir():  # else another worker finished first
                raise
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)


def ensure(info: CifarInfo, root) -> Path:
    """The data set's folder under root, downloaded first when it is missing."""
    if root is None:
        raise DataError(f"{info.name}: no data root given; pass --data-root FOLDER (the data set "
                        f"is downloaded there when missing)")
    root = Path(root).expanduser()
    folder = root / info.folder
    if not folder.is_dir():
        try:
            _fetch(info, root)
        except Exception as err:
            raise DataError(
                f"{info.name}: no data at {folder} and the download failed ({_line(err)}); "
                f"download {info.url} and extract it into {root}, or point --data-root at a "
                f"folder that holds {info.folder}") from None
    return folder


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the official batches (dicts, lists, numpy arrays) and nothing
    that could run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(info: CifarInfo, path: Path) -> tuple[np.ndarray, np.ndarray]:
    fix = f"delete {path.parent} to download it again, or restore the file"
    if not path.is_file():
        raise DataError(f"{info.name}: missing {path}; {fix}")
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[info.label_key])
    except Exception as err:
        raise DataError(f"{info.name}: cannot read {path} ({_line(err)}); it is truncated or "
                        f"corrupt: {fix}") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise DataError(f"{info.name}: {path} holds data {data.dtype}{list(data.shape)} and "
                        f"{len(labels)} labels, not N x 3072 uint8 with N labels; {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise DataError(f"{info.name}: {path} has labels outside 0..{info.num_classes - 1}; {fix}")
    return data, labels.astype(np.int64)


def _split(info: CifarInfo, folder: Path, files) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [read_batch(info, folder / f) for f in files]
    data = np.concatenate([p[0] for p in parts])
    # Rows are channel-major (1024 red, 1024 green, 1024 blue), so a reshape is (N, 3, 32, 32).
    x = torch.from_numpy(data).reshape(-1, 3, 32, 32)
    return x, torch.from_numpy(np.concatenate([p[1] for p in parts]))


def load_cifar(info: CifarInfo, root) -> Dataset:
    folder = ensure(info, root)
    train_x, train_y = _split(info, folder, info.train)
    test_x, test_y = _split(info, folder, info.test)
    return Dataset(info.name, train_x, train_y, test_x, test_y, info.mean, info.std,
                   info.num_classes, augment=True)


def _units(values) -> tuple[float, ...]:
    return tuple(255.0 * v for v in values)


# The constants of DC/DSA's utils.get_dataset (as DM, MTT and IDC's data.py use them): the
# CIFAR-10 std is not the split's (0.2470, 0.2435, 0.2616) but 0.2023/0.1994/0.2010.
DC_NORMS = {
    "cifar10": {"dc": (_units((0.4914, 0.4822, 0.4465)), _units((0.2023, 0.1994, 0.2010)))},
    "cifar100": {"dc": (_units((0.5071, 0.4866, 0.4409)), _units((0.2673, 0.2564, 0.2762)))},
}


@register_dataset("cifar10", norms=DC_NORMS["cifar10"])
def load_cifar10(spec, root=None) -> Dataset:
    return load_cifar(SETS["cifar10"], root)


@register_dataset("cifar100", norms=DC_NORMS["cifar100"])
def load_cifar100(spec, root=None) -> Dataset:
    return load_cifar(SETS["cifar100"], root)
