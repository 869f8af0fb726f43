"""Will the job fit? Each training and distillation stage asks before it starts.

The estimates come from raylth.engine.memory (the spec's own network,
measured at two tiny batches, scaled). A job that cannot fit stops at once with
one line naming the setting to change; an MTT unroll that fits only with
``low_memory`` gets it automatically (same result up to float rounding, the
artifact id unchanged, ``low_memory_auto`` in its metrics).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from raylth.engine.memory import (Estimate, device_memory, device_words, gib, host_memory, mtt_unroll_estimate,
                                  training_estimate, trajectories_bytes)
from raylth.engine.models import build_model
from raylth.errors import WontFitError
from raylth.specs import DistillSpec, ModelSpec, TrainSpec

log = logging.getLogger("raylth")


def check_fits(what: str, need: float, have: float, device: torch.device, fix: str) -> None:
    if need > have:
        raise WontFitError(f"{what}: needs ~{gib(need)} of {device_words(device)}, the worker has {gib(have)}: {fix}")


def _network(model: ModelSpec, input_shape: tuple, num_classes: int):
    return build_model(model, input_shape, num_classes, seed=0)


def check_training(what: str, net: nn.Module, train: TrainSpec, data, device: torch.device,
                   have: float | None = None) -> Estimate:
    """A Trainer's peak device memory against the worker's."""
    resident = sum(t.numel() * t.element_size() for t in (data.train_x, data.train_y, data.test_x, data.test_y))
    estimate = training_estimate(net, data.input_shape, min(train.batch_size, len(data.train_y)),
                                 data.num_classes, resident, optimizer_states=2 if train.optimizer == "adam" else 1)
    check_fits(what, estimate.device, device_memory(device) if have is None else have, device,
               f"lower train.batch_size ({train.batch_size}) or use a worker with more memory")
    return estimate


def mtt_low_memory(spec: DistillSpec, real, device: torch.device, have: float | None = None,
                   host: float | None = None) -> bool:
    """Whether the MTT unroll of ``spec`` runs with low_memory: as asked, or
    automatically when only that fits. Raises WontFitError when neither fits,
    or when the expert trajectories do not fit in host memory."""
    have = device_memory(device) if have is None else have
    net = _network(spec.model, tuple(real.input_shape), real.num_classes)
    n_images = spec.ipc * real.num_classes
    batch = n_images if spec.batch_syn is None else min(spec.batch_syn, n_images)

    def need(steps: int, low: bool) -> float:
        return mtt_unroll_estimate(net, real.input_shape, batch, steps, n_images, real.num_classes, low).device

    experts = spec.experts_spec()
    n_params = sum(p.numel() for p in net.parameters())
    check_fits("mtt experts", trajectories_bytes(n_params, experts.n, experts.epochs),
               host_memory() if host is None else host, torch.device("cpu"),
               f"fewer experts.n ({experts.n}) or max_start_epoch + expert_epochs ({experts.epochs})")
    plain = need(spec.syn_steps, False)
    if spec.low_memory or plain <= have:
        return spec.low_memory
    low = need(spec.syn_steps, True)
    if low <= have:
        log.warning("mtt: the unroll needs ~%s of %s for syn_steps %d with %s, the worker has %s: "
                    "running it with low_memory (~%s)", gib(plain), device_words(device), spec.syn_steps,
                    spec.model.name, gib(have), gib(low))
        return True
    one, two = need(1, True), need(2, True)
    steps = int((have - one) // max(1.0, two - one)) + 1 if have >= one else 0
    fix = (f"set syn_steps <= {steps} (with low_memory)" if steps >= 1
           else f"lower batch_syn ({batch}) or ipc ({spec.ipc})")
    check_fits(f"mtt: syn_steps {spec.syn_steps} with {spec.model.name}", low, have, device,
               f"{fix}; without low_memory it needs ~{gib(plain)}")
    return True


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
               device_memory(device) if have is None else have, device,
               f"lower batch_real ({spec.batch_real}) or ipc ({spec.ipc})")
    return False
