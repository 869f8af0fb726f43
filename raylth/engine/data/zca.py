"""ZCA whitening of flattened images, as used by KIP and MTT (kornia's
``ZCAWhitening``): with the covariance of the training images
C = U diag(S) U^T,  W = U diag(1 / sqrt(S + eps)) U^T  and
zca(x) = (flatten(x) - mean) @ W, reshaped back. W is symmetric; eps = 0.1
is MTT's setting and regularises the directions of tiny variance.

The space the whitening is fitted in matters as much as eps: MTT and KIP
whiten raw pixels in [0, 1] (``ToTensor`` only, no mean/std normalisation),
and their hyperparameters (MTT's ``lr_img: 1000``) are tuned there.
Per-channel normalisation first multiplies the variance by ~16 on CIFAR-10
and so makes eps ~16x weaker. ``ZCA_SPACES``: ``pixels`` (the references';
images divided by the data set's ``pixel_max``) or ``normalized`` (what
raylth did before; kept so sets stored then load as they were made). A
fitted ``Zca`` remembers its space (``input_scale``), and ``whiten`` takes
images in the data set's own units through it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass
class Zca:
    mean: torch.Tensor      # (D,) float32, D = C * H * W
    matrix: torch.Tensor    # (D, D) float32, symmetric
    shape: tuple[int, ...]  # (C, H, W) of one image
    eps: float
    input_scale: float | None = None  # pixels: x / input_scale is the input; None: data.normalize(x)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Whiten (N, C, H, W) images; runs on x's device."""
        self._check(x)
        mean, matrix = self.mean.to(x.device, x.dtype), self.matrix.to(x.device, x.dtype)
        return ((x.reshape(len(x), -1) - mean) @ matrix).reshape(x.shape)

    def whiten(self, x: torch.Tensor, data) -> torch.Tensor:
        """Whiten images given in ``data``'s units (``x.float()``; data is the
        real Dataset), through the space this ZCA was fitted in."""
        x = x.float() / self.input_scale if self.input_scale is not None else data.normalize(x.float())
        return self.apply(x)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """Undo ``apply`` (for looking at whitened images)."""
        self._check(x)
        inv = torch.linalg.inv(self.matrix.double()).to(x.device, x.dtype)
        return (x.reshape(len(x), -1) @ inv + self.mean.to(x.device, x.dtype)).reshape(x.shape)

    def to(self, device) -> "Zca":
        return Zca(self.mean.to(device), self.matrix.to(device), self.shape, self.eps, self.input_scale)

    def to_dict(self) -> dict:
        out = {"mean": self.mean.detach().cpu(), "matrix": self.matrix.detach().cpu(),
               "shape": list(self.shape), "eps": float(self.eps)}
        if self.input_scale is not None:
            out["input_scale"] = float(self.input_scale)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Zca":
        mean = torch.as_tensor(d["mean"], dtype=torch.float32)
        matrix = torch.as_tensor(d["matrix"], dtype=torch.float32)
        shape = tuple(int(s) for s in torch.as_tensor(d["shape"]).tolist())
        if matrix.shape != (mean.numel(), mean.numel()) or mean.numel() != _prod(shape):
            raise ValueError(f"ZCA: mean {list(mean.shape)}, matrix {list(matrix.shape)} and image "
                             f"shape {list(shape)} do not fit together")
        scale = d.get("input_scale")
        return cls(mean, matrix, shape, float(torch.as_tensor(d["eps"])),
                   None if scale is None else float(torch.as_tensor(scale)))

    def _check(self, x):
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"ZCA was fitted on images {list(self.shape)}, got {list(x.shape[1:])}")


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


ZCA_SPACES = ("pixels", "normalized")


def space_input(data, x: torch.Tensor, space: str) -> torch.Tensor:
    """Images in ``data``'s units -> the ZCA's input space: raw pixels in
    [0, 1] (``pixels``) or per-channel normalised (``normalized``)."""
    if space == "pixels":
        return x.float() / float(data.pixel_max)
    if space == "normalized":
        return data.normalize(x.float())
    raise ValueError(f"ZCA space {space!r} is not one of {', '.join(ZCA_SPACES)}")


def fit_zca_space(data, space: str, eps: float = 0.1) -> Zca:
    """ZCA fitted on ``data``'s whole training split in ``space``, as MTT
    fits kornia's on the whole training set."""
    return whitened_train(data, space, eps, apply=False)[0]


def whitened_train(data, space: str, eps: float = 0.1, apply: bool = True) -> tuple[Zca, torch.Tensor | None]:
    """The ZCA of ``data``'s training split in ``space`` and (``apply``) that
    split whitened by it, converting the split once."""
    x = space_input(data, data.train_x, space)
    zca = fit_zca(x, eps)
    if space == "pixels":
        zca.input_scale = float(data.pixel_max)
    return zca, zca.apply(x) if apply else None


def fit_zca(x: torch.Tensor, eps: float = 0.1) -> Zca:
    """Fit on (N, C, H, W) float images as given (computed in float64 on
    x's device; the result is float32 on that device)."""
    if x.dim() < 2 or len(x) < 2:
        raise ValueError(f"ZCA needs at least two images, got shape {list(x.shape)}")
    if eps < 0:
        raise ValueError(f"eps {eps} must be >= 0")
    flat = x.reshape(len(x), -1).double()
    mean = flat.mean(0)
    centred = flat - mean
    cov = centred.T @ centred / (len(flat) - 1)  # unbiased, as kornia
    s, u = torch.linalg.eigh(cov)  # symmetric PSD: eigh == svd, faster and stabler
    s = s.clamp(min=0)
    matrix = (u * torch.rsqrt(s + eps)) @ u.T if eps > 0 else (u * torch.where(
        s > 0, torch.rsqrt(s.clamp(min=1e-30)), torch.zeros_like(s))) @ u.T
    return Zca(mean.float(), matrix.float(), tuple(x.shape[1:]), float(eps))


def whitened(data, eps: float = 0.1):
    """``data`` (a Dataset) with train and test images whitened by MTT's ZCA
    fitted on its training split in pixel space: float images already in
    the whitened space (mean 0, std 1 per channel, so normalising is the identity)."""
    zca, train_x = whitened_train(data, "pixels", eps)
    channels = data.input_shape[0]
    return dataclasses.replace(data, train_x=train_x, test_x=zca.whiten(data.test_x, data),
                               val_x=None if data.val_x is None else zca.whiten(data.val_x, data),
                               mean=(0.0,) * channels, std=(1.0,) * channels)
