"""Distillation method ``import``: a released distilled set as it was
released (MTT's images_best.pt + labels_best.pt, IDC's [images, labels],
raylth's own records): every problem a DataError naming the file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from raylth.engine.data import Dataset
from raylth.engine.distill import Zca, fit_zca_space
from raylth.errors import DataError, SpecError
from raylth.specs import DistillSpec, Spec
from raylth.specs.base import choice
from raylth.stages.distill import Distilled, Distiller, register_distiller


@dataclass(frozen=True)
class ImportOptions(Spec):
    kind = "import_options"
    block = "distill"
    path: str | None = None    # a .pt/.npz file of images and labels (or images only, with labels:)
    labels: str | None = None  # a separate labels file (MTT: images_best.pt + labels_best.pt)
    # the file's images: normalised, in the data set's pixel units (0..255), or in [0, 1] (IDC's data.pt)
    space: str = choice("normalized", ["normalized", "pixel", "unit"])
    factor: int = 1            # IDC mosaics: factor x factor tiles decoded into factor^2 images

    def validate(self):
        if self.factor < 1:
            raise SpecError(f"distill.factor: {self.factor} must be >= 1")


def check(spec, w: str) -> None:
    if not spec.path:
        raise SpecError(f"{w}.path: method import needs path: FILE.pt (images and labels tensors, "
                        "or images only with labels: LABELS.pt)")
    if spec.space != "normalized" and spec.zca:
        raise SpecError(f"{w}.space: a ZCA-whitened file holds whitened images, not pixels; "
                        "leave space out with zca: true")


def _import_path(spec: DistillSpec, ctx_root, name: str | None = None) -> Path:
    path = Path(spec.path if name is None else name).expanduser()
    if not path.is_absolute() and ctx_root is not None and not path.exists():
        path = Path(ctx_root) / path
    return path


def import_files(spec: DistillSpec, data_root=None) -> list[Path]:
    """The files an import reads: path, and labels when given."""
    paths = [_import_path(spec, data_root)]
    if spec.labels:
        paths.append(_import_path(spec, data_root, spec.labels))
    return paths


def _read_tensors(path: Path, field: str):
    def fail(what: str):
        raise DataError(f"distill.{field}: {path}: {what}")

    if not path.is_file():
        fail("no such file")
    try:
        if path.suffix.lower() == ".npz":
            import numpy as np
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.as_tensor(z[k]) for k in z.files}, fail
        return torch.load(path, map_location="cpu", weights_only=True), fail
    except Exception as err:  # torch raises many types for a foreign file
        fail(f"cannot read it ({type(err).__name__}: {' '.join(str(err).split())[:200]})")


def _released_items(spec: DistillSpec, data_root):
    """(images, labels, items, fail) from one file ({images, labels} or IDC's
    [images, labels]) or two (MTT's images_best.pt and labels_best.pt)."""
    items, fail = _read_tensors(_import_path(spec, data_root), "path")
    if spec.labels:
        labels, fail_labels = _read_tensors(_import_path(spec, data_root, spec.labels), "labels")
        if isinstance(items, dict) and "images" in items:
            items = items["images"]
        if isinstance(labels, dict) and "labels" in labels:
            labels = labels["labels"]
        if not isinstance(items, torch.Tensor):
            fail("expected a tensor of images (labels come from distill.labels)")
        if not isinstance(labels, torch.Tensor):
            fail_labels("expected a tensor of class indices")
        if len(labels) != len(items):
            fail_labels(f"holds {len(labels)} labels for the {len(items)} images of {spec.path}; "
                        "pass the labels file saved with these images")
        return items, labels, {}, fail
    if isinstance(items, (list, tuple)) and len(items) >= 2:  # IDC: [images, labels]
        items = {"images": items[0], "labels": items[1]}
    if not isinstance(items, dict) or "images" not in items or "labels" not in items:
        fail("expected a dict with images and labels tensors (or [images, labels]); "
             "for images and labels in two files give labels: LABELS.pt too")
    return items["images"], items["labels"], items, fail


def read_import(spec: DistillSpec, real: Dataset, data_root=None, with_zca: bool = True):
    """(images, labels, zca) of an imported set in the distillation space,
    every problem a DataError naming the file (``with_zca`` False: no ZCA
    is fitted, e.g. to check the files)."""
    images, labels, items, fail = _released_items(spec, data_root)
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    shape = tuple(real.input_shape)
    if images.dim() != 4 or tuple(images.shape[1:]) != shape or len(images) == 0:
        fail(f"images have shape {list(images.shape)}; expected (N, {', '.join(map(str, shape))}) like "
             f"{spec.data.name}")
    if not images.is_floating_point() and not (spec.space == "pixel" and images.dtype == torch.uint8):
        fail(f"images are {images.dtype}; expected float images")
    images = images.float()
    if not torch.isfinite(images).all():
        fail("images hold NaN or infinite values")
    if labels.dim() != 1:
        fail(f"labels have shape {list(labels.shape)}; expected class indices of shape ({len(images)},)"
             + (" (soft labels are not supported)" if labels.dim() == 2 else ""))
    if len(labels) != len(images):
        fail(f"holds {len(labels)} labels for {len(images)} images")
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        fail("labels hold non-integer values; expected class indices")
    labels = labels.long()
    k = real.num_classes
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        fail(f"labels hold values in {int(labels.min())}..{int(labels.max())}, outside 0..{k - 1} "
             f"of {spec.data.name}")
    counts = torch.bincount(labels, minlength=k)
    if not bool((counts == spec.ipc).all()):
        fail(f"holds {counts.tolist()} images per class; declare ipc: n for a set of n images of every class")
    if spec.space == "pixel":
        images = real.normalize(images)
    elif spec.space == "unit":  # IDC's release: unnormalised images in [0, 1]
        images = real.normalize(images * real.pixel_max)
    zca = None
    if spec.zca and with_zca:
        if "zca_matrix" in items and "zca_mean" in items:  # raylth's own record
            zca = Zca.from_dict({"mean": items["zca_mean"], "matrix": items["zca_matrix"],
                                 "shape": list(shape), "eps": float(items.get("zca_eps", spec.zca_eps)),
                                 "input_scale": items.get("zca_input_scale")})
        else:  # as MTT/KIP: fitted on the whole real training set, in zca_space
            zca = fit_zca_space(real, spec.zca_space, spec.zca_eps)
    return images, labels, zca


def run(spec, ctx, real, s) -> Distilled:
    images, labels, zca = read_import(spec, real, ctx.data_root)
    paths = import_files(spec, ctx.data_root)
    extra = {"source_file": str(paths[0]), "source_sha256": hashlib.sha256(paths[0].read_bytes()).hexdigest()}
    if len(paths) > 1:
        extra.update(labels_file=str(paths[1]), labels_sha256=hashlib.sha256(paths[1].read_bytes()).hexdigest())
    return Distilled(images, labels, zca, extra=extra)


register_distiller(Distiller("import", ImportOptions, check=check, run=run,
                             inputs=lambda spec, ctx, real: read_import(spec, real, ctx.data_root, with_zca=False)))
