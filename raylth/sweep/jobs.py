"""A sweep's trials as jobs: one Ray Tune trial each, started as soon as the
jobs it needs have finished.

A trial's method gives its main job (e.g. all levels of an IMP trunk), or one
job per artifact for a ``parallel`` method, after a ``prepare`` job when the
method has one (stored first, not results rows: e.g. distilled_imp's
distillation and distilled trunk, then one job per level's ticket). With
``lmc:`` options it also gives, for each selected network of the trial, one
job per child (so children train in parallel) and then one analysis job; with
``sharpness:`` options, one job per selected level splitting the Hessian of
the trial's dense network by that level's mask.

A job needs another when one of its stages reads an artifact the other
produces (a branch reads its trunk level, a child its parent, an analysis its
children), or when everything it produces is produced by the other too (a
dense trial inside an IMP trial of the same seeds): it then only reads the
store. Needs are a schedule, not correctness: a stage computes (under the
store's lock) whatever it reads that is missing.
"""

from __future__ import annotations

import dataclasses
import graphlib
from dataclasses import dataclass

from raylth.errors import RaylthError
from raylth.specs import Spec
from raylth.specs.refs import artifact_of
from raylth.stages.registry import STAGES, stage_of, trains
from raylth.stages.trials import trial_plan
from raylth.sweep.config import Trial


@dataclass(frozen=True)
class Job:
    label: str
    specs: tuple[Spec, ...]
    rows: bool = True  # its artifacts are results rows (False: a method's preparation)
    needs: tuple[str, ...] = ()  # labels of the jobs to finish first (set by sweep_jobs)

    @property
    def trains(self) -> bool:
        """Whether it trains networks (DDP-able) rather than analysing stored ones.
        A job that distils runs in one process (DDP would repeat the distillation
        on every rank; the trunk trained on the distilled set is small)."""
        return trains(self.specs)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.specs]


def trial_jobs(trial: Trial) -> list[Job]:
    return [Job(j.label, j.specs, j.rows) for j in trial_plan(trial.label, trial.spec)]


def sweep_jobs(trials: list[Trial]) -> list[Job]:
    """Every job of the sweep, each with the labels of the jobs it needs. A job
    whose artifacts are exactly another's (the same Hessian in trials of
    different methods, the same children of a shared dense network) is planned
    once, under the first trial's label."""
    jobs, seen = [], set()
    for job in (job for trial in trials for job in trial_jobs(trial)):
        if frozenset(job.ids) not in seen:
            seen.add(frozenset(job.ids))
            jobs.append(job)
    jobs, holders = _with_siblings(jobs)
    producers: dict[str, list[int]] = {}
    for index, job in enumerate(jobs):
        for artifact in job.ids:
            producers.setdefault(artifact, []).append(index)
    needed = []
    for index, job in enumerate(jobs):
        own = set(job.ids)
        # what it reads, from the first job that makes it
        needs = {producers[artifact][0] for artifact in set().union(*map(reads, job.specs)) - own
                 if artifact in producers}
        # a job whose every artifact another (larger, or equal and earlier) job makes waits for it
        needs |= {other for other in set.intersection(*(set(producers[i]) for i in own))
                  if len(jobs[other].ids) > len(own) or (len(jobs[other].ids) == len(own) and other < index)}
        # a sibling of a run another job trains (the same run, other checkpoints) waits for that job
        needs |= {holders[artifact] for artifact in own if artifact in holders}
        needs.discard(index)
        needed.append(sorted(needs))
    _check_acyclic(jobs, needed)
    return [dataclasses.replace(job, needs=tuple(jobs[i].label for i in needs))
            for job, needs in zip(jobs, needed)]


def _with_siblings(jobs: list[Job]) -> tuple[list[Job], dict[str, int]]:
    """Stages that compute the same thing apart from what they keep (dense runs
    differing only in save_at: the registry's ``sibling_key``) join the first
    job that holds one of them, right after it, so that one run makes them all
    (raylth.stages.train). Returns the jobs and, per sibling id, that job."""
    groups: dict = {}
    for index, job in enumerate(jobs):
        for spec in job.specs:
            key = stage_of(spec.kind).sibling_key
            if key is not None:
                first, members = groups.setdefault(key(spec), (index, {}))
                members.setdefault(spec.id, spec)
    out, holders = list(jobs), {}
    for base, (index, members) in groups.items():
        if len(members) < 2:
            continue
        job = out[index]
        at = next(k for k, spec in enumerate(job.specs) if spec.id in members)
        extra = tuple(spec for i, spec in members.items() if i not in set(job.ids))
        out[index] = dataclasses.replace(job, specs=job.specs[:at + 1] + extra + job.specs[at + 1:])
        holders |= {i: index for i in members}
    return out, holders


def reads(spec: Spec) -> set[str]:
    """Ids of the stored artifacts a stage reads: stage specs nested in it (a
    branch's trunk level), artifact ids among its values (a child's parent, a
    data set stored as an artifact) and its own ``inputs()`` (an analysis's
    children)."""
    found = {s.id for s in spec.inputs()}
    for f in dataclasses.fields(spec):
        found |= _refs(getattr(spec, f.name))
    return found


def _refs(value) -> set[str]:
    if isinstance(value, Spec) and STAGES.get(value.kind) is not None and type(value) is STAGES[value.kind].spec:
        return {value.id} | reads(value)
    if isinstance(value, Spec):
        return reads(value)
    if isinstance(value, (tuple, list)):
        return set().union(*map(_refs, value)) if value else set()
    found = artifact_of(value)
    return {found} if found else set()


def _check_acyclic(jobs: list[Job], needed: list[list[int]]) -> None:
    try:
        tuple(graphlib.TopologicalSorter(dict(enumerate(needed))).static_order())
    except graphlib.CycleError as err:
        raise RaylthError("jobs need each other: " + " -> ".join(jobs[i].label for i in err.args[1])) from None
