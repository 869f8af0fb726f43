"""The in-memory data set every loader returns and the trainer consumes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch


@dataclass(eq=False)
class Dataset:
    """Train and test splits as whole tensors.

    x is (N, C, H, W), uint8 for image sets (kept uint8 on the device and
    turned into float per batch) or float32; y is int64. mean and std are per
    channel, in the units of ``x.float()``.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    augment: bool = False  # crop + flip by default
    pixel_max: float = 255.0  # x.float() / pixel_max is the image in [0, 1] (ZCA's pixel space)
    # training images held out for selection (data.validation), in the units of test_x; None: none
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    _stats: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def to(self, device) -> "Dataset":
        move = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "test_x", "test_y", "val_x", "val_y")
                if getattr(self, k) is not None}
        return dataclasses.replace(self, **move)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) of ``test``, ``val`` (the held-out training images) or ``train``."""
        if name == "val" and self.val_x is None:
            raise ValueError(f"{self.name} holds out no validation images (data.validation)")
        return {"test": (self.test_x, self.test_y), "val": (self.val_x, self.val_y),
                "train": (self.train_x, self.train_y)}[name]

    def hold_out(self, fraction: float, generator: torch.Generator) -> "Dataset":
        """``fraction`` of each class's training images (a draw from ``generator``)
        as the validation split; the rest, in their order, stay for training."""
        labels = self.train_y.cpu()
        held = []
        for c in range(self.num_classes):
            idx = torch.nonzero(labels == c).flatten()
            n = int(round(fraction * len(idx)))
            held.append(idx[torch.randperm(len(idx), generator=generator)[:n]])
        val = torch.sort(torch.cat(held)).values
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[val] = False
        return dataclasses.replace(self, train_x=self.train_x[keep], train_y=self.train_y[keep],
                                   val_x=self.train_x[val], val_y=self.train_y[val])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._stats:  # build once per device, not per batch
            shape = (1, -1) + (1,) * (x.dim() - 2)
            self._stats[key] = (torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape),
                                torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape))
        mean, std = self._stats[key]
        return (x - mean) / std

    def subset(self, n: int) -> "Dataset":
        """Keep the first n training images; the test split and mean/std stay."""
        return dataclasses.replace(self, train_x=self.train_x[:n], train_y=self.train_y[:n])
