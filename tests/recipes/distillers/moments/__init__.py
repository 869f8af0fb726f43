"""Distillation method ``moments``: the synthetic images of each class move
so that their per-channel mean and standard deviation match a real batch of
the class (no network: a deliberately small example). The worked example of
CONTRIBUTING.md, "A distillation method": this folder is the whole method."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raylth.engine.distill.init import init_images
from raylth.errors import SpecError
from raylth.specs import Spec
from raylth.stages.distill import Distilled, Distiller, register_distiller


@dataclass(frozen=True)
class MomentsOptions(Spec):
    kind = "moments_options"
    block = "distill"
    batch_real: int = 128  # real images per class per step

    def validate(self):
        if self.batch_real < 1:
            raise SpecError(f"distill.batch_real: {self.batch_real} must be >= 1")


def channel_moments(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))])


def run(spec, ctx, real, s) -> Distilled:
    images, labels = init_images(s.x, s.y, s.common["ipc"], s.num_classes, s.common["init"],
                                 generator=s.common["generator"])
    images.requires_grad_(True)
    optimizer = torch.optim.SGD([images], lr=s.common["lr_img"], momentum=0.5)
    for it in range(s.common["iterations"]):
        loss = images.new_zeros(())
        for c in range(s.num_classes):
            pool = s.x[s.y == c]
            pick = torch.randint(len(pool), (spec.batch_real,), generator=s.common["generator"],
                                 device=pool.device)
            syn = images[labels == c]
            loss = loss + ((channel_moments(pool[pick]) - channel_moments(syn)) ** 2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        s.common["callback"](it, float(loss.detach()), images.detach())
    return Distilled(images.detach(), labels)


register_distiller(Distiller("moments", MomentsOptions, lr_img=0.1, run=run, example={"lr_img": 0.05}))
