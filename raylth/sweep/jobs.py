"""A sweep's trials as jobs: one Ray Tune trial each, run phase by phase.

A trial's method gives its main job (e.g. all levels of an IMP trunk), or one
job per artifact for a ``parallel`` method, after a ``prepare`` job in the
phase before when the method has one (stored first, not results rows: e.g.
distilled_imp's distillation and distilled trunk, then one job per level's
ticket). With ``lmc:`` options it also gives, for each selected network of
the trial, one job per child (so children train in parallel) and then one
analysis job.
"""

from __future__ import annotations

from dataclasses import dataclass

from raylth.specs import STAGE_SPECS, LandscapeSpec, LmcSpec, Spec
from raylth.stages import METHODS
from raylth.stages.context import checkpoint_name
from raylth.sweep.config import Trial


TRAINING_KINDS = ("train", "imp", "branch", "child", "ticket", "maskimp")


@dataclass(frozen=True)
class Job:
    label: str
    phase: int
    specs: tuple[Spec, ...]
    rows: bool = True  # its artifacts are results rows (False: a method's preparation)

    @property
    def trains(self) -> bool:
        """Whether it trains networks (DDP-able) rather than analysing stored ones.
        A job that distils runs in one process (DDP would repeat the distillation
        on every rank; the trunk trained on the distilled set is small)."""
        kinds = {s.kind for s in self.specs}
        return bool(kinds & set(TRAINING_KINDS)) and "distill" not in kinds

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.specs]

    def payload(self) -> list[tuple[str, dict]]:
        return [(s.kind, s.to_dict()) for s in self.specs]

    @staticmethod
    def specs_from(payload) -> list[Spec]:
        return [STAGE_SPECS[kind].from_dict(data) for kind, data in payload]


def level_of(spec: Spec) -> int:
    if spec.kind == "imp":
        return spec.level
    if spec.kind in ("branch", "ticket"):
        return spec.trunk.level
    if spec.kind == "maskimp":
        return spec.level
    return 0


def trial_jobs(trial: Trial) -> list[Job]:
    spec = trial.spec
    method = METHODS[spec.method]
    networks = method.artifacts(spec)
    jobs = []
    if method.prepare:  # stored first, a phase earlier; not results rows
        jobs.append(Job(f"{trial.label},prepare", method.phase - 1, tuple(method.prepare(spec)), rows=False))
    if method.parallel:
        jobs += [Job(f"{trial.label},level={level_of(n)}", method.phase, (n,)) for n in networks]
    else:
        jobs.append(Job(trial.label, method.phase, tuple(networks)))
    options = spec.lmc
    if options is None:
        return jobs
    spawn = spec.prune.rewind
    for network in networks:
        level = level_of(network)
        if options.levels and level not in options.levels and spec.method != "dense":
            continue  # `levels` picks among a trunk's levels; a dense trial has just its one network
        lmc = LmcSpec.of(network.id, spawn, options)
        where = f"{trial.label},level={level}"
        jobs += [Job(f"{where},child={i}", method.phase + 1, (lmc.child(i),))
                 for i in range(options.children)]
        analyses = [lmc]
        if options.landscape:
            analyses.append(LandscapeSpec(networks=(f"{lmc.child(0).id}:final", f"{lmc.child(1).id}:final",
                                                    f"{network.id}:{checkpoint_name(spawn)}")))
        jobs.append(Job(f"{where},lmc", method.phase + 2, tuple(analyses)))
    return jobs


def sweep_jobs(trials: list[Trial]) -> list[Job]:
    return [job for trial in trials for job in trial_jobs(trial)]
