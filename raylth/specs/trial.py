"""One trial of a sweep: a method applied to one point of the grid."""

from __future__ import annotations

from dataclasses import dataclass, field

from raylth.errors import SpecError
from raylth.specs.analysis import LmcOptions, SharpnessOptions
from raylth.specs.base import Spec
from raylth.specs.distill import DistillEvalSpec, DistillSpec, check_distilled_trial
from raylth.specs.groups import DataSpec, ModelSpec, PruneSpec, Seeds, TrainSpec


@dataclass(frozen=True)
class TrialSpec(Spec):
    kind = "trial"
    path_prefix = ""
    method: str = "imp"           # a name in raylth.stages.METHODS
    levels: int = 10              # IMP levels after the dense level 0
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    prune: PruneSpec = field(default_factory=PruneSpec)
    seeds: Seeds = field(default_factory=Seeds)
    branch_seed: int = 0          # random_prune / reinit draws
    lmc: LmcOptions | None = None  # instability analysis of this trial's networks
    sharpness: SharpnessOptions | None = None  # Hessian of the dense network split by this trial's masks
    distill: DistillSpec | None = None  # distill / distilled_imp / mask_then_imp: the distillation of `data`
    inner: TrainSpec | None = None      # distilled_imp / mask_then_imp: each level's training on the distilled set
    distill_eval: DistillEvalSpec | None = None  # distill: the evaluation protocol (default DistillEvalSpec())
    start_level: int = 0          # mask_then_imp: the distilled-pruning level it starts (and rewinds) from

    def validate(self):
        if self.levels < 0:
            raise SpecError(f"levels: {self.levels} must be >= 0")
        for block, options in (("lmc", self.lmc), ("sharpness", self.sharpness)):
            outside = [level for level in (options.levels if options else ()) if not 0 <= level <= self.levels]
            if outside:
                raise SpecError(f"{block}.levels: {outside[0]} is not a level of this trial (0..{self.levels}); "
                                "pick levels it trains, or raise levels")
        check_distilled_trial(self)
