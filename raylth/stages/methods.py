"""Methods a sweep can name: the registry. Each method is a plugin
(raylth/plugins/methods), declared once with ``register_method``: which
artifacts a trial produces (one results row each), which it prepares first,
the trial fields it reads and its checks of them, and its facts for reports.
The sweep starts each job once the jobs making what it reads have finished
(raylth.sweep.jobs finds that from the specs). Adding one: CONTRIBUTING.md,
"A sweep method".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from raylth.errors import SpecError, did_you_mean
from raylth.specs import ImpLevelSpec, Spec, TrialSpec
from raylth.specs.trial import TRIAL_CHECKS
from raylth.stages.context import StageContext
from raylth.stages.registry import IMPLIED, run_stage
from raylth.store import Artifact


@dataclass(frozen=True)
class Method:
    name: str
    artifacts: Callable[[TrialSpec], list[Spec]]
    # Its rows are pruned levels 1..levels of a trunk (so the trial needs levels >= 1).
    needs_levels: bool = False
    # Stages stored first, in order, as one job before the others (not results rows),
    # e.g. a distillation and the IMP trunk trained on it.
    prepare: Callable[[TrialSpec], list[Spec]] | None = None
    # One job per artifact (they run in parallel) instead of one job for all.
    parallel: bool = False
    # Its checks of the trial's fields it reads beyond data/model/train/prune/seeds (distill,
    # inner, start_level): one line, SpecError; run whenever such a trial is parsed.
    check: Callable[[TrialSpec], None] | None = None
    # Its networks are points of the pruning comparison (accuracy against sparsity and against
    # the training points of the pruning loop, raylth.plugins.methods.distilled's report).
    pruning: bool = True
    # Stage kinds (of the core) whose artifacts, when no sweep claims them, are this method's.
    implies: tuple[str, ...] = ()
    # Its place in the pruning comparison's tables and legends: lower first.
    order: int = 100
    # A small trial of it on digits (its fields beside method, levels, data, model): what the
    # template tests run every registered method with.
    example: dict | None = None

    def run(self, trial: TrialSpec, ctx: StageContext) -> list[Artifact]:
        for spec in self.prepare(trial) if self.prepare else ():
            run_stage(spec, ctx)
        return [run_stage(spec, ctx) for spec in self.artifacts(trial)]


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Declare a method (its plugin does, once): its recipe and its checks of a trial."""
    if METHODS.get(method.name, method) != method:
        raise ValueError(f"method {method.name!r} is registered twice")
    METHODS[method.name] = method
    IMPLIED.update(dict.fromkeys(method.implies, method.name))
    if method.check is not None:
        TRIAL_CHECKS[method.name] = method.check
    return method


def check_method_name(name: str) -> None:
    if name not in METHODS:
        raise SpecError(f"method: unknown method {name!r}{did_you_mean(name, METHODS)}; known methods are "
                        f"{', '.join(sorted(METHODS))}")


def trunk_level(trial: TrialSpec, level: int = 1) -> ImpLevelSpec:
    """Level ``level`` of the trial's IMP trunk on its real data (level 0: ``.trunk_root()``)."""
    return ImpLevelSpec(data=trial.data, model=trial.model, train=trial.train,
                        prune=trial.prune, seeds=trial.seeds, level=level)


def pruning_methods() -> tuple[str, ...]:
    """The methods whose networks the pruning comparison puts side by side, in registration order."""
    ordered = sorted(METHODS.values(), key=lambda method: method.order)
    return tuple(method.name for method in ordered if method.pruning)
