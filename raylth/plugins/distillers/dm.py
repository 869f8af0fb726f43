"""Distribution matching (DM; Zhao & Bilen, WACV 2023): the images of each
class move so that a fresh random network embeds them like a real batch of
the class (raylth.engine.distill.dm)."""

from __future__ import annotations

from dataclasses import dataclass

from raylth.engine.distill import distill_dm
from raylth.errors import SpecError
from raylth.specs import Spec
from raylth.stages.distill import Distilled, Distiller, register_distiller
from raylth.stages.memory import check_matching


@dataclass(frozen=True)
class DmOptions(Spec):
    kind = "dm_options"
    block = "distill"
    batch_real: int = 256  # real images per class per matching step

    def validate(self):
        if self.batch_real < 1:
            raise SpecError(f"distill.batch_real: {self.batch_real} must be >= 1")


def run(spec, ctx, real, s) -> Distilled:
    return Distilled(*distill_dm(s.x, s.y, s.num_classes, s.model_fn, batch_real=spec.batch_real, **s.common))


register_distiller(Distiller("dm", DmOptions, lr_img=1.0, run=run, fits=check_matching, example={}))
