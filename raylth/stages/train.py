"""Stage ``train``: a dense network from init (level 0 of every IMP trunk)."""

from __future__ import annotations

from raylth.specs import Step, TrainStageSpec
from raylth.stages.context import StageContext, ensure, train_and_store
from raylth.specs.refs import checkpoint_name
from raylth.stages.registry import Stage, network_origin, register_stage
from raylth.store import Artifact


def the_run(spec: TrainStageSpec) -> TrainStageSpec:
    """What a dense run computes apart from the checkpoints it keeps."""
    return spec.replace(save_at=())


def siblings(spec: TrainStageSpec, specs) -> list[TrainStageSpec]:
    """The specs among ``specs`` that are the same dense run as ``spec`` but
    keep other checkpoints (``save_at``): one training makes them all."""
    return [s for s in specs if isinstance(s, TrainStageSpec) and s != spec and the_run(s) == the_run(spec)]


def run_train(spec: TrainStageSpec, ctx: StageContext) -> Artifact:
    """The dense run of ``spec``. The job's other specs that differ from it only
    in ``save_at`` (ctx.planned; a sweep puts every such sibling into one job)
    come from the same training: it keeps every checkpoint any of them names,
    and each sibling's artifact holds init, final and its own checkpoints."""
    def compute() -> Artifact:
        others = [s for s in siblings(spec, ctx.planned) if ctx.store.get(s.id) is None]
        keep = tuple(dict.fromkeys(spec.save_at + tuple(k for s in others for k in s.save_at)))
        data = ctx.dataset(spec.data)
        model = ctx.model(spec.model, data, seed=spec.seeds.init)
        artifact = train_and_store(ctx, spec, data=spec.data, model=model, train=spec.train,
                                   seeds=spec.seeds, keep=keep, extra_metrics={"level": 0})
        if ctx.dist.is_main:
            for sibling in others:
                _store_sibling(ctx, sibling, artifact)
        return artifact

    return ensure(ctx, spec, compute)


def _store_sibling(ctx: StageContext, sibling: TrainStageSpec, trained: Artifact) -> None:
    with ctx.store.lock_if_free(sibling.id) as free:
        if not free or ctx.store.get(sibling.id) is not None:
            return  # computed, or being computed, elsewhere
        partial = ctx.store.partial(sibling.id)
        for name in ["init", "final"] + [checkpoint_name(step) for step in sibling.save_at]:
            partial.save(f"weights/{name}.pt", trained.weights(name))
        ctx.store.finish(sibling, partial, dict(trained.metrics) | {"trained_as": trained.id})


register_stage(Stage(
    TrainStageSpec, run_train, trains=True, method_network=True,
    sibling_key=the_run, kept_steps=lambda spec: (Step(0, "it"),) + spec.save_at,
    recipe=lambda spec, store: (spec.data, spec.model, spec.train, spec.seeds),
    origin=lambda spec, origin_of: network_origin(spec.data, spec.model, spec.seeds),
    loop_points=lambda spec, points, method: points.own(spec.id)))
