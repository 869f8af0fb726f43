"""The model registry: names to builders, deterministic construction, prunable weights."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from raylth.errors import SpecError, did_you_mean

# name -> builder(input_shape, num_classes, width=<the family's default>) -> nn.Module
MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator adding a builder to MODELS under ``name``."""
    def add(builder):
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = builder
        return builder
    return add


def check_model_name(name: str) -> None:
    if name not in MODELS:
        raise SpecError(f"model.name: unknown model {name!r}{did_you_mean(name, MODELS)}; known models are {', '.join(sorted(MODELS))}")


def build_model(spec, input_shape: tuple[int, int, int], num_classes: int, seed: int) -> nn.Module:
    """Build ``spec`` on the CPU with weights drawn from ``seed`` alone.

    Layers keep PyTorch's default initialisation (kaiming-uniform for conv/linear,
    ones/zeros for norms); only the seed decides the draw.
    """
    check_model_name(spec.name)
    kwargs = {} if spec.width is None else {"width": spec.width}
    # fork_rng restores the global CPU generator afterwards, so building a model
    # never shifts the random stream of whatever runs next.
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        return MODELS[spec.name](tuple(input_shape), num_classes, **kwargs)


def prunable_weight_names(model: nn.Module) -> list[str]:
    """Parameter names of every Conv2d and Linear weight, in module order."""
    return [f"{name}.weight" if name else "weight"
            for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))]
