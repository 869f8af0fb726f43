"""The controls of an IMP ticket: methods ``random_prune`` and ``reinit``, a
branch (``branch_<hash>``) off one level of the IMP trunk each.

- ``random_prune``: a random mask with the same number of weights kept in
  every layer as the IMP mask, trained from the same rewind point.
- ``reinit``: the IMP mask on a fresh initialisation, trained from step 0.

Both start as the IMP level they control for does (``level_start``): biases
and BatchNorm rewound with the weights, or, with ``prune.rewind_bn: false``,
as the trunk's level L-1 trained them; only the mask (random_prune) or the
weights' draw (reinit) differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from raylth.engine.data import seed_for
from raylth.engine.masks import random_like
from raylth.specs import ImpLevelSpec, Spec, Step
from raylth.specs.base import choice
from raylth.specs.stages import normalize_rewind_rule, rewind_rule
from raylth.stages.context import StageContext, ensure, train_and_store
from raylth.stages.imp import level_start, run_imp_level
from raylth.stages.methods import Method, register_method, trunk_level
from raylth.stages.registry import Stage, network_origin, register_stage
from raylth.store import Artifact

KINDS = ("random_prune", "reinit")


@dataclass(frozen=True)
class BranchSpec(Spec):
    kind = "branch"
    path_prefix = ""
    trunk: ImpLevelSpec = field(default_factory=ImpLevelSpec)
    method: str = choice("random_prune", KINDS)
    seed: int = 0  # draws the random mask (random_prune) or the fresh init (reinit)
    rewind_rule: str = rewind_rule()

    def validate(self):
        normalize_rewind_rule(self, self.trunk)

    @property
    def rewind_bn(self) -> bool:
        """Whether biases and BatchNorm start from the rewind point (else as trained by level L-1)."""
        return self.rewind_rule == "full" or self.trunk.prune.rewind_bn

    @property
    def start(self) -> Step:
        """The step its training starts at: the rewind point (random_prune) or init (reinit)."""
        return self.trunk.prune.rewind if self.method == "random_prune" else Step(0, "it")


def run_branch(spec: BranchSpec, ctx: StageContext) -> Artifact:
    return ensure(ctx, spec, lambda: _compute_branch(spec, ctx))


def _compute_branch(spec: BranchSpec, ctx: StageContext) -> Artifact:
    trunk = spec.trunk
    ticket = run_imp_level(trunk, ctx)
    data = ctx.dataset(trunk.data)
    draw = seed_for(spec.seed, trunk.seeds.init * 1000 + trunk.level, spec.method)
    model = ctx.model(trunk.model, data, seed=trunk.seeds.init)
    if spec.method == "random_prune":
        mask = random_like(ticket.mask(), torch.Generator().manual_seed(draw))
        start = level_start(trunk, ctx, mask, rewind_bn=spec.rewind_bn)
    else:
        mask = ticket.mask()
        fresh = ctx.model(trunk.model, data, seed=draw).state_dict()
        start = level_start(trunk, ctx, mask, fresh, rewind_bn=spec.rewind_bn)
    model.load_state_dict(start)
    return train_and_store(ctx, spec, data=trunk.data, model=model, train=trunk.train,
                           seeds=trunk.seeds, mask=mask, start_step=spec.start,
                           extra_metrics={"level": trunk.level})


register_stage(Stage(
    BranchSpec, run_branch, trains=True, method_network=True, kept_steps=lambda spec: (spec.start,),
    method=lambda spec, method_of: spec.method,
    recipe=lambda spec, store: (spec.trunk.data, spec.trunk.model, spec.trunk.train, spec.trunk.seeds),
    level=lambda spec: spec.trunk.level,
    origin=lambda spec, origin_of: network_origin(spec.trunk.data, spec.trunk.model, spec.trunk.seeds,
                                                  spec.trunk.prune.rewind),
    # the trunk's levels 0..L-1 gave its mask (or per-layer counts); then its own training
    loop_points=lambda spec, points, method: points.trunk(spec.trunk, spec.trunk.level - 1) + points.own(spec.id)))


def _branches(name: str):
    def artifacts(trial) -> list[Spec]:
        return [BranchSpec(trunk=trunk_level(trial, level), method=name, seed=trial.branch_seed)
                for level in range(1, trial.levels + 1)]
    return artifacts


for _order, _name in enumerate(KINDS, start=2):
    register_method(Method(_name, artifacts=_branches(_name), needs_levels=True, example={"levels": 1}, order=_order))
