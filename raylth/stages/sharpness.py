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
from raylth.engine.sharpness import hessian_diagonal, mass_by_mask, top_eigenvalue
from raylth.errors import StoreError
from raylth.errors import SpecError
from raylth.specs import SharpnessOptions, SharpnessSpec, Spec, TrialSpec
from raylth.stages.analyses import Analysis, register_analysis, selected
from raylth.stages.context import StageContext, checkpoint_name, ensure
from raylth.stages.methods import trunk_level
from raylth.stages.networks import load_network, split_ref
from raylth.stages.registry import Stage, level_of, method_network_kinds, register_stage
from raylth.store import Artifact


@precision("float32")  # second derivatives: no TF32 (nor bf16)
def run_sharpness(spec: SharpnessSpec, ctx: StageContext) -> Artifact:
    network_id, checkpoint = split_ref(spec.network)
    network = load_network(ctx.store, network_id)
    weights = network.weights(checkpoint)
    masks = {ref: load_network(ctx.store, ref).mask() for ref in spec.masks}
    unmasked = [ref for ref, mask in masks.items() if mask is None]
    if unmasked:
        raise StoreError(f"masks: {unmasked[0]} is a dense network and has no mask to split by")

    def compute() -> Artifact:
        started = time.time()
        data = ctx.dataset(network.data)
        model = ctx.model(network.model, data, seed=network.seeds.init).to(ctx.device)
        model.load_state_dict(weights)
        batches = fixed_batches(data, spec.batches, spec.batch_size, spec.seed)
        diag = hessian_diagonal(model, batches, spec.probes, spec.seed)
        top = top_eigenvalue(model, batches, spec.iterations, spec.seed)
        partial = ctx.store.partial(spec.id)
        partial.save("hessian_diagonal.pt", {k: v.cpu() for k, v in diag.items()})
        metrics = {"top_eigenvalue": top, "network": network.id, "checkpoint": checkpoint,
                   "level": network.level, "sparsity": network.sparsity,
                   "trace_estimate": float(sum(v.sum() for v in diag.values())),
                   "masks": {ref: mass_by_mask(diag, mask) for ref, mask in masks.items()},
                   "wall_s": time.time() - started}
        return ctx.store.finish(spec, partial, metrics)

    return ensure(ctx, spec, compute)


register_stage(Stage(SharpnessSpec, run_sharpness,
                     origin=lambda spec, origin_of: origin_of(split_ref(spec.network)[0])))


def sharpness_jobs(trial: TrialSpec, options: SharpnessOptions, networks: list[Spec]):
    """One job per selected level: the Hessian of the trial's dense network
    (at its rewind point, init or final) split by that level's mask."""
    dense = trunk_level(trial).trunk_root()
    checkpoint = checkpoint_name(trial.prune.rewind) if options.checkpoint == "rewind" else options.checkpoint
    jobs = []
    for network in networks:
        level = level_of(network)
        if network.kind not in method_network_kinds() or (trial.method != "dense" and level == 0):
            continue
        if not selected(level, options.levels, trial.method):
            continue
        masks = () if level == 0 else (network.id,)  # a dense network has no mask
        jobs.append((f"level={level},sharpness", (options.of(f"{dense.id}:{checkpoint}", masks),)))
    return jobs


def check_dense_networks(jobs, store) -> None:
    """A sharpness job reads its trial's dense network, which the stage cannot
    train: a job of the sweep must make it, or the store hold it."""
    made = {i for job in jobs for i in job.ids}
    for job in jobs:
        for spec in job.specs:
            network = split_ref(spec.network)[0] if isinstance(spec, SharpnessSpec) else None
            if network and network not in made and not store.has(network):
                raise SpecError(f"[{job.label}]: sharpness: it splits the trial's dense network {network}, which "
                                "no trial of this sweep trains and the store does not hold; add method imp (or "
                                "dense) with the same seeds to the grid")


register_analysis(Analysis(SharpnessOptions, jobs=sharpness_jobs, check=check_dense_networks))
