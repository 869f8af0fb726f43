"""Stages ``ticket`` and ``maskimp``.

Training points (the examples of every SGD step, the last partial batch of an
epoch counted as it is, or dropped with train.last_batch: drop), as stored:
- a ``ticket`` artifact's metrics: ``points_seen`` is the cumulative points of
  the distilled trunk's levels 0..L (distilled images x epochs summed over the
  levels up to the ticket's level: the cost of finding it) and
  ``train_points_seen`` the ticket's own training on the real data. The results
  table reads them as ``search_points`` and ``points_seen`` (its own training,
  one meaning for every method: raylth.reporting.results).
- ``maskimp``: that level's own training on the real data (as imp levels).
"""

from __future__ import annotations

import torch

from raylth.engine.data import points_seen, seed_for, steps_per_epoch
from raylth.engine.masks import prune, random_like, rewind_state
from raylth.plugins.methods.distilled.specs import MaskImpSpec, TicketSpec
from raylth.specs import ImpLevelSpec, Step
from raylth.stages.context import StageContext, ensure, train_and_store
from raylth.stages.imp import level_start, run_imp_level
from raylth.stages.registry import Stage, network_origin, register_stage
from raylth.store import Artifact


def trunk_points(spec: ImpLevelSpec, ctx: StageContext) -> int:
    """Training points of the trunk's levels 0..spec.level (all stored)."""
    chain = [spec.trunk_root()] + [spec.at_level(level) for level in range(1, spec.level + 1)]
    return sum(int(ctx.store.get(s.id).metrics["points_seen"]) for s in chain)


def run_ticket(spec: TicketSpec, ctx: StageContext) -> Artifact:
    return ensure(ctx, spec, lambda: _compute_ticket(spec, ctx))


def _compute_ticket(spec: TicketSpec, ctx: StageContext) -> Artifact:
    trunk = run_imp_level(spec.trunk, ctx)
    mask = trunk.mask()
    if spec.mask == "random":  # distilled_random: the level's per-layer counts, weights drawn at random
        draw = seed_for(spec.seed, spec.trunk.seeds.init * 1000 + spec.level, "distilled_random")
        mask = random_like(mask, torch.Generator().manual_seed(draw))
    data = ctx.dataset(spec.data)
    model = ctx.model(spec.trunk.model, data, seed=spec.trunk.seeds.init)
    # the distilled level's own start: biases and BatchNorm as its level L-1 trained them on the
    # distilled set when rewind_bn is false (the paper's code), else rewound
    model.load_state_dict(level_start(spec.trunk, ctx, mask, rewind_bn=spec.rewind_bn))
    n, drop = len(data.train_y), spec.train.last_batch == "drop"
    own = points_seen(n, spec.train.batch_size,
                      spec.train.duration.iterations(steps_per_epoch(n, spec.train.batch_size, drop)), drop)
    return train_and_store(ctx, spec, data=spec.data, model=model, train=spec.train, seeds=spec.seeds,
                           mask=mask, extra_metrics={
                               "level": spec.level, "points_seen": trunk_points(spec.trunk, ctx),
                               "train_points_seen": own, "trunk": trunk.id,
                               "trunk_test_acc": trunk.metrics.get("test_acc")})


def run_maskimp(spec: MaskImpSpec, ctx: StageContext) -> Artifact:
    return ensure(ctx, spec, lambda: _compute_maskimp(spec, ctx))


def _compute_maskimp(spec: MaskImpSpec, ctx: StageContext) -> Artifact:
    start = run_ticket(spec.start, ctx)
    previous = start if spec.level == spec.start.level + 1 else run_maskimp(spec.at_level(spec.level - 1), ctx)
    trained = previous.weights("final")
    generator = torch.Generator().manual_seed(seed_for(spec.start.trunk.seeds.init, spec.level, "prune"))
    mask = prune(spec.prune.strategy, trained, previous.mask(), spec.prune.fraction, generator)
    begin = rewind_state(trained, start.weights("init"), mask, spec.prune.rewind_bn)
    data = ctx.dataset(spec.start.data)
    model = ctx.model(spec.start.model, data, seed=spec.start.trunk.seeds.init)
    model.load_state_dict(begin)
    return train_and_store(ctx, spec, data=spec.start.data, model=model, train=spec.start.train,
                           seeds=spec.start.seeds, mask=mask,
                           extra_metrics={"level": spec.level, "start": start.id})


# -- the stages' facts ------------------------------------------------------------------
def _ticket_origin(spec: TicketSpec, origin_of=None) -> dict:
    trunk = spec.trunk
    return network_origin(spec.data, trunk.model, trunk.seeds, trunk.prune.rewind)


def _ticket_points(spec: TicketSpec, points, method: str) -> float:
    """Its distilled trunk's levels (its ``points_seen``); as the start of
    mask_then_imp (a trial that goes on from it) also its own real training."""
    found = points.own(spec.id)
    return found + points.own(spec.id, "train_points_seen") if method == "mask_then_imp" else found


def _maskimp_points(spec: MaskImpSpec, points, method: str) -> float:
    start = spec.start.id
    total = points.own(start) + points.own(start, "train_points_seen")
    return total + sum(points.own(spec.at_level(level).id) for level in range(spec.start.level + 1, spec.level + 1))


register_stage(Stage(
    TicketSpec, run_ticket, trains=True, method_network=True,
    method=lambda spec, method_of: "distilled_random" if spec.mask == "random" else "distilled_imp",
    kept_steps=lambda spec: (Step(0, "it"),),
    recipe=lambda spec, store: (spec.data, spec.trunk.model, spec.train, spec.seeds),
    level=lambda spec: spec.trunk.level, origin=_ticket_origin, loop_points=_ticket_points))
register_stage(Stage(
    MaskImpSpec, run_maskimp, trains=True, method_network=True, method="mask_then_imp",
    kept_steps=lambda spec: (Step(0, "it"),),
    recipe=lambda spec, store: (spec.start.data, spec.start.trunk.model, spec.start.train, spec.start.seeds),
    level=lambda spec: spec.level, origin=lambda spec, origin_of: _ticket_origin(spec.start),
    loop_points=_maskimp_points))
