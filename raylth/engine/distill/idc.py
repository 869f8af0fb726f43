"""IDC's condensation (Kim et al., ICML 2022, "Dataset Condensation via
Efficient Synthetic-Data Parameterization"), as its ``condense.py`` runs with
``--reproduce`` on CIFAR (the paper's distilled data is IDC's).

The synthetic images live in [0, 1] pixels: ``ipc`` stored images per class,
each a ``factor`` x ``factor`` mosaic decoded (bilinear upsampling of every
tile) into factor^2 training images. Normalisation is the first step of every
augmentation, as IDC's ``Compose([normalize, DiffAug])``.

Each of ``iterations`` outer iterations draws a fresh network (``model_fn``),
clamps the images to [0, 1], then ``steps`` times (IDC's ``inner_loop``):

1. per class c (``match_step``): a real class batch (``batch_real`` images,
   class-epoch by class-epoch without replacement) and the class's decoded
   synthetic images (at most ``batch_syn``, a random subset when more) are
   concatenated and augmented by ONE draw of ``match_ops`` (IDC's
   ``DiffAug(batch=True)``); the distance ``metric`` (squared error) between
   the gradients of the cross-entropy on the real part and on the synthetic
   part, with respect to the network's convolution weights only (IDC matches
   neither biases, normalisation parameters nor the classifier), is one SGD
   step (lr ``lr_img``, momentum 0.5) on the stored images;
2. the network trains on REAL data only (``train_on_real``): ``n_data``
   images in batches of ``batch_real`` from one endless shuffled stream over
   the training set, each batch augmented per example (``net_ops``, IDC's
   ``DiffAug(batch=False)``) and CutMixed with probability ``cutmix``; SGD lr
   ``lr_net``, momentum 0.9, weight decay 5e-4.

Every random draw comes from one ``generator``, so a run repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raylth.engine.data.batches import cutmix
from raylth.engine.data.dsa import DsaParams, apply_dsa, parse_strategy, sample_dsa
from .common import ModelFn, build, draw_seed
from .init import class_labels, decode_multi

METRICS = ("mse", "l1", "l1_mean", "cos")
IMAGE_MOMENTUM = 0.5  # IDC's mom_img
NET_MOMENTUM, NET_WEIGHT_DECAY = 0.9, 5e-4  # IDC's train_epoch optimiser (args.momentum, args.weight_decay)


@dataclass(frozen=True)
class IdcSettings:
    """IDC's knobs; the defaults are its ``--reproduce`` settings for CIFAR-10."""
    ipc: int = 10
    factor: int = 2
    iterations: int = 2000            # outer iterations, a fresh network each (IDC: niter * 100 // inner_loop)
    steps: int = 100                  # matching steps per network, each followed by a network update (inner_loop)
    lr_img: float = 5e-3
    batch_real: int = 64
    batch_syn: int = 128              # decoded synthetic images per class and step, at most
    n_data: int = 2000                # real images per network update
    lr_net: float = 0.01
    metric: str = "mse"
    match_ops: str = "color_crop_cutout"   # IDC's aug_type
    cutmix: float = 0.5               # CutMix probability per batch of the network update (IDC's mix_p)
    cutmix_beta: float = 1.0
    init: str = "real"                # real: mosaics of random real images (IDC's mix); noise

    @property
    def net_ops(self) -> str:
        """The network update's augmentation: the matching families less cutout when CutMix is on (IDC)."""
        ops = [op for op in parse_strategy(self.match_ops) if not (self.cutmix > 0 and op == "cutout")]
        return "_".join(ops)


def matched_params(net: nn.Module) -> list[torch.Tensor]:
    """The parameters IDC matches gradients of (``bias=False, fc=False``): every
    one but vectors (biases, normalisation) and matrices (the classifier)."""
    return [p for p in net.parameters() if p.requires_grad and p.dim() not in (1, 2)]


def distance(a: torch.Tensor, b: torch.Tensor, metric: str = "mse") -> torch.Tensor:
    """IDC's ``dist``: summed squared error (mse), summed or per-row-mean
    absolute error (l1, l1_mean), or 1 - cosine per output channel (cos)."""
    if metric == "mse":
        return (a - b).pow(2).sum()
    if metric == "l1":
        return (a - b).abs().sum()
    if metric == "l1_mean":
        return (a - b).abs().reshape(a.shape[0], -1).mean(-1).sum()
    if metric == "cos":
        a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        return (1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6)).sum()
    raise ValueError(f"unknown IDC metric {metric!r}; use one of {', '.join(METRICS)}")


def match_loss(net: nn.Module, real: torch.Tensor, syn: torch.Tensor, label: int, draw: DsaParams,
               normalize: Callable[[torch.Tensor], torch.Tensor], metric: str = "mse") -> torch.Tensor:
    """IDC's matchloss for one class: ``real`` and ``syn`` (pixels in [0, 1])
    normalised and augmented together by the one ``draw``, then the distance
    between the gradients of their cross-entropies (the synthetic one keeping
    its graph) over ``matched_params``."""
    both = apply_dsa(normalize(torch.cat([real, syn])), draw)
    n = len(real)
    params = matched_params(net)
    y_real = torch.full((n,), label, dtype=torch.long, device=both.device)
    y_syn = torch.full((len(syn),), label, dtype=torch.long, device=both.device)
    g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(both[:n]), y_real), params)]
    g_syn = torch.autograd.grad(F.cross_entropy(net(both[n:]), y_syn), params, create_graph=True)
    return sum(distance(r, s, metric) for r, s in zip(g_real, g_syn))


def class_synthetic(images: torch.Tensor, c: int, ipc: int, factor: int, most: int,
                    generator: torch.Generator) -> torch.Tensor:
    """Class c's decoded synthetic images (differentiable in ``images``); a
    random ``most`` of them when there are more (IDC's subsample)."""
    decoded = decode_multi(images[c * ipc:(c + 1) * ipc], factor)
    if len(decoded) > most > 0:
        keep = torch.randperm(len(decoded), generator=generator, device=generator.device)[:most]
        decoded = decoded[keep.to(decoded.device)]
    return decoded


def match_step(net: nn.Module, images: torch.Tensor, optimizer: torch.optim.Optimizer, reals: list[torch.Tensor],
               draws: list[DsaParams], normalize, settings: IdcSettings, generator: torch.Generator) -> float:
    """One matching step: for each class in turn, its loss and one image
    update (every class's step moves the whole image tensor: SGD momentum).
    ``reals[c]`` is class c's real batch, ``draws[c]`` its DSA draw.
    Returns the sum of the classes' losses."""
    total = 0.0
    for c, (real, draw) in enumerate(zip(reals, draws)):
        syn = class_synthetic(images, c, settings.ipc, settings.factor, settings.batch_syn, generator)
        loss = match_loss(net, real, syn, c, draw, normalize, settings.metric)
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=[images])  # the images only, never the network's .grad
        optimizer.step()
        total += float(loss.detach())
    return total


class ClassStream:
    """Real batches of one class at a time, as IDC's ClassBatchSampler: each
    class's images in a shuffled order, ``batch`` at a time (drop_last), then
    reshuffled."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch: int, generator: torch.Generator):
        self.x, self.generator = x, generator
        labels = y.detach().cpu()
        self.indices = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
        for c, idx in enumerate(self.indices):
            if len(idx) == 0:
                raise ValueError(f"class {c} has no real images")
        self.batch = [min(batch, len(idx)) for idx in self.indices]
        self.orders = [torch.zeros(0, dtype=torch.long) for _ in self.indices]

    def get(self, c: int) -> torch.Tensor:
        if len(self.orders[c]) < self.batch[c]:
            idx = self.indices[c]
            self.orders[c] = idx[torch.randperm(len(idx), generator=self.generator, device=self.generator.device).cpu()]
        take, self.orders[c] = self.orders[c][:self.batch[c]], self.orders[c][self.batch[c]:]
        return self.x[take.to(self.x.device)]


class RealStream:
    """Random real batches over the whole training set, epoch after epoch (the
    last batch of an epoch partial), as IDC's loader_real feeds train_epoch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, generator: torch.Generator):
        self.x, self.y, self.batch, self.generator = x, y, batch, generator
        self.order = torch.zeros(0, dtype=torch.long)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.order) == 0:
            self.order = torch.randperm(len(self.y), generator=self.generator, device=self.generator.device).cpu()
        take, self.order = self.order[:self.batch], self.order[self.batch:]
        take = take.to(self.x.device)
        return self.x[take], self.y[take]


def train_on_real(net: nn.Module, optimizer: torch.optim.Optimizer, stream: RealStream, n_data: int,
                  normalize, settings: IdcSettings, generator: torch.Generator) -> None:
    """IDC's network update (train_epoch with n_data): real batches until
    ``n_data`` images were seen, each normalised, augmented per example
    (``net_ops``, no gradient) and CutMixed with probability ``cutmix``."""
    net.train()
    seen = 0
    while seen < n_data:
        x, y = stream.next()
        with torch.no_grad():
            x = apply_dsa(normalize(x), sample_dsa(len(x), generator, settings.net_ops, mode="idc"))
        rng = np.random.default_rng(draw_seed(generator))
        if rng.random() < settings.cutmix:
            mixed = cutmix(x, y, rng, settings.cutmix_beta)
            loss = mixed.loss(net(mixed.x))
        else:
            loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)


def mosaic_init(real_x: torch.Tensor, real_y: torch.Tensor, num_classes: int, ipc: int, factor: int,
                generator: torch.Generator) -> torch.Tensor:
    """IDC's init ('mix' with factor > 1, 'random' without): per class,
    ipc * factor^2 real images (a random draw; IDC takes the class's first),
    shrunk by nearest-neighbour interpolation (F.interpolate's default, as
    IDC) into the tiles: tile k = i * factor + j of stored image m holds real
    image k * ipc + m. Pixels in [0, 1], class-major."""
    _, channels, h, w = real_x.shape
    out = torch.empty((num_classes * ipc, channels, h, w), dtype=torch.float32, device=real_x.device)
    labels = real_y.detach().cpu()
    th, tw = h // factor, w // factor
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        need = ipc * factor * factor
        if len(idx) < need:
            raise ValueError(f"class {c} has {len(idx)} real images, fewer than the {need} needed "
                             f"(ipc x factor^2); lower ipc")
        pick = idx[torch.randperm(len(idx), generator=generator, device=generator.device).cpu()[:need]]
        img = real_x[pick.to(real_x.device)].float()
        for k in range(factor * factor):
            i, j = divmod(k, factor)
            tile = img[k * ipc:(k + 1) * ipc]
            if factor > 1:
                tile = F.interpolate(tile, size=(th, tw))
            out[c * ipc:(c + 1) * ipc, :, i * th:(i + 1) * th, j * tw:(j + 1) * tw] = tile
    return out


def distill_idc(real_x: torch.Tensor, real_y: torch.Tensor, num_classes: int, model_fn: ModelFn,
                normalize: Callable[[torch.Tensor], torch.Tensor], settings: IdcSettings, *,
                generator: torch.Generator,
                callback: Callable[[int, float, torch.Tensor], None] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """IDC's condensation of ``real_x`` (pixels in [0, 1], (N, C, H, W)).
    ``normalize`` maps such pixels to the networks' input. Returns the stored
    mosaics (num_classes * ipc, C, H, W) in [0, 1] pixels (as IDC saves them:
    clamped at the start of each outer iteration, not after the last) and
    their labels, class-major, on real_x's device. ``callback(iteration,
    loss, images)`` after each outer iteration, with the loss per class and step."""
    s = settings
    if s.metric not in METRICS:
        raise ValueError(f"unknown IDC metric {s.metric!r}; use one of {', '.join(METRICS)}")
    device = real_x.device
    if s.init == "real":
        images = mosaic_init(real_x, real_y, num_classes, s.ipc, s.factor, generator)
    elif s.init == "noise":  # IDC: randn / 4 + 0.5, clamped
        shape = (num_classes * s.ipc,) + tuple(real_x.shape[1:])
        images = (torch.randn(shape, generator=generator, device=generator.device).to(device) / 4 + 0.5).clamp(0, 1)
    else:
        raise ValueError(f"unknown init {s.init!r}; use 'real' or 'noise'")
    images = images.detach().clone().requires_grad_(True)
    labels = class_labels(num_classes, s.ipc, device)
    optimizer_img = torch.optim.SGD([images], lr=s.lr_img, momentum=IMAGE_MOMENTUM)
    classes = ClassStream(real_x, real_y, num_classes, s.batch_real, generator)
    stream = RealStream(real_x, real_y, s.batch_real, generator)
    for it in range(s.iterations):
        net = build(model_fn, generator, device)
        net.train()
        optimizer_net = torch.optim.SGD(net.parameters(), lr=s.lr_net, momentum=NET_MOMENTUM,
                                        weight_decay=NET_WEIGHT_DECAY)
        with torch.no_grad():
            images.clamp_(0.0, 1.0)
        loss_sum = 0.0
        for _ in range(s.steps):
            reals = [classes.get(c) for c in range(num_classes)]
            draws = [sample_dsa(1, generator, s.match_ops, mode="idc") for _ in range(num_classes)]
            loss_sum += match_step(net, images, optimizer_img, reals, draws, normalize, s, generator)
            if s.n_data > 0:
                train_on_real(net, optimizer_net, stream, s.n_data, normalize, s, generator)
        if callback is not None:
            callback(it, loss_sum / max(1, num_classes * s.steps), images.detach())
    return images.detach(), labels
