"""The sweep methods of distilled pruning, and their checks of a trial."""

from __future__ import annotations

from raylth.errors import SpecError
from raylth.plugins.methods.distilled.specs import MaskImpSpec, TicketSpec
from raylth.specs import ImpLevelSpec, Spec
from raylth.stages.distill import check_trial_distill, trial_distill
from raylth.stages.methods import Method, register_method

INNER_EXAMPLE = "{lr: 0.05, batch_size: 10, duration: 40ep}"
EXAMPLE = {"levels": 2, "start_level": 1, "distill": {"method": "dm", "ipc": 2, "iterations": 2,
                                                      "model": {"name": "lenet"}},
           "inner": {"lr": 0.02, "batch_size": 10, "duration": "2ep"}}


def distilled_trunk(trial, level: int = 1) -> ImpLevelSpec:
    """Level ``level`` of the trial's IMP trunk on its distilled set."""
    return ImpLevelSpec(data=trial_distill(trial).dataset(augment=trial.data.augment), model=trial.model,
                        train=trial.inner, prune=trial.prune, seeds=trial.seeds, level=level)


def ticket(trial, level: int, random: bool = False) -> TicketSpec:
    return TicketSpec(trunk=distilled_trunk(trial, level), data=trial.data, train=trial.train, seeds=trial.seeds,
                      mask="random" if random else "trunk", seed=trial.branch_seed if random else 0)


def distilled_prepare(trial, levels: int) -> list[Spec]:
    """The distillation and the distilled trunk's levels 0..levels, in order."""
    trunk = distilled_trunk(trial)
    return [trial_distill(trial), trunk.trunk_root()] + [trunk.at_level(l) for l in range(1, levels + 1)]


def check(method: str):
    def check_trial(trial) -> None:
        check_trial_distill(trial, method)
        if trial.inner is None:
            raise SpecError(f"inner: method {method} trains every level on the distilled set with its own "
                            f"inner: TrainSpec, e.g. inner: {INNER_EXAMPLE}")
        rewind, duration = trial.prune.rewind, trial.inner.duration
        if rewind.unit == duration.unit and rewind.amount >= duration.amount:
            raise SpecError(f"prune.rewind: {rewind} is not before the end of the distilled training "
                            f"(inner.duration: {duration})")
        if method == "mask_then_imp" and not 1 <= trial.start_level < trial.levels:
            raise SpecError(f"start_level: {trial.start_level} must be a distilled-pruning level in 1..levels-1 "
                            f"(levels: {trial.levels}); mask_then_imp continues IMP from it up to `levels`")
    return check_trial


def tickets(random: bool):
    def artifacts(trial) -> list[Spec]:
        return [ticket(trial, level, random) for level in range(1, trial.levels + 1)]
    return artifacts


def mask_then_imp(trial) -> list[Spec]:
    start = ticket(trial, trial.start_level)
    return [start] + [MaskImpSpec(start=start, prune=trial.prune, level=level)
                      for level in range(trial.start_level + 1, trial.levels + 1)]


register_method(Method("distilled_imp", artifacts=tickets(random=False), needs_levels=True, parallel=True,
                       prepare=lambda trial: distilled_prepare(trial, trial.levels), check=check("distilled_imp"),
                       example=EXAMPLE, order=4))
# random masks with the distilled tickets' per-layer counts, from the same start: the control telling a
# stable distilled ticket from a merely sparse one at k = 0
register_method(Method("distilled_random", artifacts=tickets(random=True), needs_levels=True, parallel=True,
                       prepare=lambda trial: distilled_prepare(trial, trial.levels),
                       check=check("distilled_random"), example=EXAMPLE, order=5))
register_method(Method("mask_then_imp", artifacts=mask_then_imp, needs_levels=True,
                       prepare=lambda trial: distilled_prepare(trial, trial.start_level),
                       check=check("mask_then_imp"), example=EXAMPLE, order=6))
