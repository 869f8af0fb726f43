"""Stage ``imp``: one level of iterative magnitude pruning with rewinding.

Level L prunes the final weights of level L-1 (level 0 is the dense train
stage), rewinds the survivors to their values at ``prune.rewind`` and trains
from that step to the end of the schedule.
"""

from __future__ import annotations

import torch

from raylth.engine.data import seed_for
from raylth.engine.masks import full_mask, prune, rewind_state
from raylth.specs import ImpLevelSpec
from raylth.stages.context import StageContext, checkpoint_name, ensure, train_and_store
from raylth.stages.registry import Stage, network_origin, register_stage
from raylth.stages.train import run_train
from raylth.store import Artifact


def rewind_point(spec: ImpLevelSpec, ctx: StageContext) -> dict[str, torch.Tensor]:
    root = run_train(spec.trunk_root(), ctx)
    return root.weights(checkpoint_name(spec.prune.rewind))


def run_imp_level(spec: ImpLevelSpec, ctx: StageContext) -> Artifact:
    return ensure(ctx, spec, lambda: _compute_level(spec, ctx))


def _compute_level(spec: ImpLevelSpec, ctx: StageContext) -> Artifact:
    if spec.level == 1:
        previous = run_train(spec.trunk_root(), ctx)
        data = ctx.dataset(spec.data)
        previous_mask = full_mask(ctx.model(spec.model, data, seed=spec.seeds.init), spec.prune.ignore)
    else:
        previous = run_imp_level(spec.at_level(spec.level - 1), ctx)
        previous_mask = previous.mask()
    trained = previous.weights("final")
    generator = torch.Generator().manual_seed(seed_for(spec.seeds.init, spec.level, "prune"))
    mask = prune(spec.prune.strategy, trained, previous_mask, spec.prune.fraction, generator)
    start = rewind_state(trained, rewind_point(spec, ctx), mask, spec.prune.rewind_bn)
    data = ctx.dataset(spec.data)
    model = ctx.model(spec.model, data, seed=spec.seeds.init)
    model.load_state_dict(start)
    return train_and_store(ctx, spec, data=spec.data, model=model, train=spec.train,
                           seeds=spec.seeds, mask=mask, start_step=spec.prune.rewind,
                           extra_metrics={"level": spec.level})


register_stage(Stage(
    ImpLevelSpec, run_imp_level, trains=True, method_network=True, method="imp",
    recipe=lambda spec, store: (spec.data, spec.model, spec.train, spec.seeds),
    level=lambda spec: spec.level,
    origin=lambda spec, origin_of: network_origin(spec.data, spec.model, spec.seeds, spec.prune.rewind),
    loop_points=lambda spec, points, method: points.trunk(spec, spec.level)))
