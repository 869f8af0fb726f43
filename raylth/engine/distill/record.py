"""A distilled set as a flat dict of tensors, loadable by the ``tensors``
data set (``DataSpec('tensors', path=FILE.pt, test='cifar10')``).

The images stay in the space they were distilled in (normalised, and
ZCA-whitened if ``zca`` is given). ``mean`` = 0 and ``std`` = 1 per channel
tell the loader they are already normalised: with ``test`` set it maps them
to the real set's units (x * std_real + mean_real), and the trainer's
normalisation brings them back exactly. ``source_mean``/``source_std`` keep
the real data's statistics that the distillation assumed. With factor > 1
``images``/``labels`` are the decoded training set and ``stored_images`` the
mosaics. ZCA is stored flat (``zca_mean``, ``zca_matrix``, ``zca_eps`` and,
for a ZCA fitted on raw pixels, ``zca_input_scale``: its input is
x / zca_input_scale; without it, as in sets stored before, the input is the
normalised image): a consumer must whiten the real test images with it (the
``tensors`` loader does not)."""

from __future__ import annotations

from typing import Sequence

import torch

from .init import decode_labels, decode_multi
from raylth.engine.data.zca import Zca


def distilled_record(images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float],
                     std: Sequence[float], *, zca: Zca | None = None, factor: int = 1,
                     lr: float | None = None) -> dict[str, torch.Tensor]:
    images = images.detach().float().cpu()
    labels = labels.detach().long().cpu()
    channels = images.shape[1]
    source_mean = torch.tensor([float(m) for m in mean], dtype=torch.float64).expand(channels)
    source_std = torch.tensor([float(s) for s in std], dtype=torch.float64).expand(channels)
    out = {"images": decode_multi(images, factor), "labels": decode_labels(labels, factor),
           "mean": torch.zeros(channels, dtype=torch.float64),
           "std": torch.ones(channels, dtype=torch.float64),
           "source_mean": source_mean.clone(), "source_std": source_std.clone(),
           "factor": torch.tensor(factor)}
    if factor > 1:
        out["stored_images"] = images
    if zca is not None:
        z = zca.to_dict()
        out.update(zca_mean=z["mean"], zca_matrix=z["matrix"], zca_eps=torch.tensor(z["eps"]))
        if zca.input_scale is not None:
            out["zca_input_scale"] = torch.tensor(float(zca.input_scale))
    if lr is not None:
        out["lr"] = torch.tensor(float(lr))
    return out
