"""Will an MTT distillation fit? Its unroll (every student step alive, or one
at a time with low_memory) and its expert trajectories (host memory),
estimated before it starts (raylth.engine.memory)."""

from __future__ import annotations

import logging

import torch

from raylth.engine.memory import device_budget, device_words, gib, host_budget, mtt_unroll_estimate, trajectories_bytes
from raylth.plugins.distillers.mtt.experts import experts_spec
from raylth.stages.memory import _network, check_fits

log = logging.getLogger("raylth")


def mtt_low_memory(spec, real, device: torch.device, have: float | None = None,
                   host: float | None = None) -> bool:
    """Whether the MTT unroll of ``spec`` runs with low_memory: as asked, or
    automatically when only that fits. Raises WontFitError when neither fits,
    or when the expert trajectories do not fit in host memory."""
    budget = device_budget(device) if have is None else have  # a Budget names its source in a refusal
    have = getattr(budget, "amount", budget)
    net = _network(spec.model, tuple(real.input_shape), real.num_classes)
    n_images = spec.ipc * real.num_classes
    batch = n_images if spec.batch_syn is None else min(spec.batch_syn, n_images)

    def need(steps: int, low: bool) -> float:
        return mtt_unroll_estimate(net, real.input_shape, batch, steps, n_images, real.num_classes, low).device

    experts = experts_spec(spec)
    n_params = sum(p.numel() for p in net.parameters())
    check_fits("mtt experts", trajectories_bytes(n_params, experts.n, experts.epochs),
               host_budget() if host is None else host, torch.device("cpu"),
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
    check_fits(f"mtt: syn_steps {spec.syn_steps} with {spec.model.name}", low, budget, device,
               f"{fix}; without low_memory it needs ~{gib(plain)}")
    return True
