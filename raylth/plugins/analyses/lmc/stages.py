"""Stages ``child`` and ``lmc``: instability to SGD noise (Frankle et al. 2020).

A child is the parent at step k trained to the end under its own data order
and/or augmentation draws. The analysis interpolates every pair of children
on an alpha grid and measures the error barrier between them.
"""

from __future__ import annotations

import itertools

import numpy as np

from raylth.engine.interpolate import alpha_grid, evaluate_path, instability, loss_barrier
from raylth.errors import SpecError
from raylth.plugins.analyses.landscape import LandscapeSpec
from raylth.plugins.analyses.lmc.specs import ChildSpec, LmcOptions, LmcSpec
from raylth.specs import Spec, TrialSpec
from raylth.specs.refs import checkpoint_name, step_key
from raylth.stages.analyses import Analysis, register_analysis, selected
from raylth.stages.context import StageContext, ensure, train_and_store
from raylth.stages.networks import child_seeds, load_network
from raylth.stages.registry import Stage, kept_steps, level_of, register_stage
from raylth.store import Artifact


def run_child(spec: ChildSpec, ctx: StageContext) -> Artifact:
    parent = load_network(ctx.store, spec.parent)
    start = parent.at_step(spec.spawn)  # fails clearly before anything is written

    def compute() -> Artifact:
        data = ctx.dataset(parent.data)
        model = ctx.model(parent.model, data, seed=parent.seeds.init)
        model.load_state_dict(start)
        return train_and_store(ctx, spec, data=parent.data, model=model, train=parent.train,
                               seeds=child_seeds(parent.seeds, spec.noise, spec.index),
                               mask=parent.mask(), start_step=spec.spawn,
                               extra_metrics={"level": parent.level})

    return ensure(ctx, spec, compute)


def run_lmc(spec: LmcSpec, ctx: StageContext) -> Artifact:
    parent = load_network(ctx.store, spec.parent)
    parent.at_step(spec.spawn)
    return ensure(ctx, spec, lambda: _compute_lmc(spec, parent, ctx))


def _compute_lmc(spec: LmcSpec, parent, ctx: StageContext) -> Artifact:
    children = [run_child(spec.child(i), ctx) for i in range(spec.children)]
    data = ctx.dataset(parent.data)
    model = ctx.evaluation_model(parent.model, data, seed=parent.seeds.init)
    alphas = alpha_grid(spec.alphas)
    weights = [child.weights("final") for child in children]
    pairs = []
    for i, j in itertools.combinations(range(len(children)), 2):
        path = evaluate_path(model, weights[i], weights[j], data, alphas, bn=spec.bn,
                             train_limit=spec.train_eval, fast=ctx.fast_path)
        pairs.append({"children": [i, j], **path,
                      "instability_test": instability(path["test_err"]),
                      "instability_train": instability(path["train_err"]),
                      "loss_barrier": loss_barrier(path["alpha"], path["test_loss"])})
    summary = {}
    for key in ("instability_test", "instability_train", "loss_barrier"):
        values = np.array([p[key] for p in pairs])
        summary[key] = float(values.mean())
        summary[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    child_accs = [c.metrics["test_acc"] for c in children]
    metrics = {**summary, "stable": summary["instability_test"] < spec.threshold,
               "level": parent.level, "sparsity": parent.sparsity, "parent": parent.id,
               "spawn_iterations": spec.spawn.iterations(children[0].metrics["steps_per_epoch"]),
               "test_acc": float(np.mean(child_accs)), "children_test_acc": child_accs,
               "children": [c.id for c in children], "pairs": pairs}
    artifact = ctx.store.finish(spec, ctx.store.partial(spec.id), metrics)
    if ctx.report:
        ctx.report({k: metrics[k] for k in ("level", "sparsity", "instability_test", "stable")})
    return artifact


def _child_recipe(spec: ChildSpec, store):
    parent = load_network(store, spec.parent)
    return parent.data, parent.model, parent.train, child_seeds(parent.seeds, spec.noise, spec.index)


def spawned_origin(spec, origin_of) -> dict:
    return origin_of(spec.parent) | {"rewind": str(spec.spawn), "noise": spec.noise}


def parents_method(spec, method_of) -> str:
    return method_of(spec.parent) or spec.kind


register_stage(Stage(ChildSpec, run_child, trains=True, recipe=_child_recipe, method=parents_method,
                     origin=spawned_origin))
register_stage(Stage(LmcSpec, run_lmc, method=parents_method, origin=spawned_origin))


def lmc_jobs(trial: TrialSpec, options: LmcOptions, networks: list[Spec]):
    """For each selected network and each spawn step k it keeps weights at
    (``spawn``, default the trial's rewind point): one job per child (they
    train in parallel), then one job for their interpolation (and the
    landscape through them). A listed k no selected network keeps is one line."""
    jobs, used = [], set()
    spawns = options.spawn or (trial.prune.rewind,)
    for network in networks:
        level = level_of(network)
        if not selected(level, options.levels, networks):
            continue
        kept = {step_key(s) for s in kept_steps(network)}
        for spawn in spawns:
            if step_key(spawn) not in kept:
                continue
            used.add(step_key(spawn))
            lmc = LmcSpec.of(network.id, spawn, options)
            at = f"level={level}" + (f",k={spawn}" if options.spawn else "")
            jobs += [(f"{at},child={i}", (lmc.child(i),)) for i in range(options.children)]
            analyses = [lmc]
            if options.landscape:
                analyses.append(LandscapeSpec(networks=(f"{lmc.child(0).id}:final", f"{lmc.child(1).id}:final",
                                                        f"{network.id}:{checkpoint_name(spawn)}")))
            jobs.append((f"{at},lmc", tuple(analyses)))
    missing = [str(s) for s in options.spawn if step_key(s) not in used]
    if missing and any(selected(level_of(n), options.levels, networks) for n in networks):
        raise SpecError(f"lmc.spawn: no network of method {trial.method} keeps weights at {missing[0]} (a dense "
                        "run keeps init and its prune.rewind, a level its rewind point, a ticket init); list "
                        "steps its networks keep, e.g. in per_method")
    return jobs


register_analysis(Analysis(LmcOptions, jobs=lmc_jobs,
                           columns=("instability_test", "instability_train", "loss_barrier", "stable"), order=1))
