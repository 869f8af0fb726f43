"""Distribution matching (DM; Zhao & Bilen, WACV 2023).

Each iteration draws a fresh randomly initialised network (model_fn), embeds
a real batch and the synthetic images of every class with its penultimate
features (``embed``) after the same siamese DSA draw, and moves the images
by SGD (momentum 0.5) on  sum_c || mean emb(real_c) - mean emb(syn_c) ||^2.
The network is never trained; its parameters get no gradient.
"""

from __future__ import annotations

from typing import Callable

import torch

from raylth.engine.data.dsa import DEFAULT_STRATEGY, apply_dsa, sample_dsa
from .common import ClassSampler, ModelFn, build, check_real, embed
from .init import init_images


def distill_dm(real_x: torch.Tensor, real_y: torch.Tensor, num_classes: int, model_fn: ModelFn,
               ipc: int, iterations: int, lr_img: float = 1.0, batch_real: int = 256,
               dsa: bool = True, init: str = "real", *, generator: torch.Generator,
               dsa_strategy: str = DEFAULT_STRATEGY,
               callback: Callable[[int, float, torch.Tensor], None] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (images (num_classes * ipc, C, H, W) float32, labels), class-major,
    on real_x's device, in real_x's (normalised) space. ``callback(iteration,
    loss, images)``, when given, is called after each iteration (it syncs the device)."""
    check_real(real_x, real_y, num_classes)
    device = real_x.device
    images, labels = init_images(real_x, real_y, ipc, num_classes, init, generator=generator)
    images.requires_grad_(True)
    optimizer = torch.optim.SGD([images], lr=lr_img, momentum=0.5)
    sampler = ClassSampler(real_x, real_y, num_classes, generator)
    for it in range(iterations):
        net = build(model_fn, generator, device)
        net.train()
        net.requires_grad_(False)
        loss = torch.zeros((), device=device)
        for c in range(num_classes):
            real = sampler.get(c, batch_real)
            syn = images[c * ipc:(c + 1) * ipc]
            if dsa:
                params = sample_dsa(1, generator, dsa_strategy)  # siamese: one draw for both
                real, syn = apply_dsa(real, params), apply_dsa(syn, params)
            with torch.no_grad():
                mean_real = embed(net, real).mean(0)
            loss = loss + ((mean_real - embed(net, syn).mean(0)) ** 2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if callback is not None:
            callback(it, float(loss.detach()), images.detach())
    return images.detach(), labels
