"""Optuna searches of distillation hyperparameters: ``kind: search`` files.

    kind: search
    name: distill_search_digits
    storage: raylth-results            # the results store (artifacts of every trial, cached)
    data_root: data
    resources: {cpu: 1, gpu: 0}        # per trial (a Ray task)
    study:
      storage: sqlite:///path/x.db     # default: sqlite:///<store>/optuna/<name>.db;
                                       # any SQLAlchemy URL, or journal:///path/x.log (a JournalStorage file)
      direction: maximize
      sampler: tpe                     # tpe | random; or {name: tpe, n_startup_trials: 4, ...}
      pruner: median                   # median | percentile | hyperband | successive_halving | none; or a mapping
      n_trials: 20                     # trials COMPLETE or PRUNED in the study when the search ends
      concurrent: 2                    # trials running at once
      seed: 0                          # the sampler's seed
      max_failures: 3                  # trials that may raise before the search stops
      intermediate: 3                  # distill objective: evaluations during distillation (pruning points)
    base:                              # either a distillation and its evaluation ...
      distill: {data: {name: digits}, method: dm, ipc: 10, iterations: 200, model: {name: lenet}}
      eval: {model: {name: lenet}, epochs: 300, seeds: [0, 1, 2]}
      # ... or a distilled-pruning trial and the sparsity its ticket is scored at:
      # trial: {method: distilled_imp, data: ..., model: ..., train: ..., inner: ..., distill: ...}
      # target_sparsity: 0.8
    space:                             # dotted paths into base -> Optuna distributions
      distill.method: {type: categorical, choices: [dm, gm]}
      distill.lr_img: {type: float, low: 0.1, high: 10, log: true}
      distill.iterations: {type: int, low: 50, high: 400, step: 50}
      trial.inner.duration: {type: int, low: 2, high: 16, unit: ep}   # -> "8ep"

Objective: the distilled set's evaluation accuracy (mean over the eval
seeds), or the test accuracy of the distilled-pruning ticket at the first
level whose sparsity reaches ``target_sparsity``.

How it runs: the driver (``raylth run``) keeps the study in Optuna storage,
asks for trials (define-by-run: parameters of a distillation method are
suggested only for trials of that method) and runs each as a Ray task
(``ray.remote``), up to ``concurrent`` at once. A task computes its stages
in the results store (so a repeated configuration is never recomputed)
and reports intermediate values to the study storage itself:

- distill objective: after k/(intermediate+1) of the distillation's
  iterations (step k = 1..intermediate) the current images are evaluated
  with the eval protocol on its first seed only;
- ticket objective: after each level of the distilled trunk, its network's
  real test accuracy (step = level).

After each report it asks the study's pruner (median by default: stop a
trial whose value at step k is below the median of earlier trials at k)
and, if told so, stops; nothing of the stopped distillation is stored.
The driver tells Optuna COMPLETE, PRUNED or FAIL. The search ends when
COMPLETE + PRUNED trials reach n_trials, so running the same command again
resumes the same study; trials left RUNNING by a driver that died (its
process is gone; one driver per study at a time) are marked FAIL and
enqueued again with the same parameters (Optuna's
RetryHeartbeatStaleTrialCallback). At the end the best parameters are
written as a ready-to-run sweep, ``<store>/searches/<name>-best.yaml``
(sweep name ``<name>_best``).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from raylth.errors import RaylthError, SpecError, check_keys
from raylth.specs import DistillEvalSpec, DistillSpec, TrialSpec
from raylth.specs.distill import level_for_sparsity, uses_field
from raylth.sweep.files import checked_block, checked_name, checked_resources, set_path
from raylth.sweep.paths import resolve_paths, root_cause_line

log = logging.getLogger("raylth")

SEARCH_KEYS = ("kind", "name", "storage", "data_root", "resources", "study", "base", "space")
STUDY_KEYS = ("storage", "direction", "sampler", "pruner", "n_trials", "concurrent", "seed", "max_failures",
              "intermediate")
PARAM_KEYS = ("type", "low", "high", "log", "step", "choices", "unit")
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler"}
PRUNERS = {"median": "MedianPruner", "percentile": "PercentilePruner", "hyperband": "HyperbandPruner",
           "successive_halving": "SuccessiveHalvingPruner", "none": "NopPruner"}
DISTILL_BASE_KEYS, TICKET_BASE_KEYS = ("distill", "eval"), ("trial", "target_sparsity")


# -- the search file ---------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    path: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    unit: str | None = None  # int params: "ep" or "it" -> a step string such as "8ep"

    def suggest(self, trial):
        if self.type == "categorical":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.type == "int":
            value = trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1),
                                      log=self.log)
        else:
            value = trial.suggest_float(self.path, float(self.low), float(self.high), step=self.step,
                                        log=self.log)
        return self.render(value)

    def render(self, value):
        return f"{int(value)}{self.unit}" if self.unit else value

    def extremes(self) -> list:
        if self.type == "categorical":
            return list(self.choices)
        return [self.render(self.low), self.render(self.high)]

    @property
    def field(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def group(self) -> str:
        return self.path.rsplit(".", 1)[0] if "." in self.path else ""


@dataclass
class Search:
    name: str
    objective: str                 # "distill" or "ticket"
    base: dict
    space: list[Param]
    study: dict
    storage: str | None = None
    data_root: str | None = None
    resources: dict = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    source: dict = field(default_factory=dict)

    @property
    def trials(self) -> list:
        """The search's base point as a sweep trial (what ``check_trials`` checks)."""
        from raylth.sweep.config import Trial

        if self.objective == "ticket":
            return [Trial("base", self.ticket_spec({})[0])]
        distill, evaluation = self.distill_specs({})
        spec = TrialSpec(method="distill", data=distill.data, distill=distill.replace(data=None),
                         distill_eval=evaluation.replace(distill=None))
        return [Trial("base", spec)]

    # -- specs of one trial ----------------------------------------------------------
    def tree(self, params: dict) -> dict:
        tree = copy.deepcopy(self.base)
        for path, value in params.items():
            set_path(tree, path, value, f"space.{path}")
        return tree

    def distill_specs(self, params: dict) -> tuple[DistillSpec, DistillEvalSpec]:
        tree = self.tree(params)
        distill = DistillSpec.from_dict(tree["distill"], "distill")
        if distill.data is None:
            raise SpecError("base.distill.data: name the real data set, e.g. data: {name: digits}")
        return distill, DistillEvalSpec.from_dict(tree.get("eval") or {}, "eval").of(distill)

    def ticket_spec(self, params: dict) -> tuple[TrialSpec, int]:
        tree = self.tree(params)
        trial = TrialSpec.from_dict(tree["trial"], "trial")
        if trial.method != "distilled_imp":
            raise SpecError(f"base.trial.method: {trial.method!r}; a ticket objective scores method distilled_imp")
        level = level_for_sparsity(float(tree["target_sparsity"]), trial.prune.fraction)
        return trial.replace(levels=level), level

    def method_of(self, params: dict) -> str:
        group = "distill" if self.objective == "distill" else "trial.distill"
        key = f"{group}.method"
        if key in params:
            return params[key]
        node = self.base
        for part in group.split("."):
            node = (node or {}).get(part) or {}
        return node.get("method", "dm")

    def applies(self, param: Param, params: dict) -> bool:
        """Define-by-run: a distillation field is searched only for the methods that use it."""
        if param.group not in ("distill", "trial.distill") or param.field == "method":
            return True
        return uses_field(self.method_of(params), param.field)

    def suggest(self, trial) -> dict:
        params = {}
        for param in sorted(self.space, key=lambda p: p.field != "method"):  # the method first
            if self.applies(param, params):
                params[param.path] = param.suggest(trial)
        return params


def parse_search(raw, default_name: str = "search", where: str = "search") -> Search:
    name = checked_name(raw, SEARCH_KEYS, "search", default_name, where)
    study = _study(raw.get("study") or {}, where)
    base = raw.get("base")
    if not isinstance(base, dict) or not base:
        raise SpecError(f"{where}: base: expected distill: + eval: (a distillation) or trial: + "
                        "target_sparsity: (a distilled-pruning ticket)")
    if "trial" in base:
        objective, keys = "ticket", TICKET_BASE_KEYS
        if "target_sparsity" not in base:
            raise SpecError(f"{where}: base.target_sparsity: a ticket objective needs the sparsity to score, "
                            "e.g. 0.8")
    elif "distill" in base:
        objective, keys = "distill", DISTILL_BASE_KEYS
    else:
        raise SpecError(f"{where}: base: expected distill: (with eval:) or trial: (with target_sparsity:)")
    check_keys(base, keys, f"{where}: base", f"a {objective} objective's base keys")
    space = _space(raw.get("space") or {}, where, objective)
    search = Search(name=name, objective=objective, base=copy.deepcopy(base), space=space, study=study,
                    storage=raw.get("storage"), data_root=raw.get("data_root"),
                    resources=checked_resources(raw.get("resources") or {}, where), source=copy.deepcopy(raw))
    for params in [{}] + [{p.path: v} for p in space for v in p.extremes()]:
        try:  # the base and every extreme of every parameter make valid specs
            search.distill_specs(params) if objective == "distill" else search.ticket_spec(params)
        except SpecError as err:
            at = f"space.{next(iter(params))}={next(iter(params.values()))!r}: " if params else "base."
            raise SpecError(f"{where}: {at}{err}") from None
    return search


def _study(raw, where) -> dict:
    checked_block(raw, where, "study", STUDY_KEYS, "{n_trials: 20, sampler: tpe}")
    out = {"storage": None, "direction": "maximize", "sampler": "tpe", "pruner": "median", "n_trials": 20,
           "concurrent": 1, "seed": None, "max_failures": 3, "intermediate": 3} | raw
    if out["direction"] not in ("maximize", "minimize"):
        raise SpecError(f"{where}: study.direction: {out['direction']!r} is not maximize or minimize")
    for key, minimum in (("n_trials", 1), ("concurrent", 1), ("max_failures", 0), ("intermediate", 0)):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SpecError(f"{where}: study.{key}: {value!r} must be an integer >= {minimum}")
    for key, table in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        name, _ = _named(out[key], f"{where}: study.{key}")
        if name not in table:
            raise SpecError(f"{where}: study.{key}: unknown {key} {name!r}; use one of {', '.join(table)}")
    if out["storage"] is not None and not isinstance(out["storage"], str):
        raise SpecError(f"{where}: study.storage: expected a URL such as sqlite:///path.db or journal:///path.log")
    return out


def _named(value, where) -> tuple[str, dict]:
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return value["name"], {k: v for k, v in value.items() if k != "name"}
    raise SpecError(f"{where}: expected a name or a mapping with name: and options")


def _space(raw, where, objective) -> list[Param]:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: space must be a mapping of dotted paths to {{type, low, high, ...}}")
    roots = DISTILL_BASE_KEYS if objective == "distill" else ("trial",)
    params = []
    for path, spec in raw.items():
        at = f"{where}: space.{path}"
        if not isinstance(path, str) or path.split(".")[0] not in roots or "." not in path:
            raise SpecError(f"{at}: a parameter is a dotted path into base starting with "
                            f"{' or '.join(r + '.' for r in roots)}")
        if not isinstance(spec, dict):
            raise SpecError(f"{at}: expected a mapping such as {{type: float, low: 0.1, high: 10, log: true}}")
        check_keys(spec, PARAM_KEYS, at, "parameter keys")
        kind = spec.get("type")
        if kind not in ("float", "int", "categorical"):
            raise SpecError(f"{at}.type: {kind!r} is not float, int or categorical")
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise SpecError(f"{at}.choices: a categorical parameter needs a non-empty list of choices")
            params.append(Param(path, kind, choices=tuple(choices)))
            continue
        low, high = spec.get("low"), spec.get("high")
        for key, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    (kind == "int" and not float(value).is_integer()):
                raise SpecError(f"{at}.{key}: {value!r} must be a{'n integer' if kind == 'int' else ' number'}")
        if low > high:
            raise SpecError(f"{at}: low {low} is above high {high}")
        log_scale = bool(spec.get("log", False))
        if log_scale and low <= 0:
            raise SpecError(f"{at}.low: {low} must be positive on a log scale")
        unit = spec.get("unit")
        if unit is not None and (kind != "int" or unit not in ("ep", "it")):
            raise SpecError(f"{at}.unit: {unit!r}; only int parameters take unit: ep or it (steps like 8ep)")
        params.append(Param(path, kind, low=low, high=high, log=log_scale, step=spec.get("step"), unit=unit))
    return params


# -- Optuna objects -------------------------------------------------------------------------
def default_study_storage(store_root, name: str) -> str:
    """A SQLite file beside the results; a bucket cannot hold one."""
    if not isinstance(store_root, Path):
        raise SpecError(f"study.storage: results go to {store_root}, where a SQLite study cannot live; set "
                        "study.storage to a database URL (postgresql://...) or journal:///shared/path/NAME.log")
    return f"sqlite:///{store_root / 'optuna' / f'{name}.db'}"


def make_storage(url: str):
    """An Optuna storage for ``url``: journal:///path (JournalStorage file), else an RDB URL."""
    import optuna

    if url.startswith("journal://"):
        path = Path(url[len("journal://"):]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        return JournalStorage(JournalFileBackend(str(path)))
    kwargs = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}}  # concurrent trial tasks write too
    return optuna.storages.RDBStorage(url, **kwargs)


def make_sampler(study: dict):
    import optuna

    name, options = _named(study["sampler"], "study.sampler")
    if name == "tpe":
        options = {"seed": study["seed"], "constant_liar": study["concurrent"] > 1} | options
    elif study["seed"] is not None:
        options = {"seed": study["seed"]} | options
    try:
        return getattr(optuna.samplers, SAMPLERS[name])(**options)
    except TypeError as err:
        raise SpecError(f"study.sampler: {err}") from None


def make_pruner(study: dict):
    import optuna

    name, options = _named(study["pruner"], "study.pruner")
    try:
        return getattr(optuna.pruners, PRUNERS[name])(**options)
    except TypeError as err:
        raise SpecError(f"study.pruner: {err}") from None


def optuna_experimental_warning():
    import optuna

    return optuna.exceptions.ExperimentalWarning


def _quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# -- one trial (a Ray task) -------------------------------------------------------------------
class _Reporter:
    """Reports intermediate values of one trial to the study storage and asks the pruner."""

    def __init__(self, study, storage, trial_id: int):
        self.study, self.storage, self.trial_id = study, storage, trial_id
        self.last_step = None

    def __call__(self, value: float, step: int) -> None:
        import optuna

        self.storage.set_trial_intermediate_value(self.trial_id, step, float(value))
        self.last_step = step
        if self.study.pruner.prune(self.study, self.storage.get_trial(self.trial_id)):
            raise optuna.TrialPruned(f"pruned at step {step} (value {value:.4f})")


def run_trial(raw: dict, name: str, study_url: str, number: int, params: dict, store_root: str,
              data_root: str) -> dict:
    """One search trial in this process: its stages in the store, its
    intermediate values in the study. Returns {'state', 'value', 'artifacts'}."""
    import optuna
    import torch

    from raylth.stages import StageContext
    from raylth.store import Store

    _quiet_optuna()
    search = parse_search(raw, name, "search")
    storage = make_storage(study_url)
    study = optuna.load_study(study_name=name, storage=storage, pruner=make_pruner(search.study))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number)
    reporter = _Reporter(study, storage, trial_id)
    ids: list[str] = []
    torch.set_num_threads(max(1, int(search.resources["cpu"] or 1)))
    ctx = StageContext(store=Store(store_root), data_root=Path(data_root))
    try:
        if search.objective == "distill":
            value = _distill_objective(search, params, ctx, reporter, ids)
        else:
            value = _ticket_objective(search, params, ctx, reporter, ids)
    except optuna.TrialPruned:
        return {"state": "pruned", "value": None, "artifacts": ids, "step": reporter.last_step}
    return {"state": "complete", "value": value, "artifacts": ids}


def _distill_objective(search: Search, params, ctx, reporter, ids) -> float:
    from raylth.engine.distill import evaluate_images
    from raylth.engine.models import build_model
    from raylth.stages import run_stage
    from raylth.stages.distill import evaluation_lr, run_distill

    distill, evaluation = search.distill_specs(params)
    ids += [distill.id, evaluation.id]
    m = search.study["intermediate"]
    at = {max(1, round(k * distill.iterations / (m + 1))): k for k in range(1, m + 1)} if distill.iterations else {}

    def monitor(progress) -> None:
        step = at.get(progress.iteration)
        if step is None:
            return
        real = progress.real

        def model_fn(seed):
            return build_model(evaluation.model, real.input_shape, real.num_classes, seed=seed)

        # the final objective's evaluation (run_stage below), with the lr learned so far
        result = evaluate_images(progress.images.clone(), progress.labels, real, model_fn,
                                 epochs=evaluation.epochs, lr=evaluation_lr(evaluation.lr, progress.lr),
                                 batch_size=evaluation.batch_size, seeds=[evaluation.seeds[0]],
                                 dsa=evaluation.dsa, zca=progress.zca, factor=progress.factor)
        reporter(result["mean"], step)

    run_distill(distill, ctx, monitor=monitor)
    return float(run_stage(evaluation, ctx).metrics["test_acc"])


def _ticket_objective(search: Search, params, ctx, reporter, ids) -> float:
    from raylth.stages import run_stage
    from raylth.stages.ticket import distilled_imp_prepare, ticket

    trial, level = search.ticket_spec(params)
    prepare = distilled_imp_prepare(trial)
    target = ticket(trial, level)
    ids += [prepare[0].id, target.id]
    trunk_ids = {s.id for s in prepare[1:]}

    def progress(metrics: dict) -> None:  # each trunk level trained now: its real test accuracy
        if metrics.get("artifact") in trunk_ids and metrics.get("test_acc") is not None:
            reporter(metrics["test_acc"], int(metrics.get("level", 0)))

    ctx.report = progress
    for spec in prepare:
        run_stage(spec, ctx)
    ctx.report = None
    return float(run_stage(target, ctx).metrics["test_acc"])


# -- the driver -------------------------------------------------------------------------------------
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
    from raylth.stages.distill import check_distill
    from raylth.store import Store
    from raylth.sweep.config import Sweep, Trial
    from raylth.sweep.plan import check_trials

    ctx = StageContext(store=Store(store_root), data_root=data_root)
    variants = [{}] + [{p.path: v} for p in search.space for v in p.extremes()]
    for params in variants:
        at = "".join(f"space.{path}={value!r}: " for path, value in params.items())
        where = f"{search.name}: {at}"
        try:
            if search.objective == "distill":
                distill, _ = search.distill_specs(params)
                check_distill(distill, ctx)  # loads (or fetches) the data set once
            else:
                trial, _ = search.ticket_spec(params)
                check_trials(Sweep(search.name, [Trial("base", trial)]), data_root)
                check_distill(trial.distill.replace(data=trial.data), ctx)
        except RaylthError as err:
            raise type(err)(f"{where}{err}") from None


def _driver_stamp() -> dict:
    stamp = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        import psutil
        stamp["started"] = psutil.Process().create_time()
    except Exception:  # psutil missing: pid alone
        pass
    return stamp


def _alive(stamp: dict | None) -> bool:
    """Whether the driver that started a trial still runs (only checkable on this host)."""
    if not stamp or stamp.get("host") != socket.gethostname():
        return False  # one driver per study: a RUNNING trial from elsewhere is a dead driver's
    try:
        import psutil
        return psutil.pid_exists(stamp["pid"]) and psutil.Process(stamp["pid"]).create_time() == stamp.get("started")
    except Exception:
        return False


def recover_stale(study, storage) -> int:
    """RUNNING trials whose driver is gone: FAIL, and enqueued again with the same parameters."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna_experimental_warning())
        retry = RetryHeartbeatStaleTrialCallback(max_retry=None)
    study_id = storage.get_study_id_from_name(study.study_name)
    recovered = 0
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _alive(frozen.user_attrs.get("driver")):
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
    import optuna
    from optuna.trial import TrialState

    from raylth.store import Store

    store_root, data_root = resolve_paths(search, storage, data_root)
    check_search(search, store_root, data_root)  # before anything is written
    url = search.study["storage"] or default_study_storage(store_root, search.name)
    store = Store(store_root)
    _quiet_optuna()
    store.root.mkdir(parents=True, exist_ok=True)
    optuna_storage = make_storage(url)
    study = optuna.create_study(study_name=search.name, storage=optuna_storage, sampler=make_sampler(search.study),
                                pruner=make_pruner(search.study), direction=search.study["direction"],
                                load_if_exists=True)
    recover_stale(study, optuna_storage)
    outcome = SearchOutcome(search.name, store.location, url)
    n_trials, concurrent = search.study["n_trials"], search.study["concurrent"]

    def finished() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    if finished() < n_trials:
        import ray

        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=True)
        task = ray.remote(run_trial).options(num_cpus=search.resources["cpu"], num_gpus=search.resources["gpu"],
                                             max_retries=0)
        stamp = _driver_stamp()
        in_flight: dict = {}
        while True:
            done = finished()
            if len(outcome.failed) > search.study["max_failures"] and not in_flight:
                break
            if done >= n_trials and not in_flight:
                break
            while (len(in_flight) < concurrent and done + len(in_flight) < n_trials
                   and len(outcome.failed) <= search.study["max_failures"]):
                trial = study.ask()
                trial.set_user_attr("driver", stamp)
                params = search.suggest(trial)
                ref = task.remote(search.source, search.name, url, trial.number, params, str(store_root),
                                  str(data_root))
                in_flight[ref] = trial
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                trial = in_flight.pop(ref)
                outcome.run_now += 1
                try:
                    result = ray.get(ref)
                except Exception as err:  # the trial raised: FAIL it (the study keeps going)
                    study.tell(trial, state=TrialState.FAIL)
                    outcome.failed[trial.number] = root_cause_line(err)
                    log.warning("%s: trial %d failed: %s", search.name, trial.number, outcome.failed[trial.number])
                    continue
                trial.set_user_attr("artifacts", result["artifacts"])
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


def _count(study, outcome: SearchOutcome) -> None:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    outcome.complete, outcome.pruned = states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED)


def best_sweep(search: Search, params: dict, store_root, data_root: Path) -> dict:
    """The best trial's parameters as a normal raylth sweep."""
    sweep = {"name": f"{search.name}_best", "storage": str(store_root), "data_root": str(data_root),
             "resources": dict(search.resources)}
    if search.objective == "distill":
        distill, evaluation = search.distill_specs(params)
        base = {"method": "distill", "data": _readable(distill.data),
                "distill": {k: v for k, v in _readable(distill).items() if k != "data"},
                "distill_eval": {k: v for k, v in _readable(evaluation).items() if k not in ("distill", "random")}}
    else:
        trial, _ = search.ticket_spec(params)
        base = _readable(trial)
    sweep["base"] = base
    return sweep


def _readable(spec) -> dict:
    """Fields that differ from their defaults, but every data set and model by name."""
    import dataclasses

    from raylth.specs import Spec

    out = spec.to_dict(omit_defaults=True)
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, Spec) and (f.name in out or hasattr(value, "name")):
            out[f.name] = _readable(value)
    if hasattr(spec, "name") and "name" in {f.name for f in dataclasses.fields(spec)}:
        out = {"name": spec.name} | out
    return out


def write_best(search: Search, best, store, data_root: Path) -> Path:
    """The best sweep, in the store (and, for a bucket, in this machine's cache: the path returned)."""
    params = {p.path: p.render(best.params[p.path]) for p in search.space if p.path in best.params}
    sweep = best_sweep(search, params, store.uri, data_root)
    rel = f"searches/{search.name}-best.yaml"  # not sweeps/: that holds sweep records
    path = store.root / rel
    header = (f"# Best of study {search.name!r}: trial {best.number}, value {best.value:.6g} "
              f"({time.strftime('%Y-%m-%d %H:%M:%S')}).\n# Run it with: raylth run {path}\n")
    store.write_file(rel, (header + yaml.safe_dump(sweep, sort_keys=False)).encode())
    return path
