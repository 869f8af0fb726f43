"""Gradient matching: DC (Zhao, Mopuri & Bilen, ICLR 2021) with DSA, and
IDC's multi-formation decoding with ``factor`` > 1 (raylth.engine.distill.gm).
IDC's own condensation is the ``idc`` method."""

from __future__ import annotations

from dataclasses import dataclass

from raylth.engine.distill import distill_gm
from raylth.errors import SpecError
from raylth.specs import Spec
from raylth.stages.distill import Distilled, Distiller, register_distiller
from raylth.stages.memory import check_matching


@dataclass(frozen=True)
class GmOptions(Spec):
    kind = "gm_options"
    block = "distill"
    outer_loop: int = 1    # matching steps per fresh network (DC: ipc 10 -> 10)
    inner_loop: int = 1    # epochs on the synthetic set between them (DC: ipc 10 -> 50)
    lr_net: float = 0.01
    batch_real: int = 256  # real images per class per matching step
    factor: int = 1        # IDC multi-formation: factor x factor mosaics

    def validate(self):
        if self.outer_loop < 1 or self.inner_loop < 0:
            raise SpecError(f"distill.outer_loop/inner_loop: {self.outer_loop}/{self.inner_loop}; "
                            "outer_loop must be >= 1 and inner_loop >= 0 (DC: ipc 10 -> 10, 50)")
        if self.lr_net <= 0:
            raise SpecError(f"distill.lr_net: {self.lr_net} must be positive")
        if self.batch_real < 1:
            raise SpecError(f"distill.batch_real: {self.batch_real} must be >= 1")
        if self.factor < 1:
            raise SpecError(f"distill.factor: {self.factor} must be >= 1")


def run(spec, ctx, real, s) -> Distilled:
    return Distilled(*distill_gm(s.x, s.y, s.num_classes, s.model_fn, outer_loop=spec.outer_loop,
                                 inner_loop=spec.inner_loop, lr_net=spec.lr_net, batch_real=spec.batch_real,
                                 factor=spec.factor, **s.common))


register_distiller(Distiller("gm", GmOptions, lr_img=0.1, run=run,
                             fits=lambda spec, real, device: check_matching(spec, real, device, gradients=True),
                             # DC's lr_img 0.1 is for 28x28/32x32 images; 8x8 digits drift at 0.1
                             example={"lr_img": 0.03, "outer_loop": 1, "inner_loop": 1}))
