"""Sweep files: YAML -> a validated ``Sweep`` of trials.

    name: quickstart              # optional; default: the file's name
    storage: raylth-results       # optional; --storage overrides
    data_root: data               # optional; --data-root / $RAYLTH_DATA override
    workers: 1                    # DDP workers per training job (Ray Train); 1 trains in the trial
    resources: {cpu: 1, gpu: 0}   # per worker; fractions allowed (gpu: 0.25 packs 4 on a GPU)
    max_concurrent: 4             # optional bound on trials at once
    max_failures: 2               # retries of a failing trial
    loggers: {tensorboard: true}  # optional trackers: wandb, mlflow, tensorboard (raylth.sweep.loggers)
    compile: false                # torch.compile training steps (CUDA speed; same results up to float error)
    precision: auto               # auto (bf16 on CUDA, float32 on CPU) | float32 (as the references) | bf16
    base: {method: imp, levels: 12, data: {...}, model: {...}, train: {...}, prune: {...}, seed: 0}
    per_method: {imp: {prune: {rewind: 2000it}}}   # optional: fields for one method's trials
    grid: {seed: [0, 1], method: [dense, imp, random_prune]}

Grid keys are dotted paths into ``base`` (``train.lr``, ``prune.rewind``) or
the shorthands ``seed`` (sets seeds.init, .order and .augment) and ``rewind``.
A trial is ``base``, then its method's ``per_method`` block merged in (nested
mappings field by field), then its grid values.
"""

from __future__ import annotations

import copy
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from raylth.errors import SpecError
from raylth.specs import TrialSpec
from raylth.specs.refs import SHORTHANDS, set_dotted
from raylth.sweep.files import checked_block, checked_name, checked_resources, positive_int, read_yaml
from raylth.sweep.loggers import parse_loggers

SWEEP_KEYS = ("kind", "name", "storage", "data_root", "workers", "resources", "max_concurrent", "max_failures",
              "compile", "precision", "base", "per_method", "grid", "loggers")
PRECISIONS = {"auto": None, "float32": False, "bf16": True}  # -> StageContext.fast


@dataclass(frozen=True)
class Trial:
    label: str          # readable grid point, e.g. "method=imp,seed=0"
    spec: TrialSpec


@dataclass
class Sweep:
    name: str
    trials: list[Trial]
    storage: str | None = None
    data_root: str | None = None
    resources: dict = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    workers: int = 1
    compile: bool = False
    precision: str = "auto"        # how networks train (PRECISIONS); not hashed, like the device
    max_concurrent: int | None = None
    max_failures: int = 1
    source: dict = field(default_factory=dict)
    loggers: dict = field(default_factory=dict)  # tracker -> options (raylth.sweep.loggers)


def load_sweep(path: str | os.PathLike) -> Sweep:
    """A sweep file (``raylth.api.load_sweep`` also reads ``kind: search`` files)."""
    return parse_sweep(read_yaml(path), default_name=Path(path).stem, where=str(path))


def parse_sweep(raw, default_name: str = "sweep", where: str = "sweep") -> Sweep:
    if isinstance(raw, dict) and raw.get("kind") == "search":
        raise SpecError(f"{where}: kind: search is an Optuna search, not a sweep; read it with "
                        "raylth.api.load_sweep (or run it: raylth run)")
    name = checked_name(raw, SWEEP_KEYS, "sweep", default_name, where)
    if raw.get("kind", "sweep") != "sweep":
        raise SpecError(f"{where}: kind: {raw['kind']!r} is not sweep or search")
    resources = checked_resources(raw.get("resources") or {}, where)
    max_concurrent = positive_int(raw, "max_concurrent", where, optional=True)
    max_failures = positive_int(raw, "max_failures", where, optional=True, minimum=0)
    workers = positive_int(raw, "workers", where, optional=True) or 1
    if workers > 1 and 0 < resources["gpu"] < 1:
        raise SpecError(f"{where}: resources.gpu: {resources['gpu']} is a GPU fraction; DDP workers "
                        "each need whole GPUs (pack small single-worker jobs instead)")
    compile_steps = raw.get("compile", False)
    if not isinstance(compile_steps, bool):
        raise SpecError(f"{where}: compile: {compile_steps!r} must be true or false")
    precision = raw.get("precision", "auto")
    if precision not in PRECISIONS:
        raise SpecError(f"{where}: precision: {precision!r} is not one of {', '.join(PRECISIONS)} (float32 trains "
                        "as the references do; auto is bf16 on CUDA, float32 on CPU)")
    base = raw.get("base") or {}
    grid = raw.get("grid") or {}
    if not isinstance(base, dict):
        raise SpecError(f"{where}: base must be a mapping of trial fields")
    if not isinstance(grid, dict):
        raise SpecError(f"{where}: grid must be a mapping of key: [values]")
    if not base and not grid:
        raise SpecError(f"{where}: the sweep names no trial; give base: (the trial's fields) and/or "
                        "grid: (key: [values]), e.g. base: {data: {name: digits}, model: {name: lenet}}")
    trials = expand(base, grid, where, per_method=_per_method(raw.get("per_method") or {}, where))
    return Sweep(name=name, trials=trials, storage=raw.get("storage"), data_root=raw.get("data_root"),
                 resources=resources, workers=workers, compile=compile_steps, precision=precision,
                 max_concurrent=max_concurrent,
                 max_failures=1 if max_failures is None else max_failures, source=raw,
                 loggers=parse_loggers(raw.get("loggers"), where))


def _per_method(raw, where: str) -> dict:
    if not raw:
        return {}
    from raylth.stages import METHODS  # the method registry (torch): only when the block is there

    checked_block(raw, where, "per_method", tuple(METHODS), "{imp: {prune: {rewind: 2000it}}}")
    out = {}
    for method, fields in raw.items():
        if not isinstance(fields, dict) or "method" in fields:
            raise SpecError(f"{where}: per_method.{method}: must be a mapping of trial fields (not method), "
                            "e.g. {prune: {rewind: 2000it}}")
        out[method] = {}
        for key, value in fields.items():  # the grid's shorthands (seed, rewind) too
            if key == "seed" or key in SHORTHANDS:
                set_dotted(out[method], key, value, f"{where}: per_method.{method}")
            else:
                out[method] = _merged(out[method], {key: value})
    return out


def _merged(tree: dict, extra: dict) -> dict:
    """``tree`` with ``extra`` merged in: nested mappings field by field."""
    out = copy.deepcopy(tree)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def expand(base: dict, grid: dict, where: str = "sweep", per_method: dict | None = None) -> list[Trial]:
    """The cartesian product of the grid axes applied to base (and the trial's
    method's ``per_method`` fields), as trials."""
    base = copy.deepcopy(base)
    if "seed" in base:
        seed = base.pop("seed")
        set_dotted(base, "seed", seed, where)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}: grid.{key}: expected a non-empty list of values, got {values!r}")
    axes = list(grid.items())
    trials, seen = [], set()
    for combo in itertools.product(*(values for _, values in axes)):
        method = dict(zip((key for key, _ in axes), combo)).get("method", base.get("method", "imp"))
        tree = _merged(base, (per_method or {}).get(method, {})) if isinstance(method, str) else copy.deepcopy(base)
        for (key, _), value in zip(axes, combo):
            set_dotted(tree, key, value, f"{where}: grid.{key}")
        try:
            spec = TrialSpec.from_dict(tree)
        except SpecError as err:
            raise SpecError(f"{where}: {err}") from None
        label = ",".join(f"{key}={value}" for (key, _), value in zip(axes, combo)) or "base"
        if spec.id not in seen:
            seen.add(spec.id)
            trials.append(Trial(label=label, spec=spec))
    return trials
