"""Differentiable siamese augmentation (DSA; Zhao & Bilen, ICML 2021).

The transform is split in two so one random draw can be applied to two
batches: ``sample_dsa`` draws the parameters from an explicit generator and
``apply_dsa`` applies them, differentiably in ``x``.

Conventions follow the DSA code (``ParamDiffAug``, ``aug_mode='S'``):

* ``strategy`` names families joined by ``_`` (``color``, ``crop``,
  ``cutout``, ``flip``, ``scale``, ``rotate``); with ``single=True`` (DSA's
  default 'S' mode) one family is picked per call, otherwise every family is
  applied in the order given ('M' mode). ``mode='idc'`` is IDC's DiffAug
  (``batch=False``), which the paper trains its tickets with: flip, then
  color, always; then one of the other families per call; cutout last; its
  scale and rotate sample with ``align_corners=False`` (DSA/MTT: True).
* The per-example parameters are stored for ``batch_size`` examples. When
  ``apply_dsa`` gets a batch of exactly that size each example gets its own
  parameters; for any other size the FIRST draw is used for the whole batch.
  This is DSA's siamese mode (``theta[:] = theta[0]``): the distillers call
  ``sample_dsa(1, g)`` once per class step and apply that single draw to both
  the real batch and the synthetic batch, whatever their sizes. Training on a
  batch (evaluation, experts, the inner loop of gradient matching) calls
  ``sample_dsa(len(x), g)`` for independent per-example draws (DSA's
  non-siamese ``seed=-1`` mode).
* Offsets that depend on the image size (crop shift, cutout position) are
  drawn as uniforms in [0, 1) and turned into pixels in ``apply_dsa``, so
  the same parameters mean the same transform for images of the same size.

Ranges (DSA defaults): brightness +-0.5, saturation x[0, 2), contrast
x[0.5, 1.5), crop shift up to 12.5% of the side (zero fill), cutout a square
of half the side, flip with probability 0.5, scale x[1/1.2, 1.2] per axis,
rotation +-15 degrees. Images are the normalised float images the
distillers work on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from raylth.specs.groups import DSA_DEFAULT_OPS as DEFAULT_STRATEGY
from raylth.specs.groups import DSA_FAMILIES as FAMILIES

BRIGHTNESS = 1.0
SATURATION = 2.0
CONTRAST = 0.5
CROP_PAD = 0.125
CUTOUT = 0.5
FLIP_P = 0.5
SCALE = 1.2
ROTATE_DEG = 15.0


@dataclass
class DsaParams:
    """One draw of DSA parameters: the families to apply, in order, and the
    per-example values of each (tensors of length ``batch_size``)."""

    batch_size: int
    ops: tuple[str, ...]
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    align_corners: bool = True  # of scale and rotate's sampling grid


def parse_strategy(strategy: str) -> tuple[str, ...]:
    if strategy in ("", "none", "None"):
        return ()
    ops = tuple(strategy.split("_"))
    unknown = [op for op in ops if op not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown DSA augmentation {', '.join(unknown)} in {strategy!r}; "
                         f"known: {', '.join(FAMILIES)}")
    return ops


def _uniform(n: int, generator: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=generator.device)
    return u * (hi - lo) + lo


def _pick(ops, generator: torch.Generator) -> tuple[str, ...]:
    if not ops:
        return ()
    return (ops[int(torch.randint(len(ops), (1,), generator=generator, device=generator.device))],)


def sample_dsa(batch_size: int, generator: torch.Generator, strategy: str = DEFAULT_STRATEGY,
               single: bool = True, mode: str | None = None) -> DsaParams:
    """Draw DSA parameters for ``batch_size`` examples from ``generator``
    (tensors live on the generator's device; ``apply_dsa`` moves them).
    ``mode`` (single, multi or idc) overrides ``single``."""
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} must be at least 1")
    ops = parse_strategy(strategy)
    mode = mode or ("single" if single else "multi")
    if mode == "idc":
        always = tuple(op for op in ("flip", "color") if op in ops)
        ops = always + _pick([op for op in ops if op not in ("flip", "color", "cutout")], generator) \
            + (("cutout",) if "cutout" in ops else ())
    elif mode == "single":
        ops = _pick(ops, generator)
    elif mode != "multi":
        raise ValueError(f"DSA mode {mode!r} is not one of single, multi, idc")
    n, values = batch_size, {}
    for op in ops:
        if op == "color":
            values["brightness"] = _uniform(n, generator, -0.5 * BRIGHTNESS, 0.5 * BRIGHTNESS)
            values["saturation"] = _uniform(n, generator, 0.0, SATURATION)
            values["contrast"] = _uniform(n, generator, CONTRAST, CONTRAST + 1.0)
        elif op == "crop":
            values["crop"] = _uniform(2 * n, generator).view(n, 2)
        elif op == "cutout":
            values["cutout"] = _uniform(2 * n, generator).view(n, 2)
        elif op == "flip":
            values["flip"] = _uniform(n, generator) < FLIP_P
        elif op == "scale":
            values["scale"] = _uniform(2 * n, generator, 1.0 / SCALE, SCALE).view(n, 2)
        elif op == "rotate":
            values["rotate"] = _uniform(n, generator, -ROTATE_DEG, ROTATE_DEG) * (math.pi / 180.0)
    return DsaParams(batch_size, ops, values, align_corners=mode != "idc")


def _values_for(params: DsaParams, name: str, x: torch.Tensor) -> torch.Tensor:
    v = params.values[name].to(x.device)
    if len(x) != params.batch_size:  # siamese: the first draw for the whole batch
        v = v[:1].expand(len(x), *v.shape[1:])
    return v


def _warp(x: torch.Tensor, theta: torch.Tensor, mode: str, align_corners: bool) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=align_corners)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=align_corners)


def _color(x, params):
    shape = (-1,) + (1,) * (x.dim() - 1)
    b = _values_for(params, "brightness", x).to(x.dtype).view(shape)
    s = _values_for(params, "saturation", x).to(x.dtype).view(shape)
    c = _values_for(params, "contrast", x).to(x.dtype).view(shape)
    x = x + b
    m = x.mean(dim=1, keepdim=True)
    x = (x - m) * s + m
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * c + m


def _crop(x, params):
    """Zero-filled integer translation by up to CROP_PAD of the side, as
    DSA's pad-and-crop; nearest sampling at exact pixel centres."""
    _, _, h, w = x.shape
    u = _values_for(params, "crop", x)
    sh, sw = int(h * CROP_PAD + 0.5), int(w * CROP_PAD + 0.5)
    ty = torch.floor(u[:, 0] * (2 * sh + 1)).clamp(max=2 * sh) - sh
    tx = torch.floor(u[:, 1] * (2 * sw + 1)).clamp(max=2 * sw) - sw
    theta = torch.zeros(len(x), 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 2.0 * tx / w
    theta[:, 1, 2] = 2.0 * ty / h
    return _warp(x, theta, "nearest", align_corners=False)


def _cutout(x, params):
    _, _, h, w = x.shape
    u = _values_for(params, "cutout", x)
    ch, cw = int(h * CUTOUT + 0.5), int(w * CUTOUT + 0.5)
    oy = torch.floor(u[:, 0] * (h + 1 - ch % 2)).clamp(max=h - ch % 2) - ch // 2  # top row
    ox = torch.floor(u[:, 1] * (w + 1 - cw % 2)).clamp(max=w - cw % 2) - cw // 2  # left column
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    in_rows = (rows[None] >= oy[:, None]) & (rows[None] < oy[:, None] + ch)
    in_cols = (cols[None] >= ox[:, None]) & (cols[None] < ox[:, None] + cw)
    mask = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * mask[:, None].to(x.dtype)


def _flip(x, params):
    f = _values_for(params, "flip", x).reshape(-1, 1, 1, 1)
    return torch.where(f, x.flip(3), x)


def _scale(x, params):
    s = _values_for(params, "scale", x)
    theta = torch.zeros(len(x), 2, 3, device=x.device)
    theta[:, 0, 0] = s[:, 0]
    theta[:, 1, 1] = s[:, 1]
    return _warp(x, theta, "bilinear", align_corners=params.align_corners)


def _rotate(x, params):
    a = _values_for(params, "rotate", x)
    cos, sin = torch.cos(a), torch.sin(a)
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(a)], 1),
                         torch.stack([sin, cos, torch.zeros_like(a)], 1)], 1)
    return _warp(x, theta, "bilinear", align_corners=params.align_corners)


APPLY = {"color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip,
         "scale": _scale, "rotate": _rotate}


def apply_dsa(x: torch.Tensor, params: DsaParams | None) -> torch.Tensor:
    """Apply ``params`` to the (N, C, H, W) float batch ``x``; differentiable
    in ``x``. ``None`` (or no families) returns ``x`` unchanged."""
    if params is None or not params.ops:
        return x
    if x.dim() != 4:
        raise ValueError(f"DSA needs (N, C, H, W) images, got shape {list(x.shape)}")
    for op in params.ops:
        x = APPLY[op](x, params)
    return x.contiguous()


def dsa(x: torch.Tensor, generator: torch.Generator, strategy: str = DEFAULT_STRATEGY) -> torch.Tensor:
    """Independent per-example augmentation of one batch (non-siamese)."""
    return apply_dsa(x, sample_dsa(len(x), generator, strategy))
