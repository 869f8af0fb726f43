"""Stage ``landscape``: loss and error on the plane through three stored networks."""

from __future__ import annotations

from raylth.engine.landscape import evaluate_plane, plot_plane
from raylth.specs import LandscapeSpec
from raylth.stages.context import StageContext, ensure
from raylth.stages.networks import load_network
from raylth.specs.refs import split_ref
from raylth.stages.registry import Stage, register_stage
from raylth.store import Artifact


def run_landscape(spec: LandscapeSpec, ctx: StageContext) -> Artifact:
    refs = [split_ref(ref) for ref in spec.networks]
    networks = [load_network(ctx.store, artifact_id) for artifact_id, _ in refs]
    weights = [net.weights(checkpoint) for net, (_, checkpoint) in zip(networks, refs)]

    def compute() -> Artifact:
        data = ctx.dataset(networks[0].data)
        model = ctx.evaluation_model(networks[0].model, data, seed=0)
        result = evaluate_plane(model, *weights, data, resolution=spec.resolution,
                                margin=spec.margin, split=spec.split, limit=spec.limit,
                                fast=ctx.fast_path)
        partial = ctx.store.partial(spec.id)
        labels = [f"{a}:{c}" for a, c in refs]
        short = [f"{a.split('_')[0]} {a.split('_')[1][:4]}:{c}" for a, c in refs]
        plot_plane(result, partial.path / "landscape.png",
                   title=f"{spec.split} error, level {networks[0].level}", labels=short)
        metrics = {**result, "networks": labels, "level": networks[0].level,
                   "sparsity": networks[0].sparsity}
        return ctx.store.finish(spec, partial, metrics)

    return ensure(ctx, spec, compute)


register_stage(Stage(LandscapeSpec, run_landscape,
                     origin=lambda spec, origin_of: origin_of(split_ref(spec.networks[0])[0])))
