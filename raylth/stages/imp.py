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
from raylth.stages.context import StageContext, ensure, train_and_store
from raylth.specs.refs import checkpoint_name
from raylth.stages.registry import Stage, network_origin, register_stage
from raylth.stages.train import run_train
from raylth.store import Artifact


def rewind_point(spec: ImpLevelSpec, ctx: StageContext) -> dict[str, torch.Tensor]:
    root = run_train(spec.trunk_root(), ctx)
    return root.weights(checkpoint_name(spec.prune.rewind))


def previous_level(spec: ImpLevelSpec, ctx: StageContext) -> Artifact:
    """Level L-1 of the trunk (level 0: its dense run), whose trained weights level L prunes."""
    return run_train(spec.trunk_root(), ctx) if spec.level == 1 else run_imp_level(spec.at_level(spec.level - 1), ctx)


def level_start(spec: ImpLevelSpec, ctx: StageContext, mask, weights: dict[str, torch.Tensor] | None = None,
                rewind_bn: bool | None = None) -> dict[str, torch.Tensor]:
    """The state a network at level L of the trunk ``spec`` starts from, under
    ``mask``: the kept prunable weights from ``weights`` (default: the trunk's
    rewind point; reinit: a fresh init), pruned ones 0, and every other tensor
    (biases, BatchNorm parameters and running statistics) from ``weights`` when
    ``rewind_bn`` (default: the trunk's prune.rewind_bn), else as level L-1
    trained them. The one rule of IMP levels, tickets, random pruning and reinit."""
    trained = previous_level(spec, ctx).weights("final")
    weights = rewind_point(spec, ctx) if weights is None else weights
    return rewind_state(trained, weights, mask, spec.prune.rewind_bn if rewind_bn is None else rewind_bn)


def run_imp_level(spec: ImpLevelSpec, ctx: StageContext) -> Artifact:
    return ensure(ctx, spec, lambda: _compute_level(spec, ctx))


def _compute_level(spec: ImpLevelSpec, ctx: StageContext) -> Artifact:
    previous = previous_level(spec, ctx)
    if spec.level == 1:
        data = ctx.dataset(spec.data)
        previous_mask = full_mask(ctx.model(spec.model, data, seed=spec.seeds.init), spec.prune.ignore)
    else:
        previous_mask = previous.mask()
    trained = previous.weights("final")
    generator = torch.Generator().manual_seed(seed_for(spec.seeds.init, spec.level, "prune"))
    mask = prune(spec.prune.strategy, trained, previous_mask, spec.prune.fraction, generator)
    start = level_start(spec, ctx, mask)
    data = ctx.dataset(spec.data)
    model = ctx.model(spec.model, data, seed=spec.seeds.init)
    model.load_state_dict(start)
    return train_and_store(ctx, spec, data=spec.data, model=model, train=spec.train,
                           seeds=spec.seeds, mask=mask, start_step=spec.prune.rewind,
                           extra_metrics={"level": spec.level})


register_stage(Stage(
    ImpLevelSpec, run_imp_level, trains=True, method_network=True, method="imp",
    kept_steps=lambda spec: (spec.prune.rewind,),
    recipe=lambda spec, store: (spec.data, spec.model, spec.train, spec.seeds),
    level=lambda spec: spec.level,
    origin=lambda spec, origin_of: network_origin(spec.data, spec.model, spec.seeds, spec.prune.rewind),
    loop_points=lambda spec, points, method: points.trunk(spec, spec.level)))
