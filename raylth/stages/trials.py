"""What a sweep trial produces: its method's artifacts and its analyses', as
jobs (label, specs, rows). The sweep schedules them (raylth.sweep.jobs); the
reports find a trial's artifacts from the same plan.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from raylth.specs import Spec, TrialSpec
from raylth.stages.analyses import analysis_jobs
from raylth.stages.methods import METHODS
from raylth.stages.registry import level_of


@dataclass(frozen=True)
class PlannedJob:
    label: str
    specs: tuple[Spec, ...]
    rows: bool = True  # its artifacts are results rows (False: a method's preparation)


@functools.lru_cache(maxsize=8192)  # a run plans each trial for its checks, its jobs and its loggers
def trial_plan(label: str, spec: TrialSpec) -> tuple[PlannedJob, ...]:
    method = METHODS[spec.method]
    networks = method.artifacts(spec)
    jobs = []
    if method.prepare:  # stored first; not results rows
        jobs.append(PlannedJob(f"{label},prepare", tuple(method.prepare(spec)), rows=False))
    if method.parallel:
        jobs += [PlannedJob(f"{label},level={level_of(n)}", (n,)) for n in networks]
    else:
        jobs.append(PlannedJob(label, tuple(networks)))
    jobs += [PlannedJob(f"{label},{suffix}", specs, *rows) for suffix, specs, *rows in analysis_jobs(spec, networks)]
    return tuple(jobs)
