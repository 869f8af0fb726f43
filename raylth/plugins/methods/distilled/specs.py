"""Specs of distilled pruning's stages.

- ``TicketSpec`` (``ticket_<hash>``): the mask of one level of a (distilled)
  IMP trunk and its rewind-point weights, trained on (real) data with its own
  TrainSpec: a distilled-pruning ticket evaluated on the full data; with
  ``mask: random`` the control of distilled_random.
- ``MaskImpSpec`` (``maskimp_<hash>``): ordinary IMP on real data started
  from a ticket (its mask and weights are the start and the rewind point),
  continued to higher levels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raylth.errors import SpecError
from raylth.specs import DataSpec, ImpLevelSpec, ModelSpec, PruneSpec, Seeds, Spec, Step, TrainSpec
from raylth.specs.base import choice
from raylth.specs.stages import normalize_rewind_rule, rewind_rule


@dataclass(frozen=True)
class TicketSpec(Spec):
    kind = "ticket"
    path_prefix = ""
    trunk: ImpLevelSpec = field(default_factory=ImpLevelSpec)  # its mask and rewind point
    data: DataSpec = field(default_factory=DataSpec)            # trained on (the real data)
    train: TrainSpec = field(default_factory=TrainSpec)
    seeds: Seeds = field(default_factory=Seeds)                 # order/augment (init: the trunk's)
    # biases and BatchNorm: as the trunk's prune.rewind_bn (false: as its level L-1 trained them on
    # the distilled set, as the paper's code); tickets stored before rewound them (raylth.specs.stages)
    rewind_rule: str = rewind_rule()
    # trunk: the level's mask (a distilled-pruning ticket); random: a random mask with its
    # per-layer counts drawn from ``seed``, started alike (the control of distilled_random)
    mask: str = choice("trunk", ("trunk", "random"))
    seed: int = 0

    def validate(self):
        normalize_rewind_rule(self, self.trunk)
        if self.mask == "trunk" and self.seed != 0:  # it draws nothing: one id
            object.__setattr__(self, "seed", 0)

    @property
    def rewind_bn(self) -> bool:
        return self.rewind_rule == "full" or self.trunk.prune.rewind_bn

    @property
    def level(self) -> int:
        return self.trunk.level

    @property
    def model(self) -> ModelSpec:
        return self.trunk.model


@dataclass(frozen=True)
class MaskImpSpec(Spec):
    kind = "maskimp"
    path_prefix = ""
    start: TicketSpec = field(default_factory=TicketSpec)  # mask and weights: start and rewind point
    prune: PruneSpec = field(default_factory=PruneSpec)    # fraction, strategy (rewind: the start)
    level: int = 2                                         # > start.level

    def validate(self):
        if not self.prune.rewind.is_zero():  # the start ticket is the rewind point
            object.__setattr__(self, "prune", self.prune.replace(rewind=Step(0, "it")))
        if self.level <= self.start.level:
            raise SpecError(f"level: {self.level} must be above the start ticket's level {self.start.level}")

    def at_level(self, level: int) -> "MaskImpSpec":
        return self.replace(level=level)
