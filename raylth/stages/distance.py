"""Stage ``distance`` and the trial block ``distance:``: how far apart two
children of one parent end up, layer by layer (||w_0 - w_1|| / ||w_0|| over
each prunable layer's weights, pruned weights included: they are zero in both).
"""

from __future__ import annotations

import torch

from raylth.engine.models import prunable_weight_names
from raylth.specs import Spec, TrialSpec
from raylth.specs.analysis import DistanceOptions, DistanceSpec
from raylth.stages.analyses import Analysis, register_analysis, selected
from raylth.stages.context import StageContext, ensure
from raylth.stages.lmc import parents_method, run_child, spawned_origin
from raylth.stages.networks import load_network
from raylth.stages.registry import Stage, level_of, register_stage
from raylth.store import Artifact


def layer_distances(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], names: list[str]) -> dict[str, float]:
    out = {}
    for name in names:
        wa, wb = a[name].double(), b[name].double()
        out[name] = float((wa - wb).norm() / wa.norm().clamp_min(1e-12))
    return out


def run_distance(spec: DistanceSpec, ctx: StageContext) -> Artifact:
    parent = load_network(ctx.store, spec.parent)
    parent.at_step(spec.spawn)  # fails clearly before anything is written

    def compute() -> Artifact:
        a, b = (run_child(spec.child(i), ctx).weights("final") for i in (0, 1))
        data = ctx.dataset(parent.data)
        names = prunable_weight_names(ctx.model(parent.model, data, seed=0))
        layers = layer_distances(a, b, names)
        total = layer_distances({"all": torch.cat([a[n].flatten() for n in names])},
                                {"all": torch.cat([b[n].flatten() for n in names])}, ["all"])["all"]
        metrics = {"layers": layers, "distance": total, "level": parent.level, "sparsity": parent.sparsity,
                   "children": [spec.child(i).id for i in (0, 1)]}
        return ctx.store.finish(spec, ctx.store.partial(spec.id), metrics)

    return ensure(ctx, spec, compute)


def distance_jobs(trial: TrialSpec, options: DistanceOptions, networks: list[Spec]):
    """One job per selected network: its two children (made by the lmc block's
    jobs when the trial has one, else by this job) and their distance."""
    jobs = []
    for network in networks:
        level = level_of(network)
        if selected(level, options.levels, trial.method):
            spec = DistanceSpec(parent=network.id, spawn=trial.prune.rewind, noise=options.noise)
            jobs.append((f"level={level},distance", (spec,)))
    return jobs


register_stage(Stage(DistanceSpec, run_distance, method=parents_method, origin=spawned_origin))
register_analysis(Analysis(DistanceOptions, jobs=distance_jobs))
