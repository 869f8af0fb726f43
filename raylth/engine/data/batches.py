"""Seeded training batches: the order, crops and flips of an epoch derive from
(seed, epoch), DSA and CutMix draws from (seed, epoch, batch index), so a run
resumed mid-epoch equals an uninterrupted one and CPU and GPU draw the same
augmentations."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from raylth.specs.groups import AugmentSpec

from .dataset import Dataset
from .dsa import apply_dsa, sample_dsa

PAD = 4  # zero padding of the random crop; offsets are 0..2*PAD per axis
NO_AUGMENT = AugmentSpec(name="none")


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches per epoch: the last partial batch is kept, as a PyTorch
    DataLoader does (``drop_last``: dropped); a set smaller than one batch is
    a single batch of all of it."""
    return max(1, n // batch_size) if drop_last else -(-n // batch_size)


def points_seen(n: int, batch_size: int, steps: int, drop_last: bool = False) -> int:
    """Training examples in the first ``steps`` batches (the partial batch counted as it is)."""
    per_epoch = steps_per_epoch(n, batch_size, drop_last)
    size = min(batch_size, n)
    epochs, rest = divmod(steps, per_epoch)
    epoch_points = n if not drop_last else per_epoch * size
    return epochs * epoch_points + min(rest * size, n)


def resolve_augment(augment: AugmentSpec | bool | None) -> AugmentSpec:
    """A TrainSpec's augment, or a data set's default (True: crop + flip)."""
    if isinstance(augment, AugmentSpec):
        return augment
    return AugmentSpec() if augment else NO_AUGMENT


@dataclass
class Batch:
    """One training batch: x normalised float32 (augmented), y its labels; with
    CutMix, ``y_mix`` the partners' labels and ``lam`` the share of the loss on y."""
    x: torch.Tensor
    y: torch.Tensor
    y_mix: torch.Tensor | None = None
    lam: float = 1.0

    def __iter__(self):  # x, y = batch
        return iter((self.x, self.y))

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, self.y)
        if self.y_mix is None:
            return loss
        return loss * self.lam + F.cross_entropy(logits, self.y_mix) * (1.0 - self.lam)

    def shard(self, rank: int, world: int) -> "Batch":
        if world == 1:
            return self
        mix = None if self.y_mix is None else self.y_mix[rank::world]
        return Batch(self.x[rank::world], self.y[rank::world], mix, self.lam)


def seed_for(seed: int, epoch: int, purpose: str) -> int:
    digest = hashlib.sha256(f"{seed}:{epoch}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: fits manual_seed


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed_for(seed, epoch, "order")))


def epoch_draws(n: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop offsets (n, 2) in 0..2*PAD and flip bits (n,), per example index,
    so they do not depend on the order seed."""
    g = torch.Generator().manual_seed(seed_for(seed, epoch, "augment"))
    offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g)
    flips = torch.randint(0, 2, (n,), generator=g).bool()
    return offsets, flips


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Random crop of the PAD-zero-padded batch, then horizontal flip, in one
    gather on x's device. offsets[i] = (row, col) of the crop's top left in
    the padded image; (PAD, PAD) unflipped is the original image."""
    b, c, h, w = x.shape
    ph, pw = h + 2 * PAD, w + 2 * PAD
    padded = F.pad(x, (PAD, PAD, PAD, PAD)).reshape(-1)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)                 # (B, H)
    cols = torch.arange(w, device=x.device)
    cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - cols, cols)  # (B, W)
    # One flat index into the padded batch: about twice as fast on CPU as
    # indexing with four broadcast index tensors.
    planes = torch.arange(b * c, device=x.device).view(b, c) * ph            # (B, C)
    flat = ((planes[:, :, None] + rows[:, None, :]) * pw)[..., None] + cols[:, None, None, :]
    return padded[flat]


def cutmix(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, beta: float) -> Batch:
    """CutMix as IDC and the paper's code do it: lambda ~ Beta(beta, beta),
    partners by a random permutation of the batch, one box for the whole
    batch (side sqrt(1 - lambda) of the image's, centre uniform, clipped),
    and the loss weighted by the area that stayed."""
    _, _, h, w = x.shape
    lam = rng.beta(beta, beta)
    perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y1, y2 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x1, x2 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    x = x.clone()
    x[:, :, y1:y2, x1:x2] = x[perm, :, y1:y2, x1:x2]
    kept = 1.0 - float((y2 - y1) * (x2 - x1)) / (h * w)
    return Batch(x, y, y[perm], kept)


def epoch_batches(data: Dataset, batch_size: int, epoch: int, seeds, augment: AugmentSpec | bool | None,
                  start_batch: int = 0, rank: int = 0, world: int = 1, drop_last: bool = False
                  ) -> Iterator[Batch]:
    """Yield the Batches of one epoch from batch start_batch on: x float32,
    augmented and normalised, on the data's device. Under data parallelism
    every rank draws the same global batch and keeps its shard (every
    world-th example from position rank), so the union over ranks is exactly
    the single-process batch. Crop offsets and flips are drawn per example
    for the epoch; DSA and CutMix draws per (epoch, batch), from the augment
    seed, so a resumed epoch draws what the uninterrupted one did."""
    augment = resolve_augment(augment)
    n = len(data.train_y)
    size = min(batch_size, n)
    device = data.train_x.device
    order = epoch_order(n, seeds.order, epoch).to(device)
    crop = augment.name == "crop_flip"
    if crop:
        offsets, flips = (t.to(device) for t in epoch_draws(n, seeds.augment, epoch))
    # per-example work only: each rank takes its shard first; DSA and CutMix draw per batch,
    # so the global batch is augmented on every rank and then sharded
    whole = augment.name == "dsa" or augment.cutmix > 0
    for step in range(start_batch, steps_per_epoch(n, batch_size, drop_last)):
        idx = order[step * size:(step + 1) * size]
        if not whole:
            idx = idx[rank::world]
        x = crop_flip(data.train_x[idx], offsets[idx], flips[idx]) if crop else data.train_x[idx]
        x = data.normalize(x.float())
        if augment.name == "dsa":
            g = torch.Generator().manual_seed(seed_for(seeds.augment, epoch, f"dsa:{step}"))
            x = apply_dsa(x, sample_dsa(len(idx), g, augment.ops, mode=augment.mode))
        batch = Batch(x, data.train_y[idx])
        if augment.cutmix:
            rng = np.random.default_rng(seed_for(seeds.augment, epoch, f"cutmix:{step}"))
            if rng.random() < augment.cutmix:
                batch = cutmix(x, batch.y, rng, augment.cutmix_beta)
        yield batch.shard(rank, world) if whole else batch


def fixed_batches(data: Dataset, n_batches: int, batch_size: int,
                  seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` normalised float32 training batches, no augmentation, on
    the data's device. Indices come from successive permutations of the
    training set drawn by a torch.Generator seeded from ``seed`` (so no image
    repeats until all have been used); batch_size is capped at the set size."""
    if n_batches < 1 or batch_size < 1:
        raise ValueError(f"n_batches ({n_batches}) and batch_size ({batch_size}) must be at least 1")
    n = len(data.train_y)
    size = min(batch_size, n)
    g = torch.Generator().manual_seed(seed_for(seed, 0, "fixed-batches"))
    passes = -(-n_batches * size // n)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(passes)])
    order = order.to(data.train_x.device)
    out = []
    for i in range(n_batches):
        idx = order[i * size:(i + 1) * size]
        out.append((data.normalize(data.train_x[idx].float()), data.train_y[idx]))
    return out
