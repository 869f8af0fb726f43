"""Specs of stored stages. Each one's ``id`` names its artifact folder.

- ``TrainStageSpec`` (``train_<hash>``): a dense network trained from init.
  It is also level 0 of every IMP trunk with the same data/model/train/seeds.
- ``ImpLevelSpec`` (``imp_<hash>``): level L >= 1 of an IMP trunk. Levels are
  separate artifacts, so extending a trunk from 10 to 15 levels redoes nothing.
Controls and tickets at a level of a trunk are their plugins' own specs
(raylth/plugins/methods: controls, distilled).

What a rewinding stage does with the tensors it does not prune (biases,
BatchNorm parameters and running statistics) is one rule, the trunk's
``prune.rewind_bn``: rewound with the weights (true), or kept as the trunk's
previous level trained them (false), for IMP levels, tickets, random pruning
and reinit alike (``rewind_rule: prune``). Tickets and branches stored before
that rule rewound everything (``rewind_rule: full``, their id default); with
``rewind_bn: true`` both rules are the same computation and keep that id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raylth.errors import SpecError
from raylth.specs.base import Spec, choice
from raylth.specs.groups import DataSpec, ModelSpec, PruneSpec, Seeds, TrainSpec
from raylth.specs.step import Step


@dataclass(frozen=True)
class TrainStageSpec(Spec):
    kind = "train"
    path_prefix = ""
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    seeds: Seeds = field(default_factory=Seeds)
    save_at: tuple[Step, ...] = ()  # extra stored checkpoints (init is always kept)

    def validate(self):
        for step in self.save_at:
            if step.unit == self.train.duration.unit and step.amount > self.train.duration.amount:
                raise SpecError(
                    f"save_at: step {step} is after the end of training ({self.train.duration})")


@dataclass(frozen=True)
class ImpLevelSpec(Spec):
    kind = "imp"
    path_prefix = ""
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    prune: PruneSpec = field(default_factory=PruneSpec)
    seeds: Seeds = field(default_factory=Seeds)
    level: int = 1

    def validate(self):
        if self.level < 1:
            raise SpecError(f"level: {self.level} must be >= 1 (level 0 is the dense train stage)")
        rewind, duration = self.prune.rewind, self.train.duration
        if rewind.unit == duration.unit and rewind.amount >= duration.amount:
            raise SpecError(
                f"prune.rewind: {rewind} is not before the end of training ({duration})")

    def trunk_root(self) -> TrainStageSpec:
        """The dense run this trunk starts from (its level 0)."""
        save_at = () if self.prune.rewind.is_zero() else (self.prune.rewind,)
        return TrainStageSpec(data=self.data, model=self.model, train=self.train,
                              seeds=self.seeds, save_at=save_at)

    def at_level(self, level: int) -> "ImpLevelSpec":
        return self.replace(level=level)


REWIND_RULES = ("prune", "full")


def rewind_rule():
    """The field holding how a ticket or branch treats what it does not prune (module doc)."""
    return choice("prune", REWIND_RULES, id_default="full",
                  doc="prune: as the trunk's prune.rewind_bn; full: everything rewound (stored before)")


def normalize_rewind_rule(spec, trunk: "ImpLevelSpec") -> None:
    """With rewind_bn true both rules compute the same: one id (the one stored before)."""
    if trunk.prune.rewind_bn and spec.rewind_rule != "full":
        object.__setattr__(spec, "rewind_rule", "full")
