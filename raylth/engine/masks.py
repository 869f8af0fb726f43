"""Masks over prunable weights, pruning strategies, and rewinding.

A mask is a dict ``weight name -> bool tensor`` (True = kept) covering every
prunable weight (conv and linear weights not matched by an ignore pattern).
"""

from __future__ import annotations

import fnmatch
from typing import Callable

import torch
from torch import nn

from raylth.engine.models import prunable_weight_names
from raylth.errors import SpecError, did_you_mean

Mask = dict[str, torch.Tensor]
PRUNING_STRATEGIES: dict[str, Callable[..., Mask]] = {}


def register_strategy(name: str):
    def add(fn):
        PRUNING_STRATEGIES[name] = fn
        return fn
    return add


def check_strategy_name(name: str) -> None:
    if name not in PRUNING_STRATEGIES:
        raise SpecError(f"prune.strategy: unknown strategy {name!r}{did_you_mean(name, PRUNING_STRATEGIES)}; known strategies are "
                        f"{', '.join(sorted(PRUNING_STRATEGIES))}")


def prunable_names(model: nn.Module, ignore: tuple[str, ...] = ()) -> list[str]:
    """Conv and linear weights, less those matching an ignore glob pattern."""
    return [name for name in prunable_weight_names(model)
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in ignore)]


def full_mask(model: nn.Module, ignore: tuple[str, ...] = ()) -> Mask:
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool, device="cpu") for n in prunable_names(model, ignore)}


def sparsity(mask: Mask) -> float:
    total = sum(m.numel() for m in mask.values())
    kept = sum(int(m.sum()) for m in mask.values())
    return 1.0 - kept / total if total else 0.0


def counts(mask: Mask) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in mask.items()}


def prune(strategy: str, weights: dict[str, torch.Tensor], mask: Mask, fraction: float,
          generator: torch.Generator | None = None) -> Mask:
    """Prune ``fraction`` of the weights ``mask`` still keeps; return the new mask."""
    check_strategy_name(strategy)
    return PRUNING_STRATEGIES[strategy](weights=weights, mask=mask, fraction=fraction,
                                        generator=generator)


def _keep_top(scores: torch.Tensor, alive: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Keep the n_keep highest-scoring alive entries (ties broken by position)."""
    flat = torch.where(alive.flatten(), scores.flatten().double(), torch.tensor(float("-inf"), dtype=torch.float64))
    order = torch.argsort(flat, descending=True, stable=True)
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order[:n_keep]] = True
    return keep.view_as(alive)


def _n_to_prune(alive: int, fraction: float) -> int:
    return int(round(fraction * alive))


def _global(scores: dict[str, torch.Tensor], mask: Mask, fraction: float) -> Mask:
    names = list(mask)
    alive = torch.cat([mask[n].flatten() for n in names])
    flat_scores = torch.cat([scores[n].flatten() for n in names])
    n_alive = int(alive.sum())
    keep = _keep_top(flat_scores, alive, n_alive - _n_to_prune(n_alive, fraction))
    out, start = {}, 0
    for n in names:
        size = mask[n].numel()
        out[n] = keep[start:start + size].view_as(mask[n])
        start += size
    return out


def _layerwise(scores: dict[str, torch.Tensor], mask: Mask, fraction: float) -> Mask:
    out = {}
    for n, m in mask.items():
        n_alive = int(m.sum())
        out[n] = _keep_top(scores[n], m, n_alive - _n_to_prune(n_alive, fraction))
    return out


def _magnitudes(weights, mask):
    return {n: weights[n].detach().abs().float().cpu() for n in mask}


def _random_scores(mask, generator):
    return {n: torch.rand(m.shape, generator=generator) for n, m in mask.items()}


@register_strategy("global_magnitude")
def global_magnitude(weights, mask, fraction, generator=None):
    return _global(_magnitudes(weights, mask), mask, fraction)


@register_strategy("layerwise_magnitude")
def layerwise_magnitude(weights, mask, fraction, generator=None):
    return _layerwise(_magnitudes(weights, mask), mask, fraction)


@register_strategy("random_global")
def random_global(weights, mask, fraction, generator=None):
    return _global(_random_scores(mask, generator), mask, fraction)


@register_strategy("random_layerwise")
def random_layerwise(weights, mask, fraction, generator=None):
    return _layerwise(_random_scores(mask, generator), mask, fraction)


def random_like(mask: Mask, generator: torch.Generator) -> Mask:
    """A random mask with exactly the same number of kept weights per layer."""
    full = {n: torch.ones_like(m) for n, m in mask.items()}
    return {n: _keep_top(torch.rand(m.shape, generator=generator), full[n], int(m.sum()))
            for n, m in mask.items()}


def rewind_state(trained: dict[str, torch.Tensor], rewind_to: dict[str, torch.Tensor],
                 mask: Mask, rewind_bn: bool) -> dict[str, torch.Tensor]:
    """The state a ticket starts from: prunable weights take their rewind-point
    values where kept and 0 where pruned; every other tensor (biases, BatchNorm
    parameters and statistics) takes its rewind-point value if ``rewind_bn``,
    else keeps its trained value."""
    out = {}
    for name, value in trained.items():
        if name in mask:
            out[name] = rewind_to[name] * mask[name].to(rewind_to[name].device)
        else:
            out[name] = (rewind_to[name] if rewind_bn else value).clone()
    return out


def apply_mask(model: nn.Module, mask: Mask) -> None:
    """Zero the pruned weights in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in mask.items():
            params[name].mul_(m.to(params[name].device))


class MaskKeeper:
    """Keeps pruned weights exactly zero during training. The weights are
    zeroed once and every gradient is masked, so SGD (momentum, nesterov,
    weight decay) and Adam never move a pruned weight: its gradient, momentum
    and moments stay exactly zero. No per-step pass over the weights is
    needed; ``reapply`` re-masks them (one fused foreach call) as a guard at
    epoch ends."""

    def __init__(self, model: nn.Module, mask: Mask | None):
        self.params, self.masks, self.handles = [], [], []
        if not mask:
            return
        named = dict(model.named_parameters())
        for name, m in mask.items():
            if bool(m.all()):
                continue
            param = named[name]
            device_mask = m.to(param.device, param.dtype)
            self.params.append(param)
            self.masks.append(device_mask)
            self.handles.append(param.register_hook(lambda g, dm=device_mask: g * dm))
        apply_mask(model, mask)

    @torch.no_grad()
    def reapply(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
