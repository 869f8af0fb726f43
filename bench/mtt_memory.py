"""Peak device memory of an MTT distillation at the paper's settings
(ConvNet-3 width 128, CIFAR-10 ipc 10, syn_steps 30, the whole synthetic set
per student step), with and without ``low_memory``, and the seconds per
iteration of each.

    python bench/mtt_memory.py [--small|--full] [--device cuda]

The expert trajectories are synthetic (the start parameters plus small
steps): memory and time depend on the unroll, not on what the experts
learned. On CPU (--small: width 32, syn_steps 10) the figures are the bytes
autograd keeps for the backward pass (saved tensors, summed), not a peak.
"""

from __future__ import annotations

import torch

import common
from raylth.engine.distill import distill_mtt
from raylth.engine.models import build_model
from raylth.specs import ModelSpec

SIZES = {"full": {"width": 128, "syn_steps": 30, "ipc": 10, "iterations": 3},
         "small": {"width": 32, "syn_steps": 10, "ipc": 10, "iterations": 2}}


def _experts(model, epochs: int, generator: torch.Generator) -> list[list[torch.Tensor]]:
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    steps = [start]
    for _ in range(epochs):
        steps.append(steps[-1] + 1e-3 * torch.randn(start.shape, generator=generator))
    return [steps]


def measure(size: dict, device: str, low_memory: bool) -> dict:
    shape, classes = (3, 32, 32), 10
    g = torch.Generator().manual_seed(0)
    real_x = torch.randn(2000, *shape, generator=g).to(device)
    real_y = (torch.arange(2000) % classes).to(device)

    def model_fn(seed):
        return build_model(ModelSpec("conv3", width=size["width"]), shape, classes, seed=seed)

    experts = _experts(model_fn(0), 4, g)
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        seconds, _ = common.timed(lambda: distill_mtt(
            real_x, real_y, classes, experts, model_fn, ipc=size["ipc"], iterations=size["iterations"],
            syn_steps=size["syn_steps"], expert_epochs=2, max_start_epoch=2, lr_img=1000.0,
            low_memory=low_memory, generator=generator), device)
    out = {"s_per_iteration": seconds / size["iterations"],
           "saved_gib_per_iteration": saved[0] / size["iterations"] / 2 ** 30}
    if torch.device(device).type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return out


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    size = SIZES[common.size_name(args)]
    plain, low = measure(size, args.device, False), measure(size, args.device, True)
    figures = {f"{k} plain": v for k, v in plain.items()} | {f"{k} low_memory": v for k, v in low.items()}
    common.publish("mtt_memory", args, f"ConvNet-3 width {size['width']}, ipc {size['ipc']}, "
                   f"syn_steps {size['syn_steps']}", figures, details={"size": size})


if __name__ == "__main__":
    main()
