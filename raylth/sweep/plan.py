"""From trials to work: validate names and data at the edge, record the sweep
in the store, and tell which trials are finished, running or missing."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from raylth.engine.data import check_dataset, check_dataset_name, steps_per_epoch
from raylth.engine.masks import check_strategy_name
from raylth.engine.models import check_model_name
from raylth.errors import RaylthError, SpecError
from raylth.specs import TrialSpec
from raylth.stages import METHODS, check_method_name
from raylth.stages.analyses import check_analyses
from raylth.store import Store
from raylth.store import records
from raylth.sweep.config import Sweep, Trial
from raylth.store import liveness
from raylth.sweep.paths import resolve_paths
from raylth.sweep.jobs import Job, sweep_jobs, trial_jobs



def check_trials(sweep: Sweep, data_root: Path) -> None:
    """Every name known, every data set present (downloaded if possible)."""
    for trial in sweep.trials:
        spec = trial.spec
        where = f"{sweep.name} [{trial.label}]"
        for check, value in ((check_method_name, spec.method), (check_model_name, spec.model.name),
                             (check_dataset_name, spec.data.name),
                             (check_strategy_name, spec.prune.strategy)):
            try:
                check(value)
            except SpecError as err:
                raise SpecError(f"{where}: {err}") from None
        if METHODS[spec.method].needs_levels and spec.levels < 1:
            raise SpecError(f"{where}: levels: method {spec.method} needs levels >= 1")
    sizes = {data: check_dataset(data, data_root).train for data in {trial.spec.data for trial in sweep.trials}}
    for trial in sweep.trials:
        check_steps(trial.spec, sizes[trial.spec.data], f"{sweep.name} [{trial.label}]")
    check_distillations(sweep, data_root)


def check_distillations(sweep: Sweep, data_root: Path) -> None:
    """ipc against the class sizes, import files: what needs the data, now."""
    from raylth.stages import StageContext
    from raylth.stages.distill import check_distill, trial_distill

    distills = {trial_distill(t.spec): t.label for t in sweep.trials if t.spec.distill is not None}
    if not distills:
        return
    ctx = StageContext(store=Store(data_root), data_root=data_root, device=torch.device("cpu"))
    device = worker_device(sweep)
    for spec, label in distills.items():
        try:
            real = check_distill(spec, ctx)
            fits = spec.distill_method.fits
            if fits is not None and device is not None:
                fits(spec, real, device)
        except RaylthError as err:
            raise type(err)(f"{sweep.name} [{label}]: {err}") from None


def worker_device(sweep: Sweep) -> torch.device | None:
    """The device whose memory the sweep's jobs are planned against: the host
    for CPU sweeps; for GPU sweeps this machine's GPU (or the size that
    RAYLTH_DEVICE_MEMORY_GIB states), None when neither is known here (the
    workers then check at the start of each job)."""
    if not sweep.resources.get("gpu"):
        return torch.device("cpu")
    if torch.cuda.is_available() or os.environ.get("RAYLTH_DEVICE_MEMORY_GIB"):
        return torch.device("cuda")
    return None


def checked_store(sweep: Sweep, storage=None, data_root=None, read_only: bool = False) -> tuple[Store, Path]:
    """What a run (or a dry run: ``read_only``) checks before anything is
    written: names and data, the storage writable, each analysis's inputs.
    Returns the store and the data root."""
    storage, data_root = resolve_paths(sweep, storage, data_root)
    check_trials(sweep, data_root)
    store = Store(storage, read_only=read_only)
    if not read_only:
        store.check_writable()
    check_analysis_inputs(sweep, store)
    return store, data_root


def check_analysis_inputs(sweep: Sweep, store: Store) -> None:
    """What each analysis reads and cannot make (raylth.stages.analyses): made by a job of the sweep, or stored."""
    try:
        check_analyses([job for trial in sweep.trials for job in trial_jobs(trial)], store)
    except SpecError as err:
        raise SpecError(f"{sweep.name} {err}") from None


def check_steps(spec: TrialSpec, n_train: int, where: str) -> None:
    """Steps written in other units than the duration are checked once the
    data set's size (hence iterations per epoch) is known."""
    per_epoch = steps_per_epoch(n_train, spec.train.batch_size, spec.train.last_batch == "drop")
    total = spec.train.duration.iterations(per_epoch)
    named = [("prune.rewind", spec.prune.rewind, total - 1), ("train.warmup", spec.train.warmup, total)]
    named += [(f"train.milestones[{i}]", m, total) for i, m in enumerate(spec.train.milestones)]
    for name, step, last in named:
        if step.iterations(per_epoch) > last:
            raise SpecError(
                f"{where}: {name}: {step} is iteration {step.iterations(per_epoch)}, past the end of "
                f"training ({spec.train.duration} = {total} iterations of {per_epoch} per epoch); "
                "use an earlier step or a longer train.duration")


@dataclass
class JobState:
    job: Job
    finished: int
    running: bool
    error: str | None = None  # the last run's error, when it failed
    damaged: dict[str, str] = field(default_factory=dict)  # artifact id -> what is wrong with it
    begun: bool = False  # work in progress is stored for it
    stored: frozenset = frozenset()  # ids of its artifacts that are finished (``finished`` of them)

    STATES = ("finished", "running", "damaged", "failed", "interrupted", "missing")

    @property
    def state(self) -> str:
        if self.finished == len(self.job.ids):
            return "finished"
        if self.running:
            return "running"
        if self.damaged:
            return "damaged"
        if self.error:
            return "failed"
        return "interrupted" if self.begun else "missing"


def job_states(store: Store, trials: list[Trial], errors: dict | None = None,
               drivers_alive: bool | None = None) -> list[JobState]:
    """Each job's state. A job is running when a process computing one of its
    artifacts is alive (raylth.store.liveness: same host, its pid and start
    time; another host, a recent heartbeat) and, where the sweep's drivers are known
    (``drivers_alive``), one of them is; work left by a dead process is
    interrupted. Damaged artifacts (raylth.store: size or checksum wrong)
    count as damaged, never finished."""
    errors = errors or {}
    states = []
    for job in sweep_jobs(trials):
        stored, damaged, begun, running = set(), {}, False, False
        for artifact_id in job.ids:
            condition, why = store.condition(artifact_id)
            if condition == "finished":
                stored.add(artifact_id)
                continue
            if condition == "damaged":
                damaged[artifact_id] = why
            owner = store.partial_state(artifact_id)
            if owner:
                begun = True
                running = running or (drivers_alive is not False and liveness.alive(owner))
        states.append(JobState(job, len(stored), running, errors.get(job.label), damaged, begun, frozenset(stored)))
    return states


def write_record(store: Store, sweep: Sweep) -> None:
    """Record the sweep's trials (raylth.store.records): records only grow."""
    records.write_record(store, sweep.name, sweep.source, [(t.label, t.spec) for t in sweep.trials])


def read_record(store: Store, name: str) -> list[Trial]:
    return [Trial(label, spec) for label, spec in records.read_record(store, name)]
