"""Stage ``sharpness``: Hessian diagonal (Hutchinson) and top eigenvalue of a
stored network, with the diagonal's mass split by the masks of tickets.

The paper's comparison: for one dense network, how much Hessian-diagonal
mass falls on the weights that distilled-data IMP prunes versus those that
ordinary IMP prunes.
"""

from __future__ import annotations

import time

from raylth.engine.data import fixed_batches
from raylth.engine.fastpath import precision
from raylth.engine.sharpness import exact_diagonal, hutchinson, mass_by_mask, signed_by_mask, top_eigenvalue
from raylth.errors import StoreError
from raylth.plugins.analyses.sharpness.specs import HessianSpec, SharpnessOptions, SharpnessSpec
from raylth.specs import Spec, TrialSpec
from raylth.specs.refs import checkpoint_name, split_ref
from raylth.stages.analyses import Analysis, register_analysis, selected
from raylth.stages.context import StageContext, ensure
from raylth.stages.methods import trunk_level
from raylth.stages.networks import load_network
from raylth.stages.registry import Stage, kept_steps, level_of, method_network_kinds, register_stage
from raylth.store import Artifact


@precision("float32")  # second derivatives: no TF32 (nor bf16)
def run_hessian(spec: HessianSpec, ctx: StageContext) -> Artifact:
    network_id, checkpoint = split_ref(spec.network)
    network = load_network(ctx.store, network_id)
    weights = network.weights(checkpoint)

    def compute() -> Artifact:
        started = time.time()
        data = ctx.dataset(network.data)
        model = ctx.model(network.model, data, seed=network.seeds.init).to(ctx.device)
        model.load_state_dict(weights)
        batches = fixed_batches(data, spec.batches, spec.batch_size, spec.seed)
        mask = network.mask() if spec.weights == "existing" else None  # a sparse network: its weights only
        if spec.exact:
            diag, groups = exact_diagonal(model, batches, bn=spec.bn, mask=mask), None
        else:
            diag, groups = hutchinson(model, batches, spec.probes, spec.seed, bn=spec.bn, mask=mask)
        top = top_eigenvalue(model, batches, spec.iterations, spec.seed, bn=spec.bn, mask=mask)
        partial = ctx.store.partial(spec.id)
        partial.save("hessian_diagonal.pt", diag)
        if groups is not None:
            partial.save("probe_groups.pt", groups)
        metrics = {"top_eigenvalue": top, "network": network.id, "checkpoint": checkpoint,
                   "level": network.level, "sparsity": network.sparsity,
                   "trace_estimate": float(sum(v.double().sum() for v in diag.values())),
                   "groups": 0 if groups is None else len(next(iter(groups.values()))),
                   "wall_s": time.time() - started, "device": str(ctx.device)}
        return ctx.store.finish(spec, partial, metrics)

    return ensure(ctx, spec, compute)


def run_sharpness(spec: SharpnessSpec, ctx: StageContext) -> Artifact:
    network_id, checkpoint = split_ref(spec.network)
    network = load_network(ctx.store, network_id)
    network.weights(checkpoint)  # fails clearly before anything is computed
    masks = {ref: load_network(ctx.store, ref).mask() for ref in spec.masks}
    unmasked = [ref for ref, mask in masks.items() if mask is None]
    if unmasked:
        raise StoreError(f"masks: {unmasked[0]} is a dense network and has no mask to split by")

    def compute() -> Artifact:
        hessian = run_hessian(spec.hessian(), ctx)
        diag = hessian.load("hessian_diagonal.pt")
        groups = hessian.load("probe_groups.pt") if hessian.has_file("probe_groups.pt") else None
        m = hessian.metrics
        metrics = {"top_eigenvalue": m["top_eigenvalue"], "network": network.id, "checkpoint": checkpoint,
                   "level": network.level, "sparsity": network.sparsity, "trace_estimate": m["trace_estimate"],
                   "hessian": hessian.id, "bn": spec.bn, "exact": spec.exact,
                   "weights": _existing(diag, masks.get(network.id)) if spec.weights == "existing" or not masks
                   else None,
                   "masks": {ref: mass_by_mask(diag, mask) for ref, mask in masks.items()},
                   "signed": {ref: signed_by_mask(diag, groups, mask) for ref, mask in masks.items()}}
        return ctx.store.finish(spec, ctx.store.partial(spec.id), metrics)

    return ensure(ctx, spec, compute)


def _existing(diag: dict, mask: dict | None) -> int:
    """How many weights the diagonal is over: those the mask keeps (all without one)."""
    return sum(int(mask[n].sum()) if mask is not None and n in mask else v.numel() for n, v in diag.items())


def sharpness_jobs(trial: TrialSpec, options: SharpnessOptions, networks: list[Spec]):
    """``network: dense``: the Hessian of the trial's dense network (at its
    rewind point, init or final), one job with that network (trained there
    unless the sweep trains it elsewhere: then that job also makes it, see
    raylth.sweep.jobs), not a results row; then one job per selected level
    splitting it by that level's mask. At init or final the dense network is
    the run without extra checkpoints, the same for every rewind point: trials
    of other methods or rewind points share one Hessian.
    ``network: own``: each selected network's own Hessian (final: trained; init:
    its start), over the weights it has, split by its own mask."""
    if options.network == "own":
        return _own_jobs(trial, options, networks)
    options = options.replace(weights="all")  # the dense network has every weight: the id it always had
    dense = trunk_level(trial).trunk_root()
    checkpoint = checkpoint_name(trial.prune.rewind) if options.checkpoint == "rewind" else options.checkpoint
    if checkpoint in ("init", "final"):
        dense = dense.replace(save_at=())
    jobs = []
    for network in networks:
        level = level_of(network)
        # a dense network has no mask to split by: only a trial that is its one network shows it
        if network.kind not in method_network_kinds() or (level == 0 and len(networks) > 1):
            continue
        if not selected(level, options.levels, networks):
            continue
        masks = () if level == 0 else (network.id,)  # a dense network has no mask
        jobs.append((f"level={level},sharpness", (options.of(f"{dense.id}:{checkpoint}", masks),)))
    if jobs:  # planned once per distinct network in a sweep (raylth.sweep.jobs drops repeats)
        jobs.insert(0, ("hessian", (dense, jobs[0][1][0].hessian()), False))
    return jobs


def _own_jobs(trial: TrialSpec, options: SharpnessOptions, networks: list[Spec]):
    jobs = []
    for network in networks:
        level = level_of(network)
        if network.kind not in method_network_kinds() or not selected(level, options.levels, networks):
            continue
        checkpoint = "final" if options.checkpoint == "final" else checkpoint_name(kept_steps(network)[0])
        sparse = level > 0
        spec = options.replace(weights=options.weights if sparse else "all").of(
            f"{network.id}:{checkpoint}", (network.id,) if sparse else ())
        jobs.append((f"level={level},sharpness", (spec.hessian(), spec)))
    return jobs


register_analysis(Analysis(SharpnessOptions, jobs=sharpness_jobs, order=0))
register_stage(Stage(HessianSpec, run_hessian, results_row=False,
                     origin=lambda spec, origin_of: origin_of(split_ref(spec.network)[0])))
register_stage(Stage(SharpnessSpec, run_sharpness,
                     origin=lambda spec, origin_of: origin_of(split_ref(spec.network)[0])))
