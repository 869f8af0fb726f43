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
      validation: 0.1                  # share of each class's training images held out: what trials are scored on
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
    loggers: {mlflow: {experiment: digits}}   # optional trackers, as in a sweep (raylth.sweep.loggers)

Objective, on the validation split (``study.validation`` of each class's
training images, held out of the distillation and of every training; the
test split is reported with each trial, never optimised): the distilled
set's evaluation accuracy (mean over the eval seeds), or the accuracy of the
distilled-pruning ticket at the first level whose sparsity reaches
``target_sparsity``. Intermediate values, for the pruner, are the same
quantity at a partial budget, stepped by an absolute count that means the
same in every trial: the distilled set's evaluation at fixed iteration
numbers of its distillation; the ticket's validation accuracy at each
evaluation of its real training (its iteration).

How such a search runs: raylth.search.driver.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from raylth.errors import SpecError, check_keys
from raylth.search.objectives import Objective, objective_of
from raylth.specs.distill import uses_field
from raylth.sweep.config import Trial
from raylth.specs.refs import set_dotted
from raylth.sweep.files import checked_block, checked_name, checked_resources
from raylth.sweep.loggers import parse_loggers

SEARCH_KEYS = ("kind", "name", "storage", "data_root", "resources", "study", "base", "space", "loggers")
STUDY_KEYS = ("storage", "direction", "sampler", "pruner", "n_trials", "concurrent", "seed", "max_failures",
              "intermediate", "validation")
PARAM_KEYS = ("type", "low", "high", "log", "step", "choices", "unit")
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler"}
PRUNERS = {"median": "MedianPruner", "percentile": "PercentilePruner", "hyperband": "HyperbandPruner",
           "successive_halving": "SuccessiveHalvingPruner", "none": "NopPruner"}


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


@dataclass(frozen=True)
class Search:
    name: str
    objective: Objective           # what it optimises (raylth.search.objectives)
    base: dict
    space: list[Param]
    study: dict
    storage: str | None = None
    data_root: str | None = None
    resources: dict = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    loggers: dict = field(default_factory=dict)  # tracker -> options (raylth.sweep.loggers)

    @property
    def trials(self) -> list:
        """The search's base point as a sweep trial (what ``check_trials`` checks)."""
        return [Trial("base", self.objective.as_trial(self))]

    def specs(self, params: dict):
        """One trial's specs, as its objective builds them."""
        return self.objective.specs(self, params)

    # -- specs of one trial ----------------------------------------------------------
    def tree(self, params: dict) -> dict:
        """The base with ``params`` set, its real data holding out the validation split."""
        tree = copy.deepcopy(self.base)
        for path, value in params.items():
            set_dotted(tree, path, value, f"space.{path}")
        root = tree[self.objective.data_root]
        if isinstance(root, dict):
            default = None if self.objective.data_default is None else dict(self.objective.data_default)
            data = root.get("data", default)
            if isinstance(data, dict) and not data.get("validation"):
                root["data"] = data | {"validation": self.study["validation"]}
        return tree

    def intermediate_steps(self) -> list[int]:
        return self.objective.intermediate_steps(self)

    def method_of(self, params: dict) -> str:
        group = self.objective.distill_group
        key = f"{group}.method"
        if key in params:
            return params[key]
        node = self.base
        for part in group.split("."):
            node = (node or {}).get(part) or {}
        return node.get("method", "dm")

    def applies(self, param: Param, params: dict) -> bool:
        """Define-by-run: a distillation field is searched only for the methods that use it."""
        if param.group != self.objective.distill_group or param.field == "method":
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
    objective = objective_of(base, where)
    for key in objective.required:
        if key not in base:
            raise SpecError(f"{where}: base.{key}: a {objective.name} objective needs it, e.g. "
                            f"{key}: 0.8")
    check_keys(base, objective.base_keys, f"{where}: base", f"a {objective.name} objective's base keys")
    space = _space(raw.get("space") or {}, where, objective)
    search = Search(name=name, objective=objective, base=copy.deepcopy(base), space=space, study=study,
                    storage=raw.get("storage"), data_root=raw.get("data_root"),
                    resources=checked_resources(raw.get("resources") or {}, where),
                    loggers=parse_loggers(raw.get("loggers"), where))
    for params in [{}] + [{p.path: v} for p in space for v in p.extremes()]:
        try:  # the base and every extreme of every parameter make valid specs
            search.specs(params)
        except SpecError as err:
            at = f"space.{next(iter(params))}={next(iter(params.values()))!r}: " if params else "base."
            raise SpecError(f"{where}: {at}{err}") from None
    return search


def _study(raw, where) -> dict:
    checked_block(raw, where, "study", STUDY_KEYS, "{n_trials: 20, sampler: tpe}")
    out = {"storage": None, "direction": "maximize", "sampler": "tpe", "pruner": "median", "n_trials": 20,
           "concurrent": 1, "seed": None, "max_failures": 3, "intermediate": 3, "validation": 0.1} | raw
    if out["direction"] not in ("maximize", "minimize"):
        raise SpecError(f"{where}: study.direction: {out['direction']!r} is not maximize or minimize")
    for key, minimum in (("n_trials", 1), ("concurrent", 1), ("max_failures", 0), ("intermediate", 0)):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SpecError(f"{where}: study.{key}: {value!r} must be an integer >= {minimum}")
    share = out["validation"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise SpecError(f"{where}: study.validation: {share!r} is the share of training images held out to score "
                        "trials on (the test split is never optimised); use a fraction in (0, 1), e.g. 0.1")
    for key, table in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        name, _ = split_named(out[key], f"{where}: study.{key}")
        if name not in table:
            raise SpecError(f"{where}: study.{key}: unknown {key} {name!r}; use one of {', '.join(table)}")
    if out["storage"] is not None and not isinstance(out["storage"], str):
        raise SpecError(f"{where}: study.storage: expected a URL such as sqlite:///path.db or journal:///path.log")
    return out


def split_named(value, where) -> tuple[str, dict]:
    if isinstance(value, str):
        return value, {}
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return value["name"], {k: v for k, v in value.items() if k != "name"}
    raise SpecError(f"{where}: expected a name or a mapping with name: and options")


def _space(raw, where, objective) -> list[Param]:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: space must be a mapping of dotted paths to {{type, low, high, ...}}")
    roots = objective.roots
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
