"""Starting points of a synthetic set, and the IDC multi-formation codec."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_indices(real_y: torch.Tensor, n: int, num_classes: int,
                  generator: torch.Generator) -> torch.Tensor:
    """n random distinct indices per class, class-major (class 0's first), as
    a CPU int64 tensor. Raises ValueError naming the first class with fewer
    than n examples."""
    y = real_y.detach().cpu()
    out = []
    for c in range(num_classes):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < n:
            raise ValueError(f"class {c} has {len(idx)} real images, fewer than the {n} needed "
                             f"per class; lower ipc (images per class)")
        out.append(idx[torch.randperm(len(idx), generator=generator, device=generator.device)
                       .cpu()[:n]])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def class_labels(num_classes: int, per_class: int, device=None) -> torch.Tensor:
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def _check_factor(shape, factor: int) -> None:
    if factor < 1:
        raise ValueError(f"factor {factor} must be at least 1")
    h, w = shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"factor {factor} does not divide the image size {h}x{w}")


def encode_multi(x: torch.Tensor, factor: int) -> torch.Tensor:
    """IDC's initialisation: (N * factor^2, C, H, W) images, each shrunk to
    (H/factor, W/factor) and tiled row-major into N mosaics (N, C, H, W);
    image k * factor^2 + i * factor + j lands in tile (i, j) of mosaic k."""
    _check_factor(x.shape, factor)
    if factor == 1:
        return x
    n, c, h, w = x.shape
    if n % (factor * factor):
        raise ValueError(f"{n} images do not fill mosaics of {factor}x{factor}")
    small = F.interpolate(x, size=(h // factor, w // factor), mode="bilinear",
                          align_corners=False, antialias=True)
    small = small.reshape(n // factor ** 2, factor, factor, c, h // factor, w // factor)
    return small.permute(0, 3, 1, 4, 2, 5).reshape(n // factor ** 2, c, h, w)


def decode_multi(images: torch.Tensor, factor: int) -> torch.Tensor:
    """IDC's decoder: split each (C, H, W) image into factor x factor tiles
    and resize each back to (H, W) (bilinear, F.interpolate), differentiably.
    Returns (N * factor^2, C, H, W), image-major, so the labels are
    ``decode_labels(labels, factor)``. factor 1 returns ``images``."""
    _check_factor(images.shape, factor)
    if factor == 1:
        return images
    n, c, h, w = images.shape
    tiles = images.reshape(n, c, factor, h // factor, factor, w // factor)
    tiles = tiles.permute(0, 2, 4, 1, 3, 5).reshape(n * factor * factor, c, h // factor, w // factor)
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def decode_labels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    return labels.repeat_interleave(factor * factor)


def init_images(real_x: torch.Tensor, real_y: torch.Tensor, ipc: int, num_classes: int,
                mode: str = "real", *, generator: torch.Generator,
                factor: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic set of ``ipc`` images per class, class-major, on real_x's
    device: ``real`` = random real images of the class (with factor > 1, IDC's
    mosaics of factor^2 real images each); ``noise`` = standard normal (the
    normalised space). Returns (images float32, a fresh leaf you may
    ``requires_grad_()``, labels int64)."""
    if ipc < 1:
        raise ValueError(f"ipc {ipc} must be at least 1")
    _check_factor(real_x.shape, factor)
    device = real_x.device
    labels = class_labels(num_classes, ipc, device)
    if mode == "real":
        idx = class_indices(real_y, ipc * factor * factor, num_classes, generator).to(device)
        images = encode_multi(real_x[idx].float(), factor)
    elif mode == "noise":
        shape = (num_classes * ipc,) + tuple(real_x.shape[1:])
        images = torch.randn(shape, generator=generator, device=generator.device).to(device)
    else:
        raise ValueError(f"unknown init mode {mode!r}; use 'real' or 'noise'")
    return images.detach().clone().float(), labels
