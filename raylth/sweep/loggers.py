"""Experiment trackers: a sweep or search file's ``loggers:`` block.

    loggers:
      wandb: {project: lth, entity: my-team, mode: offline}   # online | offline | disabled
      mlflow: {tracking_uri: sqlite:///mlflow.db, experiment: lth}
      tensorboard: true

A sweep hands each tracker to Ray Tune as Tune's own logger callback
(``RunConfig(callbacks=...)``): every result a trial reports (each evaluation
inside a stage, each stored stage) is logged, and the trial's config (its job
label and the trial's spec flattened to dotted keys, ``train.lr``) as its
parameters. A search (``kind: search``) logs each finished Optuna trial from
its driver: the parameters, every intermediate value, the evaluations inside
its stages and the objective value. Both group runs under the sweep's name.

A tracker is one ``register_tracker(Tracker(...))`` below: its option keys
(checked like every key of the file), the package and pip extra it needs, a
builder of its Tune callback and one of its search logger.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from raylth.errors import RaylthError, SpecError, check_keys
from raylth.specs.refs import flatten

# the columns of Tune's progress table (result key -> header): the stage and the evaluation
PROGRESS_COLUMNS = {"stage": "stage", "level": "level", "epoch": "epoch", "train_loss": "train loss",
                    "test_acc": "test acc", "sparsity": "sparsity", "instability_test": "instability"}


@dataclass(frozen=True)
class Where:
    """What a tracker is built for: the sweep's (or search's) name and a local
    folder beside the results (the store's root, or its cache for a bucket)."""
    name: str
    root: Path


@dataclass(frozen=True)
class Tracker:
    name: str
    options: dict            # option key -> allowed Python types, or a tuple of allowed strings
    package: str             # the module it needs
    extra: str               # the pip extra that installs it: raylth[extra]
    tune: Callable           # (options, Where) -> a ray.tune Callback
    search: Callable         # (options, Where) -> a SearchLogger


TRACKERS: dict[str, Tracker] = {}


def register_tracker(tracker: Tracker) -> Tracker:
    TRACKERS[tracker.name] = tracker
    return tracker


# -- the block in a sweep or search file ------------------------------------------------------
def parse_loggers(raw, where: str) -> dict[str, dict]:
    """The ``loggers:`` block: {tracker: options} for the trackers switched on;
    one line naming the first wrong key, value or missing package."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: loggers must be a mapping like {{tensorboard: true, wandb: {{mode: offline}}}}")
    check_keys(raw, tuple(TRACKERS), f"{where}: loggers", "trackers")
    out = {}
    for name, value in raw.items():
        tracker, at = TRACKERS[name], f"{where}: loggers.{name}"
        if value is None or value is False:
            continue
        if value is True:
            value = {}
        if not isinstance(value, dict) or not (tracker.options or value == {}):
            keys = ", ".join(tracker.options)
            raise SpecError(f"{at}: {value!r} must be " + (f"true, false or a mapping of {keys}" if keys
                                                           else "true or false"))
        check_keys(value, tuple(tracker.options), at, f"loggers.{name} keys")
        for key, option in value.items():
            allowed = tracker.options[key]
            if isinstance(allowed[0], str):
                if value[key] not in allowed:
                    raise SpecError(f"{at}.{key}: {option!r} is not {', '.join(allowed[:-1])} or {allowed[-1]}")
            elif isinstance(option, bool) or not isinstance(option, allowed):
                raise SpecError(f"{at}.{key}: {option!r} must be a {' or '.join(t.__name__ for t in allowed)}")
        if not installed(tracker.package):
            raise SpecError(f"{at} needs {tracker.package}: pip install \"raylth[{tracker.extra}]\"")
        out[name] = dict(value)
    return out


def installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module blocked in sys.modules
        return False


def trial_configs(sweep) -> dict[str, dict]:
    """Each job's label -> its trial's spec as dotted keys: the rest of the
    job's Tune trial config, which trackers log as its parameters."""
    from raylth.stages.trials import trial_plan  # the jobs' labels (raylth.sweep.jobs)

    out: dict[str, dict] = {}
    for trial in sweep.trials:
        flat = flatten(trial.spec.to_dict(), keep_none=False)  # trackers' parameters
        for job in trial_plan(trial.label, trial.spec):
            out.setdefault(job.label, flat)
    return out


# -- a sweep: Tune's own callbacks and progress table -----------------------------------------
def tune_callbacks(loggers: dict, name: str, root) -> list:
    """Ray Tune logger callbacks for ``loggers`` (parse_loggers' output)."""
    where = Where(name, Path(root))
    return [TRACKERS[tracker].tune(options, where) for tracker, options in loggers.items()]


def progress_reporter():
    """Tune's progress table with raylth's columns (Tune's CLIReporter).
    Tune honours a reporter only with its legacy output (``tune_output``)."""
    from ray.tune import CLIReporter

    return CLIReporter(metric_columns=PROGRESS_COLUMNS, parameter_columns=["method"], max_report_frequency=10,
                       print_intermediate_tables=True)


@contextlib.contextmanager
def _environ(key: str, value: str | None):
    """``key`` set to ``value`` (unless None or already set) for the block."""
    if value is None or key in os.environ:
        yield
        return
    os.environ[key] = value
    try:
        yield
    finally:
        os.environ.pop(key, None)


@contextlib.contextmanager
def tune_output():
    """Tune's output with the reporter above: its new output engine (the
    default) ignores reporters and infers four columns from the first result;
    the legacy one shows the columns asked for. A RAY_AIR_NEW_OUTPUT the user
    set is kept."""
    with _environ("RAY_AIR_NEW_OUTPUT", "0"):
        yield


# -- a search: each finished trial logged from the driver -------------------------------------
class SearchLogger:
    """Logs one finished search trial: ``log_trial(number, params, state, value,
    intermediate {step: value}, progress [evaluation dicts])``; ``close()`` at the end."""

    def log_trial(self, number: int, params: dict, state: str, value, intermediate: dict,
                  progress: list[dict]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SearchLoggers(SearchLogger):
    """Every tracker of a search's ``loggers:`` block at once."""

    def __init__(self, loggers: dict, name: str, root):
        where = Where(name, Path(root))
        self.loggers = [TRACKERS[tracker].search(options, where) for tracker, options in loggers.items()]

    def log_trial(self, *args, **kwargs) -> None:
        for logger in self.loggers:
            logger.log_trial(*args, **kwargs)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def numeric(row: dict) -> dict:
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# -- Weights & Biases -------------------------------------------------------------------------
def _wandb_init_options(options: dict, where: Where) -> dict:
    """wandb.init's options (its folder made here)."""
    init = {"project": options.get("project") or where.name, "group": where.name,
            "dir": os.environ.get("WANDB_DIR") or str(where.root)}
    Path(init["dir"]).mkdir(parents=True, exist_ok=True)
    return init | {k: options[k] for k in ("entity", "mode") if k in options}


def _wandb_tune(options: dict, where: Where):
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    class Actor(_WandbLoggingActor):
        def run(self):
            super().run()
            # the run is finished: stop W&B's service now (else its exit hook, run as Ray ends
            # the actor, finds the service gone and prints a traceback)
            self._wandb.teardown()

    class Callback(WandbLoggerCallback):
        _logger_actor_cls = Actor

        def log_trial_end(self, trial, failed: bool = False):
            # a trial whose actor died before it started (Tune retries it) has no W&B run yet;
            # Ray's callback assumes one and raises KeyError, which ended the whole fit
            if trial in self._trial_queues:
                super().log_trial_end(trial, failed)

        def setup(self, *args, **kwargs):
            # Tune asks for an API key unless $WANDB_MODE says offline; the file's mode counts too
            with _environ("WANDB_MODE", self.kwargs.get("mode")):
                try:
                    super().setup(*args, **kwargs)
                except ValueError as err:
                    raise RaylthError(f"loggers.wandb: {err}; or set mode: offline") from None

    return Callback(**_wandb_init_options(options, where))


class _WandbSearch(SearchLogger):
    def __init__(self, options: dict, where: Where):
        self.init = _wandb_init_options(options, where)

    def log_trial(self, number, params, state, value, intermediate, progress) -> None:
        import wandb

        run = wandb.init(name=f"trial-{number}", job_type="search", config=dict(params), reinit="create_new",
                         **self.init)
        try:
            run.define_metric("intermediate_value", step_metric="intermediate_step")
            for row in progress:
                run.log(numeric(row) | {k: row[k] for k in ("stage", "artifact") if k in row})
            for step, inter in sorted(intermediate.items()):
                run.log({"intermediate_step": step, "intermediate_value": inter})
            run.summary["state"] = state
            if value is not None:
                run.summary["value"] = value
        finally:
            run.finish(exit_code=0 if state != "FAIL" else 1)


register_tracker(Tracker("wandb", {"project": (str,), "entity": (str,), "mode": ("online", "offline", "disabled")},
                         package="wandb", extra="wandb", tune=_wandb_tune, search=_WandbSearch))


# -- MLflow -----------------------------------------------------------------------------------
def _mlflow_uri(options: dict, where: Where) -> str:
    """tracking_uri, else $MLFLOW_TRACKING_URI, else a SQLite file beside the results."""
    return (options.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{where.root / 'mlflow.db'}")


def _mlflow_tune(options: dict, where: Where):
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class Callback(MLflowLoggerCallback):
        def log_trial_end(self, trial, failed: bool = False):
            # as for W&B: a trial whose actor died before it started has no run (Ray assumes one)
            if trial in getattr(self, "_trial_runs", {}):  # set up by setup(), before any trial
                super().log_trial_end(trial, failed)

    return Callback(tracking_uri=_mlflow_uri(options, where), experiment_name=options.get("experiment") or where.name,
                    tags={"sweep": where.name})


class _MlflowSearch(SearchLogger):
    def __init__(self, options: dict, where: Where):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(_mlflow_uri(options, where))
        self.name = where.name
        experiment = options.get("experiment") or where.name
        found = self.client.get_experiment_by_name(experiment)
        self.experiment = found.experiment_id if found else self.client.create_experiment(experiment)

    def log_trial(self, number, params, state, value, intermediate, progress) -> None:
        from mlflow.entities import Metric, Param

        run = self.client.create_run(self.experiment, run_name=f"trial-{number}",
                                     tags={"sweep": self.name, "trial": str(number), "state": state})
        now = int(time.time() * 1000)
        metrics = [Metric(key, v, now, step) for step, row in enumerate(progress) for key, v in numeric(row).items()]
        metrics += [Metric("intermediate_value", float(v), now, int(step)) for step, v in intermediate.items()]
        if value is not None:
            metrics.append(Metric("value", float(value), now, 0))
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(run_id, metrics=metrics[start:start + 1000])
        self.client.set_terminated(run_id, "FAILED" if state == "FAIL" else "FINISHED")


register_tracker(Tracker("mlflow", {"tracking_uri": (str,), "experiment": (str,)}, package="mlflow",
                         extra="mlflow", tune=_mlflow_tune, search=_MlflowSearch))


# -- TensorBoard ------------------------------------------------------------------------------
def _tensorboard_tune(options: dict, where: Where):
    from ray.tune.logger import TBXLoggerCallback

    return TBXLoggerCallback()  # event files in each trial's folder under <storage>/.ray


class _TensorboardSearch(SearchLogger):
    """Event files under <storage>/.ray/<search name>/trial-N (beside the sweeps' Tune runs)."""

    def __init__(self, options: dict, where: Where):
        self.folder = where.root / ".ray" / where.name

    def log_trial(self, number, params, state, value, intermediate, progress) -> None:
        from tensorboardX import SummaryWriter

        with SummaryWriter(logdir=str(self.folder / f"trial-{number}")) as writer:
            for step, row in enumerate(progress):
                for key, v in numeric(row).items():
                    writer.add_scalar(f"{row.get('stage', 'trial')}/{key}", v, step)
            for step, inter in sorted(intermediate.items()):
                writer.add_scalar("intermediate_value", float(inter), int(step))
            if value is not None:
                writer.add_scalar("value", float(value), 0)
            hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
            writer.add_hparams(hparams, {"hparam/value": float(value) if value is not None else float("nan")},
                               name="hparams")


register_tracker(Tracker("tensorboard", {}, package="tensorboardX", extra="tensorboard",
                         tune=_tensorboard_tune, search=_TensorboardSearch))
