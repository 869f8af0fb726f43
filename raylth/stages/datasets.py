"""Data sets read from the store: a distilled set as training data.

``DataSpec(name='distilled', path=<distill id>, test=<real set>)`` is a data
set of the engine's registry like any other; its loader reads the store it is
given (``load_dataset(spec, root, store=...)``, as StageContext.dataset does).
"""

from __future__ import annotations

from raylth.engine.data import Dataset, load_dataset, register_dataset
import torch

from raylth.engine.distill import Zca, whitened_train
from raylth.errors import SpecError, StoreError
from raylth.specs import DataSpec, DistillSpec
from raylth.store import Store

RECORD = "distilled.pt"


@register_dataset("distilled", stored=True, takes=("path", "test"))
def load_distilled(spec: DataSpec, data_root, store: Store) -> Dataset:
    """The images of a stored distill artifact, and the real test split in their space, on the CPU."""
    if not spec.path:
        raise SpecError("data.path: the distilled data set needs path: <a distill artifact id>, "
                        "e.g. distill_0123456789abcdef")
    artifact = store.get(spec.path)
    if artifact is None:
        raise StoreError(f"data.path: {spec.path}: no such distilled set in {store.location}; run its distill "
                         "stage first (methods distilled_imp and mask_then_imp do)")
    if artifact.kind != DistillSpec.kind:
        raise SpecError(f"data.path: {spec.path} is a {artifact.kind} artifact, not a distill artifact")
    real_spec = DistillSpec.from_stored(artifact.spec).data
    if spec.test is not None and spec.test != real_spec.name:
        raise SpecError(f"data.test: {spec.test!r}, but {spec.path} was distilled from {real_spec.name!r}; "
                        f"use test: {real_spec.name}")
    real = load_dataset(real_spec, data_root)
    record = artifact.load(RECORD)
    images, labels = record["images"].float(), record["labels"].long()
    zca = record_zca(record)
    def space(x):  # the real images in the set's space: normalised, or whitened by its ZCA
        return zca.whiten(x, real) if zca is not None else real.normalize(x.float())

    channels = images.shape[1]
    held = {} if real.val_x is None else {"val_x": space(real.val_x), "val_y": real.val_y.clone()}
    return Dataset("distilled", images, labels, space(real.test_x), real.test_y.clone(), (0.0,) * channels,
                   (1.0,) * channels, real.num_classes, augment=False, **held)


def record_zca(record: dict) -> Zca | None:
    if "zca_matrix" not in record:
        return None
    shape = tuple(record["images"].shape[1:])
    return Zca.from_dict({"mean": record["zca_mean"], "matrix": record["zca_matrix"], "shape": list(shape),
                          "eps": float(record["zca_eps"]), "input_scale": record.get("zca_input_scale")})


def distill_space(spec, real: Dataset) -> tuple[torch.Tensor, Zca | None]:
    """The real training images in the space ``spec`` (a DistillSpec or
    ExpertsSpec) distils in: normalised, or ZCA-whitened from its zca_space."""
    if not spec.zca:
        return real.normalize(real.train_x.float()), None
    zca, x = whitened_train(real, spec.zca_space, spec.zca_eps)
    return x, zca
