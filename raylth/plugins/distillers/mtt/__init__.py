"""Matching training trajectories (MTT; Cazenavette et al., CVPR 2022): the
synthetic images train a student from an expert's epoch s for ``syn_steps``
steps, and move so that it lands where the expert was ``expert_epochs``
later (raylth.engine.distill.mtt). The experts are a stage of their own
(``experts_<hash>``, experts.py), shared by every MTT distillation of the
same data, network and options."""

from __future__ import annotations

from dataclasses import dataclass, field

from raylth.engine.distill import distill_mtt
from raylth.errors import SpecError
from raylth.plugins.distillers.mtt.experts import ExpertOptions, experts_spec, load_experts, run_experts
from raylth.plugins.distillers.mtt.memory import mtt_low_memory
from raylth.specs import Spec
from raylth.stages.distill import Distilled, Distiller, register_distiller


@dataclass(frozen=True)
class MttOptions(Spec):
    kind = "mtt_options"
    block = "distill"
    syn_steps: int = 20           # student steps per iteration
    expert_epochs: int = 2        # how far along the expert's trajectory the student aims
    max_start_epoch: int = 20     # the expert epoch s is drawn from [0, max_start_epoch)
    lr_lr: float = 1e-5           # the learned student lr's own lr
    lr_init: float = 0.01         # the student lr's start
    batch_syn: int | None = None  # synthetic images per student step (None: all)
    low_memory: bool = False      # checkpoint each student step (memory for time)
    experts: ExpertOptions = field(default_factory=ExpertOptions)

    def validate(self):
        w = "distill"
        for name in ("syn_steps", "expert_epochs", "max_start_epoch"):
            if getattr(self, name) < 1:
                raise SpecError(f"{w}.{name}: {getattr(self, name)} must be >= 1")
        if self.lr_lr <= 0 or self.lr_init <= 0:
            raise SpecError(f"{w}.lr_lr/lr_init: must be positive")
        if self.batch_syn is not None and self.batch_syn < 1:
            raise SpecError(f"{w}.batch_syn: {self.batch_syn} must be >= 1 (or left out)")
        needed = self.max_start_epoch - 1 + self.expert_epochs
        if self.experts.epochs < needed:
            raise SpecError(
                f"{w}.experts.epochs: {self.experts.epochs} is too short; start epochs up to "
                f"max_start_epoch - 1 = {self.max_start_epoch - 1} plus expert_epochs "
                f"{self.expert_epochs} need {needed} epochs of expert trajectory")


def run(spec, ctx, real, s) -> Distilled:
    experts_artifact = run_experts(experts_spec(spec), ctx)
    images, labels, lr = distill_mtt(
        s.x, s.y, s.num_classes, load_experts(experts_artifact), s.model_fn, syn_steps=spec.syn_steps,
        expert_epochs=spec.expert_epochs, max_start_epoch=spec.max_start_epoch, lr_lr=spec.lr_lr,
        lr_init=spec.lr_init, batch_syn=spec.batch_syn, low_memory=s.low_memory, return_lr=True, **s.common)
    return Distilled(images, labels, lr=lr, extra={"experts": experts_artifact.id,
                                                   "low_memory_auto": s.low_memory and not spec.low_memory})


register_distiller(Distiller("mtt", MttOptions, lr_img=100.0, lr_img_zca=1000.0, run=run, fits=mtt_low_memory,
                             example={"syn_steps": 10, "expert_epochs": 2, "max_start_epoch": 3,
                                      "experts": {"n": 2, "epochs": 10}}))
