"""Helpers shared by the distillers: seeds, per-class real batches, embeddings."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

ModelFn = Callable[[int], nn.Module]


def draw_seed(generator: torch.Generator) -> int:
    """A 62-bit seed from ``generator`` (for model_fn and sub-generators)."""
    return int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))


def build(model_fn: ModelFn, generator: torch.Generator, device) -> nn.Module:
    """A fresh network from model_fn(seed drawn from generator), on device."""
    return model_fn(draw_seed(generator)).to(device)


def check_real(real_x: torch.Tensor, real_y: torch.Tensor, num_classes: int) -> None:
    if not real_x.is_floating_point():
        raise ValueError(f"real images are {real_x.dtype}; distillation works on normalised float "
                         f"images: pass data.normalize(x.float())")
    if real_x.dim() != 4 or len(real_x) != len(real_y):
        raise ValueError(f"real images {list(real_x.shape)} and labels {list(real_y.shape)}: "
                         f"expected (N, C, H, W) and (N,)")
    if len(real_y) and (int(real_y.min()) < 0 or int(real_y.max()) >= num_classes):
        raise ValueError(f"labels lie outside 0..{num_classes - 1}")


def sgd_epoch(net: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              batch_size: int, generator: torch.Generator, dsa: bool, dsa_strategy: str) -> None:
    """One pass over (x, y) in an order drawn from ``generator``, each batch
    augmented per example by DSA (when ``dsa``), one SGD step per batch."""
    from raylth.engine.data.dsa import apply_dsa, sample_dsa

    order = torch.randperm(len(y), generator=generator, device=generator.device).to(x.device)
    for start in range(0, len(y), batch_size):
        idx = order[start:start + batch_size]
        batch = x[idx]
        if dsa:
            batch = apply_dsa(batch, sample_dsa(len(batch), generator, dsa_strategy))
        loss = torch.nn.functional.cross_entropy(net(batch), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


class ClassSampler:
    """Random real batches of one class: ``get(c, n)`` = n images of class c
    without replacement (all of them, shuffled, when the class has fewer),
    as DC/DM's get_images; the draws come from ``generator``."""

    def __init__(self, real_x: torch.Tensor, real_y: torch.Tensor, num_classes: int,
                 generator: torch.Generator):
        self.x, self.generator = real_x, generator
        y = real_y.detach().cpu()
        self.indices = [torch.nonzero(y == c).flatten() for c in range(num_classes)]
        for c, idx in enumerate(self.indices):
            if len(idx) == 0:
                raise ValueError(f"class {c} has no real images")

    def get(self, c: int, n: int) -> torch.Tensor:
        idx = self.indices[c]
        perm = torch.randperm(len(idx), generator=self.generator, device=self.generator.device).cpu()
        return self.x[idx[perm[:n]].to(self.x.device)]


class _Stop(Exception):
    pass


def last_linear(model: nn.Module) -> nn.Linear:
    found = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer; embed() takes the "
                         f"input of the last one as the features")
    return found[-1]


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features: the (flattened) input of the model's last
    nn.Linear, caught by a forward pre-hook; the forward stops there, so the
    classifier itself is never computed."""
    captured = {}

    def hook(module, inputs):
        captured["x"] = inputs[0]
        raise _Stop

    handle = last_linear(model).register_forward_pre_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "x" not in captured:
        raise ValueError(f"{type(model).__name__}: the forward pass never reached its last nn.Linear")
    return captured["x"].flatten(1)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
