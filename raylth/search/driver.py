"""Running a search (``raylth run`` on a ``kind: search`` file).

The driver keeps the study in Optuna storage, asks for trials
(define-by-run: parameters of a distillation method are suggested only for
trials of that method) and runs each as a Ray task (``ray.remote``), up to
``concurrent`` at once. A task computes its stages in the results store (so
a repeated configuration is never recomputed) and reports intermediate
values to the study storage itself (raylth.search.trial); after each report
it asks the study's pruner (median by default: stop a trial whose value at
step k is below the median of earlier trials at k) and, if told so, stops.

The driver tells Optuna COMPLETE, PRUNED or FAIL. The search ends when
COMPLETE + PRUNED trials reach n_trials, so running the same command again
resumes the same study; trials left RUNNING by a driver that died (its
process is gone; one driver per study at a time) are marked FAIL and
enqueued again with the parameters they had drawn (Optuna's
RetryHeartbeatStaleTrialCallback). At the end the best parameters are
written as a ready-to-run sweep, ``<store>/searches/<name>-best.yaml``
(sweep name ``<name>_best``: raylth.search.best).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from raylth.errors import RaylthError
from raylth.search.best import write_best
from raylth.search.optuna_io import (default_study_storage, make_pruner, make_sampler, make_storage,
                                     optuna_experimental_warning, quiet_optuna)
from raylth.search.spec import Search
from raylth.store import liveness
from raylth.search.trial import run_trial
from raylth.sweep.interrupt import stopped_cleanly
from raylth.sweep.paths import resolve_paths, root_cause_line
from raylth.sweep.shared_storage import check_shared

log = logging.getLogger("raylth")


@dataclass
class SearchOutcome:
    kind = "search"
    name: str
    storage: str  # where results are: a folder or a URI
    study_storage: str
    complete: int = 0
    pruned: int = 0
    failed: dict = field(default_factory=dict)   # trial number -> error (this run)
    run_now: int = 0
    best_value: float | None = None
    best_params: dict = field(default_factory=dict)
    best_number: int | None = None
    best_yaml: Path | None = None

    @property
    def ok(self) -> bool:
        return self.best_yaml is not None

    def lines(self) -> list[str]:
        out = [f"{self.name}: {self.complete} trials complete, {self.pruned} pruned ({self.run_now} run now), "
               f"{len(self.failed)} failed; study in {self.study_storage}; results in {self.storage}"]
        if self.best_number is not None:
            out.append(f"best: trial {self.best_number}, value {self.best_value:.4f}, params {self.best_params}")
        for number, error in self.failed.items():
            out.append(f"  failed [trial {number}]: {error}")
        if self.best_yaml is not None:
            out.append(f"best sweep: {self.best_yaml}")
        return out


def check_search(search: Search, store_root, data_root: Path) -> None:
    """Names, data sets and sizes (ipc against the classes), before anything is written."""
    from raylth.stages import StageContext
    from raylth.store import Store

    ctx = StageContext(store=Store(store_root), data_root=data_root)
    variants = [{}] + [{p.path: v} for p in search.space for v in p.extremes()]
    for params in variants:
        at = "".join(f"space.{path}={value!r}: " for path, value in params.items())
        where = f"{search.name}: {at}"
        try:
            search.objective.check(search, params, ctx, data_root)
        except RaylthError as err:
            raise type(err)(f"{where}{err}") from None


def _driver_folder(name: str) -> str:
    return f"searches/.drivers/{name}"


def _alive(stamp: dict | None, store) -> bool:
    """Whether the driver that started a trial still runs: its latest
    liveness record (renewed while it runs), by the one rule (raylth.store.liveness)."""
    if not stamp:
        return False
    latest = store.read_file(f"{_driver_folder(stamp.get('name', ''))}/{stamp.get('host')}-{stamp.get('pid')}.json")
    try:
        return liveness.alive(json.loads(latest) if latest else stamp)
    except ValueError:
        return liveness.alive(stamp)


def recover_stale(study, storage, store) -> int:
    """RUNNING trials whose driver is gone: FAIL, and enqueued again with the parameters they had drawn."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna_experimental_warning())
        retry = RetryHeartbeatStaleTrialCallback(max_retry=None)
    study_id = storage.get_study_id_from_name(study.study_name)
    recovered = 0
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _alive(frozen.user_attrs.get("driver"), store):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            retry(study, storage.get_trial(trial_id))
            recovered += 1
    if recovered:
        log.info("%s: %d trial(s) left running by a stopped driver were marked FAIL and enqueued again",
                 study.study_name, recovered)
    return recovered


def run_search(search: Search, storage=None, data_root=None, address: str | None = None) -> SearchOutcome:
    from raylth.store import Store

    store_root, data_root = resolve_paths(search, storage, data_root)
    check_search(search, store_root, data_root)  # before anything is written
    url = search.study["storage"] or default_study_storage(store_root, search.name)
    store = Store(store_root)
    quiet_optuna()
    store.check_writable()
    study = _open_study(search, url, store)
    outcome = SearchOutcome(search.name, store.location, url)
    if _finished(study) < search.study["n_trials"]:
        import ray

        # trials in flight when interrupted are left RUNNING: the next run fails and enqueues them again
        with stopped_cleanly(lambda: f"{_finished(study)} of {search.study['n_trials']} trials finished",
                             store.root):
            if not ray.is_initialized():
                ray.init(address=address, log_to_driver=True)
            check_shared(store)  # trial tasks on every node write to it
            with _trackers(search, store) as trackers, _registered(store, search.name) as stamp:
                _run_trials(search, study, url, store_root, data_root, outcome, trackers, stamp)
        if len(outcome.failed) > search.study["max_failures"]:
            _count(study, outcome)
            raise RaylthError(f"{search.name}: {len(outcome.failed)} trials failed (more than study.max_failures "
                              f"{search.study['max_failures']}); last: {list(outcome.failed.values())[-1]}")
    _count(study, outcome)
    try:
        best = study.best_trial
    except ValueError:
        return outcome  # every trial pruned: no best value
    outcome.best_value, outcome.best_params, outcome.best_number = best.value, dict(best.params), best.number
    outcome.best_yaml = write_best(search, best, store, data_root)
    return outcome


def _open_study(search: Search, url: str, store):
    """The search's study, created or resumed; trials a dead driver left running enqueued again."""
    import optuna

    storage = make_storage(url)
    study = optuna.create_study(study_name=search.name, storage=storage, sampler=make_sampler(search.study),
                                pruner=make_pruner(search.study), direction=search.study["direction"],
                                load_if_exists=True)
    recover_stale(study, storage, store)
    return study


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


@contextlib.contextmanager
def _trackers(search: Search, store):
    """The search's ``loggers:`` (raylth.sweep.loggers): each finished trial logged from here."""
    from raylth.sweep.loggers import SearchLoggers

    if not search.loggers:
        yield None
        return
    trackers = SearchLoggers(search.loggers, search.name, store.root)
    try:
        yield trackers
    finally:
        trackers.close()


@contextlib.contextmanager
def _registered(store, name: str):
    """This driver's liveness record in the store while it runs (what another
    driver reads before it takes a RUNNING trial for a dead one's)."""
    rec = liveness.record(name=name)
    rel = f"{_driver_folder(name)}/{rec['host']}-{rec['pid']}.json"
    with liveness.heartbeat(lambda beat: store.write_file(rel, json.dumps(beat).encode()), name=name):
        try:
            yield rec
        finally:
            with contextlib.suppress(OSError, RaylthError):
                store.delete_file(rel)


def _run_trials(search: Search, study, url: str, store_root, data_root: Path, outcome: SearchOutcome,
                trackers=None, stamp: dict | None = None) -> None:
    """Trials as Ray tasks, up to ``concurrent`` at once, until n_trials are
    finished or more than max_failures failed (and none is in flight)."""
    import ray

    task = ray.remote(run_trial).options(num_cpus=search.resources["cpu"], num_gpus=search.resources["gpu"],
                                         max_retries=0)
    n_trials, concurrent, max_failures = (search.study[k] for k in ("n_trials", "concurrent", "max_failures"))
    stamp = stamp or liveness.record(name=search.name)
    in_flight: dict = {}
    while True:
        done = _finished(study)
        if len(outcome.failed) > max_failures and not in_flight:
            break
        if done >= n_trials and not in_flight:
            break
        while (len(in_flight) < concurrent and done + len(in_flight) < n_trials
               and len(outcome.failed) <= max_failures):
            trial = study.ask()
            trial.set_user_attr("driver", stamp)
            params = search.suggest(trial)
            in_flight[task.remote(search, url, trial.number, params, str(store_root), str(data_root))] = trial
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        for ref in ready:
            trial = in_flight.pop(ref)
            progress = _tell(search, study, trial, ref, outcome)
            if trackers is not None:
                _log_trial(trackers, study, trial.number, progress)


def _log_trial(trackers, study, number: int, progress: list) -> None:
    """A told trial to the trackers: its parameters, state, value, intermediate values and evaluations."""
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    try:
        trackers.log_trial(number, dict(frozen.params), frozen.state.name, frozen.value,
                           dict(frozen.intermediate_values), progress)
    except Exception as err:  # a tracker's own failure (network, quota) must not stop the search
        log.warning("trial %d was not logged to the trackers (%s: %s); the study holds it", number,
                    type(err).__name__, err)


def _tell(search: Search, study, trial, ref, outcome: SearchOutcome) -> list:
    """A finished task's result told to the study: COMPLETE, PRUNED or FAIL.
    Returns the evaluations inside its stages (none for a trial that raised)."""
    import ray
    from optuna.trial import TrialState

    outcome.run_now += 1
    try:
        result = ray.get(ref)
    except Exception as err:  # the trial raised: FAIL it (the study keeps going)
        study.tell(trial, state=TrialState.FAIL)
        outcome.failed[trial.number] = root_cause_line(err)
        log.warning("%s: trial %d failed: %s", search.name, trial.number, outcome.failed[trial.number])
        return []
    trial.set_user_attr("artifacts", result["artifacts"])
    if result.get("test_acc") is not None:  # reported, never optimised (the value is the validation score)
        trial.set_user_attr("test_acc", result["test_acc"])
    value = result.get("value")
    if result["state"] == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        log.info("%s: trial %d pruned at step %s", search.name, trial.number, result.get("step"))
    elif value is None or not math.isfinite(value):
        study.tell(trial, state=TrialState.FAIL)
        outcome.failed[trial.number] = f"objective value {value!r}"
    else:
        study.tell(trial, value)
        log.info("%s: trial %d: %.4f %s", search.name, trial.number, value, trial.params)
    return result.get("progress", [])


def _count(study, outcome: SearchOutcome) -> None:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    outcome.complete, outcome.pruned = states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED)
