"""Stage ``train``: a dense network from init (level 0 of every IMP trunk)."""

from __future__ import annotations

from raylth.specs import TrainStageSpec
from raylth.stages.context import StageContext, ensure, train_and_store
from raylth.stages.registry import Stage, network_origin, register_stage
from raylth.store import Artifact


def run_train(spec: TrainStageSpec, ctx: StageContext) -> Artifact:
    def compute() -> Artifact:
        data = ctx.dataset(spec.data)
        model = ctx.model(spec.model, data, seed=spec.seeds.init)
        return train_and_store(ctx, spec, data=spec.data, model=model, train=spec.train,
                               seeds=spec.seeds, keep=spec.save_at, extra_metrics={"level": 0})

    return ensure(ctx, spec, compute)


register_stage(Stage(
    TrainStageSpec, run_train, trains=True, method_network=True, method="dense",
    recipe=lambda spec, store: (spec.data, spec.model, spec.train, spec.seeds),
    origin=lambda spec, origin_of: network_origin(spec.data, spec.model, spec.seeds),
    loop_points=lambda spec, points, method: points.own(spec.id)))
