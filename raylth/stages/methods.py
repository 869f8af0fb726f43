"""Methods a sweep can name, each a recipe of stages.

A method says which artifacts a trial produces (one results row each) and how
to run them. The sweep starts each of its jobs once the jobs making what it
reads have finished (raylth.sweep.jobs finds that from the specs). Add a
method by registering one more ``Method`` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from raylth.errors import SpecError, did_you_mean
from raylth.specs import BranchSpec, ImpLevelSpec, Spec, TrainStageSpec, TrialSpec
from raylth.stages.context import StageContext
from raylth.stages.distill_eval import distill_method_artifacts
from raylth.stages.registry import run_stage
from raylth.stages.ticket import (distilled_imp_artifacts, distilled_imp_prepare, distilled_random_artifacts,
                                  mask_then_imp_artifacts, mask_then_imp_prepare)
from raylth.store import Artifact


@dataclass(frozen=True)
class Method:
    name: str
    artifacts: Callable[[TrialSpec], list[Spec]]
    # Its rows are pruned levels 1..levels of a trunk (so the trial needs levels >= 1).
    needs_levels: bool = False
    # Stages stored first, in order, as one job before the others (not results rows),
    # e.g. a distillation and the IMP trunk trained on it.
    prepare: Callable[[TrialSpec], list[Spec]] | None = None
    # One job per artifact (they run in parallel) instead of one job for all.
    parallel: bool = False

    def run(self, trial: TrialSpec, ctx: StageContext) -> list[Artifact]:
        for spec in self.prepare(trial) if self.prepare else ():
            run_stage(spec, ctx)
        return [run_stage(spec, ctx) for spec in self.artifacts(trial)]


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def check_method_name(name: str) -> None:
    if name not in METHODS:
        raise SpecError(f"method: unknown method {name!r}{did_you_mean(name, METHODS)}; known methods are {', '.join(sorted(METHODS))}")


def trunk_level(trial: TrialSpec, level: int = 1) -> ImpLevelSpec:
    return ImpLevelSpec(data=trial.data, model=trial.model, train=trial.train,
                        prune=trial.prune, seeds=trial.seeds, level=level)


def _dense(trial: TrialSpec) -> list[Spec]:
    return [trunk_level(trial).trunk_root()]


def _imp(trial: TrialSpec) -> list[Spec]:
    return _dense(trial) + [trunk_level(trial, level) for level in range(1, trial.levels + 1)]


def _branches(name: str):
    def artifacts(trial: TrialSpec) -> list[Spec]:
        return [BranchSpec(trunk=trunk_level(trial, level), method=name, seed=trial.branch_seed)
                for level in range(1, trial.levels + 1)]
    return artifacts


register_method(Method("dense", artifacts=_dense))
register_method(Method("imp", artifacts=_imp))
register_method(Method("random_prune", artifacts=_branches("random_prune"), needs_levels=True))
register_method(Method("reinit", artifacts=_branches("reinit"), needs_levels=True))
# Dataset distillation and distilled pruning (raylth.stages.distill, raylth.stages.ticket)
register_method(Method("distill", artifacts=distill_method_artifacts))
register_method(Method("distilled_imp", artifacts=distilled_imp_artifacts, needs_levels=True,
                       prepare=distilled_imp_prepare, parallel=True))
register_method(Method("distilled_random", artifacts=distilled_random_artifacts, needs_levels=True,
                       prepare=distilled_imp_prepare, parallel=True))
register_method(Method("mask_then_imp", artifacts=mask_then_imp_artifacts, needs_levels=True,
                       prepare=mask_then_imp_prepare))

__all__ = ["METHODS", "Method", "register_method", "check_method_name", "TrainStageSpec"]
