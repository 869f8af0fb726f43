"""Will the job fit? Each training and distillation stage asks before it starts.

The estimates come from raylth.engine.memory (the spec's own network,
measured at two tiny batches, scaled). A job that cannot fit stops at once with
one line naming the setting to change. A distillation method with needs of
its own checks them in its plugin (MTT's unroll: raylth/plugins/distillers/mtt/memory.py).
"""

from __future__ import annotations

import torch
from torch import nn

from raylth.engine.limits import Budget
from raylth.engine.memory import Estimate, device_budget, device_words, gib, training_estimate
from raylth.engine.models import build_model
from raylth.errors import WontFitError
from raylth.specs import DistillSpec, ModelSpec, TrainSpec

def check_fits(what: str, need: float, have: float | Budget, device: torch.device, fix: str) -> None:
    """``have``: bytes, or a Budget whose source the refusal names (the container's limit, the GPU's memory)."""
    amount, source = (have.amount, f" ({have.source})") if isinstance(have, Budget) else (have, "")
    if need > amount:
        raise WontFitError(f"{what}: needs ~{gib(need)} of {device_words(device)}, the worker has "
                           f"{gib(amount)}{source}: {fix}")


def _network(model: ModelSpec, input_shape: tuple, num_classes: int):
    return build_model(model, input_shape, num_classes, seed=0)


def check_training(what: str, net: nn.Module, train: TrainSpec, data, device: torch.device,
                   have: float | None = None) -> Estimate:
    """A Trainer's peak device memory against the worker's."""
    resident = sum(t.numel() * t.element_size() for t in (data.train_x, data.train_y, data.test_x, data.test_y))
    estimate = training_estimate(net, data.input_shape, min(train.batch_size, len(data.train_y)),
                                 data.num_classes, resident, optimizer_states=2 if train.optimizer == "adam" else 1)
    check_fits(what, estimate.device, device_budget(device) if have is None else have, device,
               f"lower train.batch_size ({train.batch_size}) or use a worker with more memory")
    return estimate


def check_matching(spec: DistillSpec, real, device: torch.device, have: float | None = None,
                   gradients: bool = False) -> bool:
    """DM / gradient matching: one matching step holds the activations of a
    class's real batch and the whole synthetic set (``gradients``: and their
    gradients' graph, about twice that), next to the real set resident on the
    device. Returns False (no low_memory mode)."""
    net = _network(spec.model, tuple(real.input_shape), real.num_classes)
    synthetic = spec.ipc * real.num_classes * spec.factor ** 2
    resident = sum(t.numel() * t.element_size() for t in (real.train_x, real.train_y))
    step = training_estimate(net, real.input_shape, spec.batch_real + synthetic, real.num_classes, resident)
    need = step.device * (2 if gradients else 1)
    check_fits(f"{spec.method}: ipc {spec.ipc} with {spec.model.name}", need,
               device_budget(device) if have is None else have, device,
               f"lower batch_real ({spec.batch_real}) or ipc ({spec.ipc})")
    return False
