"""Memory a job will need, known before it runs, and memory a worker has.

Estimates are measured, then scaled: autograd's saved tensors of one step of
the spec's own network are counted (``saved_tensors_hooks``) on the CPU at two
tiny batch sizes, which gives bytes per example and fixed bytes exactly (the
saved tensors grow linearly with the batch); the job's figure is that line at
its batch, times what it keeps alive at once (e.g. MTT's unrolled steps), plus
the tensors that stay resident (weights, optimizer state, data, trajectories).
Kernel workspaces and allocator slack are not counted, so a job is refused
only when the estimate alone exceeds the memory, and the estimate is stated
as "~".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from raylth.engine.limits import Budget, available_memory


GiB = 1024 ** 3
PROBE_BATCHES = (2, 4)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / GiB:.1f} GiB"


def saved_bytes(step: Callable[[], object]) -> int:
    """Bytes autograd keeps for the backward pass while ``step()`` runs."""
    total = [0]

    def pack(t: torch.Tensor):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total[0]


def per_example_line(measure: Callable[[int], int]) -> tuple[float, float]:
    """(fixed bytes, bytes per example) from ``measure(batch)`` at two batches."""
    small, large = PROBE_BATCHES
    a, b = measure(small), measure(large)
    per = (b - a) / (large - small)
    return max(0.0, a - per * small), max(0.0, per)


_LINES: dict = {}  # measured lines by (what, network structure, input shape, classes)


def _cached_line(what: str, model: nn.Module, input_shape, num_classes: int,
                 measure_on: Callable[[nn.Module], Callable[[int], int]]) -> tuple[float, float]:
    """per_example_line of ``measure_on(a CPU copy of model)``, measured once per
    network structure: every level, child and resumed run of one network asks
    the same question."""
    key = (what, tuple(type(m).__name__ for m in model.modules()),
           tuple((n, tuple(p.shape)) for n, p in model.named_parameters()), tuple(input_shape), num_classes)
    if key not in _LINES:
        _LINES[key] = per_example_line(measure_on(_cpu_copy(model)))
    return _LINES[key]


def param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@dataclass(frozen=True)
class Estimate:
    """Peak bytes a job keeps on its device."""
    device: float


def training_estimate(model: nn.Module, input_shape, batch: int, num_classes: int, data_bytes: int,
                      optimizer_states: int = 1) -> Estimate:
    """A Trainer's peak: the activations of one float32 step at ``batch``
    (bf16 autocast keeps about half), weights, gradients and
    ``optimizer_states`` buffers per weight, and the data set resident on the
    device."""
    def measure_on(net: nn.Module):
        def measure(n: int) -> int:
            x = torch.zeros(n, *input_shape)
            y = torch.arange(n) % num_classes
            return saved_bytes(lambda: F.cross_entropy(net(x), y))
        return measure

    fixed, per = _cached_line("train", model, input_shape, num_classes, measure_on)
    weights = param_bytes(model) * (2 + optimizer_states)
    return Estimate(device=fixed + per * batch + weights + data_bytes)


def mtt_unroll_estimate(model: nn.Module, input_shape, batch_syn: int, syn_steps: int, n_images: int,
                        num_classes: int, low_memory: bool) -> Estimate:
    """Peak device bytes of one MTT iteration: per unrolled student step, the
    forward activations of ``batch_syn`` images and the graph of their
    parameter gradient (create_graph) and one parameter vector; with
    ``low_memory`` only each step's inputs, plus one step recomputed at a time."""
    fixed, per = _cached_line("mtt", model, input_shape, num_classes, _unroll_step_measure(input_shape, num_classes))
    one_step = fixed + per * batch_syn
    vector = sum(p.numel() for p in model.parameters()) * 4
    image_bytes = 4 * int(torch.tensor(input_shape).prod())
    resident = 4 * vector + 3 * n_images * image_bytes  # theta0, target, flat, grad; images, grad, momentum
    if low_memory:
        kept = syn_steps * (vector + batch_syn * image_bytes) + one_step
    else:
        kept = syn_steps * (one_step + vector)
    return Estimate(device=kept + resident)


def _unroll_step_measure(input_shape, num_classes: int):
    """measure(batch) of one unrolled MTT student step on a network."""
    from torch.func import functional_call

    def measure_on(net: nn.Module):
        names = [n for n, _ in net.named_parameters()]
        shapes = [p.shape for _, p in net.named_parameters()]
        sizes = [p.numel() for _, p in net.named_parameters()]
        flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).requires_grad_(True)

        def measure(n: int) -> int:
            x = torch.zeros(n, *input_shape, requires_grad=True)
            y = torch.arange(n) % num_classes

            def step():
                params = {k: t.view(s) for k, t, s in zip(names, torch.split(flat, sizes), shapes)}
                loss = F.cross_entropy(functional_call(net, params, (x,)), y)
                grad, = torch.autograd.grad(loss, flat, create_graph=True)
                return flat - 0.01 * grad
            return saved_bytes(step)
        return measure
    return measure_on


def trajectories_bytes(n_params: int, n_experts: int, epochs_kept: int) -> int:
    """Host bytes of ``n_experts`` float32 trajectories of ``epochs_kept + 1`` snapshots."""
    return 4 * n_params * n_experts * (epochs_kept + 1)


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy
    return copy.deepcopy(model).cpu().float().train()


def device_budget(device: torch.device) -> Budget:
    """Bytes the worker's device has, and where that was read: the GPU's total
    memory (or RAYLTH_DEVICE_MEMORY_GIB, e.g. to plan for a smaller GPU than
    this one), on CPU the memory the host or the container leaves available."""
    override = os.environ.get("RAYLTH_DEVICE_MEMORY_GIB")
    if override:
        return Budget(float(override) * GiB, "RAYLTH_DEVICE_MEMORY_GIB")
    if device.type == "cuda":
        return Budget(float(torch.cuda.get_device_properties(device).total_memory), "the GPU's memory")
    return host_budget()


def host_budget() -> Budget:
    """Bytes of host memory available now: the host's, or less under a
    container's limit (raylth.engine.limits); RAYLTH_HOST_MEMORY_GIB overrides."""
    override = os.environ.get("RAYLTH_HOST_MEMORY_GIB")
    if override:
        return Budget(float(override) * GiB, "RAYLTH_HOST_MEMORY_GIB")
    return available_memory()


def device_memory(device: torch.device) -> float:
    return device_budget(device).amount


def host_memory() -> float:
    return host_budget().amount


def device_words(device: torch.device) -> str:
    return "GPU memory" if device.type == "cuda" else "memory"
