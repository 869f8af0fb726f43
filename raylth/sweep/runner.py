"""Run a sweep's missing jobs as Ray Tune trials, each once the jobs it needs
have finished (raylth.sweep.schedule).

The store is the source of truth: a job whose artifacts all exist is not
scheduled, and a job that is scheduled asks the store for each artifact
before computing it, so running the same sweep again after an interruption
finishes only what is missing.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from raylth.cluster import jobs_per_node
from raylth.errors import RaylthError, StoreError, StoreUnreachable
from raylth.specs import Spec
from raylth.stages import StageContext, run_stage
from raylth.store import Store
from raylth.sweep.config import PRECISIONS, Sweep
from raylth.sweep.jobs import Job
from raylth.sweep.drivers import registered
from raylth.sweep.interrupt import stopped_cleanly
from raylth.sweep.paths import root_cause_line
from raylth.store.records import write_errors
from raylth.sweep.plan import checked_store, job_states, write_record
from raylth.sweep.shared_storage import check_shared

log = logging.getLogger("raylth")


@dataclass
class SweepOutcome:
    name: str
    storage: str  # where results are: a folder or a URI
    finished: list[str] = field(default_factory=list)   # job labels
    cached: list[str] = field(default_factory=list)     # finished before this run
    failed: dict[str, str] = field(default_factory=dict)  # label -> error

    @property
    def ok(self) -> bool:
        return not self.failed


PROGRESS_KEYS = ("level", "sparsity", "test_acc", "instability_test")


def run_specs_here(specs: list[Spec], storage, data_root: Path, report=None, node=None,
                   compile: bool = False, on_eval=None, fast: bool | None = None) -> list[str]:
    """Run one job's stages in this process (what every Tune trial does)."""
    ctx = StageContext(store=Store(storage), data_root=data_root, report=report, node=node, compile=compile,
                       planned=tuple(specs), on_eval=on_eval, fast=fast)
    return [run_stage(spec, ctx).id for spec in specs]


def _tune_trainable(config, jobs, storage, data_root, workers, resources, max_failures, compile, fast=None):
    import ray
    from ray import tune

    specs, trains = jobs[config["trial"]]  # stage specs (frozen dataclasses: they pickle as they are)
    node = ray.get_runtime_context().get_node_id()
    if workers > 1 and trains:
        from raylth.sweep.train_job import fit_job_with_train

        # named after the trial: a retried trial continues its own Train run
        fit_job_with_train(specs, storage=storage, data_root=Path(data_root), workers=workers,
                           resources=resources, max_failures=max_failures, progress_keys=PROGRESS_KEYS,
                           run_name=f"{tune.get_context().get_trial_id()}-train", compile=compile, fast=fast)
        ids = [spec.id for spec in specs]
    else:
        def progress(metrics: dict) -> None:  # one Tune result per stored stage: the progress table
            tune.report({k: metrics[k] for k in PROGRESS_KEYS if k in metrics})

        # and one per evaluation inside a stage (epoch, train loss, test accuracy): live progress
        ids = run_specs_here(list(specs), storage, Path(data_root), report=progress, node=node,
                             compile=compile, on_eval=tune.report, fast=fast)
    last = Store(storage).get(ids[-1]).metrics
    tune.report({k: last[k] for k in PROGRESS_KEYS if k in last} | {"artifacts": len(ids)})


def _trial_resources(jobs, workers: int, resources: dict):
    """A job trained by Ray Train asks Tune only for its driver; its workers
    ask Ray Train for theirs (bound concurrency with max_concurrent). Tune
    unpickles this with the trainable each time it starts a trial's actor, so
    it holds the labels of the jobs Ray Train trains, never the jobs: a closure
    over every job's specs made each start cost time in proportion to the
    sweep's size (bench/scaling.py)."""
    one = {"cpu": resources["cpu"], "gpu": resources["gpu"]}
    if workers <= 1:
        return one
    trained = frozenset(label for label, (_, trains) in jobs.items() if trains)

    def resources_of(config: dict) -> dict:
        return {"cpu": 0.01, "gpu": 0} if config["trial"] in trained else one
    return resources_of


def _check_fits(sweep: Sweep, cluster: dict, started_here: bool, nodes: list[dict] | None = None) -> None:
    """One job's resources must fit the cluster, and one worker's some node
    (``nodes``: each node's resources), or Ray waits for them forever.
    A cluster we did not start may be autoscaling: then only warn."""
    workers, per_worker = sweep.workers, sweep.resources
    need = {"CPU": workers * per_worker["cpu"] + (0.01 if workers > 1 else 0),
            "GPU": workers * per_worker["gpu"]}
    short = [f"{need[k]:g} {k}" for k in need if need[k] > cluster.get(k, 0) + 1e-9]
    if short:
        message = (f"{sweep.name}: one job needs {' and '.join(short)} (workers: {workers} x resources "
                   f"{per_worker}) but the Ray cluster has {cluster.get('CPU', 0):g} CPU and "
                   f"{cluster.get('GPU', 0):g} GPU; lower workers or resources (fractions allowed)")
    elif nodes and not any(jobs_per_node(per_worker, node) for node in nodes):
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)))
        message = (f"{sweep.name}: resources {per_worker} per worker fit no node of the Ray cluster (the "
                   f"largest has {largest.get('CPU', 0):g} CPU and {largest.get('GPU', 0):g} GPU); lower "
                   "resources.cpu or resources.gpu to what one node has")
    else:
        return
    if started_here:
        raise RaylthError(message)
    log.warning("%s; waiting for the autoscaler to add nodes", message)


def run_sweep(sweep: Sweep, storage=None, data_root=None, address: str | None = None) -> SweepOutcome:
    store, data_root = checked_store(sweep, storage, data_root)  # before anything is written
    storage = store.uri
    outcome = SweepOutcome(sweep.name, store.location)
    states = job_states(store, sweep.trials)
    for state in states:  # damaged artifacts: moved aside (one line each), then computed again
        for artifact_id, why in state.damaged.items():
            if store.condition(artifact_id)[0] == "damaged":  # not recomputed by another run meanwhile
                store.quarantine(artifact_id, why)
    outcome.cached = [s.job.label for s in states if s.state == "finished"]
    pending = [s.job for s in states if s.state != "finished"]
    if not pending:
        write_record(store, sweep)
        log.info("%s: all %d jobs already finished in %s", sweep.name, len(states), store.location)
        return outcome

    def progress() -> str:
        done = sum(s.state == "finished" for s in job_states(store, sweep.trials))
        return f"{done} of {len(states)} jobs finished"

    with stopped_cleanly(progress, store.root):
        import ray
        from ray import tune

        # what the driver imports later, imported now (Python keeps it): under `ray job submit`
        # this code is the uploaded package, which Ray may remove while the run goes on
        for module in ("raylth.sweep.loggers", "raylth.sweep.schedule"):
            importlib.import_module(module)

        started = not ray.is_initialized()
        if started:
            ray.init(address=address, log_to_driver=True)
        # resources no node can give, or a folder some node does not see, stop the run before its
        # record is written
        try:
            _check_fits(sweep, ray.cluster_resources(),
                        started_here=address is None and not os.environ.get("RAY_ADDRESS"),
                        nodes=[node["Resources"] for node in ray.nodes() if node.get("Alive")])
            check_shared(store)
        except RaylthError:
            if started:  # a refused run leaves nothing running
                ray.shutdown()
            raise
        write_record(store, sweep)
        jobs = {job.label: (job.specs, job.trains) for job in pending}
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trainable, jobs=jobs, storage=str(storage), data_root=str(data_root),
                                 workers=sweep.workers, resources=sweep.resources,
                                 max_failures=sweep.max_failures, compile=sweep.compile,
                                 fast=PRECISIONS[sweep.precision]),
            _trial_resources(jobs, sweep.workers, sweep.resources))
        # unique per run: two runs started in the same second must not share Tune's folder
        run_name = f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        with registered(store, sweep.name), _working_directory(store.root):
            _fit(sweep, pending, trainable, store, run_name, outcome)
        with contextlib.suppress(OSError, StoreError):  # a full disk, a failing bucket: said below
            write_errors(store, sweep.name, outcome.failed)
        _stop_on_storage_faults(outcome, store)
    return outcome


def _stop_on_storage_faults(outcome: SweepOutcome, store: Store) -> None:
    """Trials that failed on the storage itself (a full disk, a bucket that kept failing): one
    line (stopped_cleanly), not a list."""
    fault = next((code for code in STORAGE_FAULTS for error in outcome.failed.values() if code in error), None)
    if fault is not None:
        raise OSError(STORAGE_FAULTS[fault], os.strerror(STORAGE_FAULTS[fault]), store.location)
    failing = bucket_failure(outcome.failed)
    if failing is not None:
        raise StoreUnreachable(failing)


# how a trial's storage fault reads in its root-cause line (raylth.sweep.paths.root_cause_line)
STORAGE_FAULTS = {f"[Errno {code}]": code for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)}


def bucket_failure(failed: dict[str, str]) -> str | None:
    """The message of the first job that failed on the bucket itself, its retries spent (each
    error as root_cause_line gives it: 'StoreUnreachable: storage ...')."""
    for error in failed.values():
        name, _, message = error.partition(": ")
        if name == StoreUnreachable.__name__:
            return message
    return None


@contextlib.contextmanager
def _working_directory(path: Path):
    """Tune resolves relative paths against the working directory; under
    `ray job submit` that is the uploaded package, which Ray may clean up
    mid-run. Run Tune from the storage root instead, then go back."""
    try:
        previous = os.getcwd()
    except FileNotFoundError:
        previous = None
    os.chdir(path)
    try:
        yield
    finally:
        if previous is not None:
            with contextlib.suppress(OSError):
                os.chdir(previous)


def _fit(sweep: Sweep, pending: list[Job], trainable, store: Store, run_name: str, outcome: SweepOutcome) -> None:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from raylth.sweep.loggers import progress_reporter, trial_configs, tune_callbacks, tune_output
    from raylth.sweep.schedule import DependencyOrder

    # each trial's config: its job label and its trial's spec as dotted keys (trackers' params)
    order = DependencyOrder(pending, config=trial_configs(sweep))
    # Tune queues as many trials as the limiter allows (one for a bare searcher): every
    # job that is ready waits as a trial, so idle nodes take it and autoscaling sees it.
    limited = ConcurrencyLimiter(order, max_concurrent=sweep.max_concurrent or len(pending))
    tuner = tune.Tuner(
        trainable,
        # reuse_actors: small jobs (children, controls) skip a fresh worker's torch import
        tune_config=tune.TuneConfig(search_alg=limited, num_samples=len(pending), reuse_actors=True,
                                    trial_name_creator=lambda t: _short(t.config["trial"]),
                                    trial_dirname_creator=lambda t: f"{t.trial_id}"),
        run_config=tune.RunConfig(name=run_name, **store.tune_storage(),
                                  failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                                  callbacks=tune_callbacks(sweep.loggers, sweep.name, store.root),
                                  progress_reporter=progress_reporter(), verbose=1),
    )
    with tune_output():  # the progress table with raylth's columns
        results = tuner.fit()
    for result in results:
        if result.config is None:  # a trial whose worker never started: accounted for below
            continue
        label = result.config["trial"]
        if result.error is not None:
            outcome.failed[label] = root_cause_line(result.error)
        else:
            outcome.finished.append(label)
    for label, need in order.skipped.items():
        outcome.failed[label] = f"not run: it needs job [{need}], which did not finish"
    for job in pending:
        if job.label not in outcome.failed and job.label not in outcome.finished:
            outcome.failed[job.label] = "did not run (its worker never started); run the same command to continue"


def _short(label: str, limit: int = 60) -> str:
    return label if len(label) <= limit else label[:limit - 3] + "..."
