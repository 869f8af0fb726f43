"""Every stage kind, declared once, next to its runner, with its facts.

A stage module ends with ``register_stage(Stage(SpecClass, run_fn, ...))``.
Jobs, plan checks, results rows and reports read the facts from here; no
module outside this registry and the stage's own declaration switches on a
kind string. Adding a stage: CONTRIBUTING.md, "A stage".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from raylth.engine.fastpath import precision
from raylth.errors import StoreError
from raylth.specs import DataSpec, ModelSpec, Seeds, Spec, TrainSpec

if TYPE_CHECKING:
    from raylth.stages.context import StageContext
    from raylth.stages.points import Points
    from raylth.store import Artifact, Store

Recipe = tuple[DataSpec, ModelSpec, TrainSpec, Seeds]
Lookup = Callable[[str], object]  # an artifact id -> the same fact of that stored artifact


def _no_level(spec: Spec) -> int:
    return 0


def _no_origin(spec: Spec, origin_of: Lookup) -> dict:
    return {}


@dataclass(frozen=True)
class Stage:
    spec: type[Spec]
    run: Callable[[Spec, "StageContext"], "Artifact"]
    # It trains networks: a job of such stages can use DDP workers (unless it also distils).
    trains: bool = False
    # It distils: its job runs in one process (DDP would repeat the distillation on every rank).
    distills: bool = False
    # A network a method gives as its result: a results row with test accuracy, whose mask
    # (none when dense) can split a Hessian.
    method_network: bool = False
    # (data, model, train, seeds) its network was trained with; None: not a network.
    # ``store`` resolves what it reads (a child's parent).
    recipe: Callable[[Spec, "Store"], Recipe] | None = None
    # Its pruning level (0: dense, or not a level of a trunk).
    level: Callable[[Spec], int] = _no_level
    # The method a stored artifact implies when no sweep claims it: a name, or
    # (spec, method_of) -> name, method_of giving that of another stored artifact.
    method: str | Callable[[Spec, Lookup], str] | None = None
    # {dataset, model, seed, rewind[, noise]} of the network it is about, for results rows;
    # origin_of gives that of another stored artifact ({} when missing).
    origin: Callable[[Spec, Lookup], dict] = _no_origin
    # Training points of the pruning loop that produced it (reports' x axis):
    # (spec, points, row_method) -> float.
    loop_points: Callable[[Spec, "Points", str], float] | None = None
    # Its artifacts are rows of the results (False: an intermediate, e.g. a Hessian that
    # sharpness rows split).
    results_row: bool = True
    # spec -> what it computes apart from what it keeps: specs with equal keys in one job are
    # made by one run (a dense run and its save_at; raylth.sweep.jobs puts them together).
    sibling_key: Callable[[Spec], Spec] | None = None
    # spec -> the steps it keeps weights at besides the end (its start, a dense run's save_at):
    # where an analysis can spawn children from it.
    kept_steps: Callable[[Spec], tuple] = lambda spec: ()

    @property
    def kind(self) -> str:
        return self.spec.kind

    def implied_method(self, spec: Spec, method_of: Lookup) -> str:
        if self.method is None:
            return IMPLIED.get(self.kind, self.kind)
        return self.method if isinstance(self.method, str) else self.method(spec, method_of)


STAGES: dict[str, Stage] = {}
# stage kind -> the method its artifacts imply when no sweep claims them (a method plugin says so: Method.implies)
IMPLIED: dict[str, str] = {}


def register_stage(stage: Stage) -> Stage:
    if stage.kind in STAGES and STAGES[stage.kind] != stage:
        raise ValueError(f"stage kind {stage.kind!r} is registered twice")
    STAGES[stage.kind] = stage
    return stage


def stage_of(kind: str) -> Stage:
    try:
        return STAGES[kind]
    except KeyError:
        raise StoreError(f"no stage of kind {kind!r}; known kinds are {', '.join(sorted(STAGES))}") from None


def stored_spec(artifact: "Artifact") -> Spec:
    """The spec a stored artifact was made from, read with its stored meaning."""
    return stage_of(artifact.kind).spec.from_stored(artifact.spec)


def run_stage(spec: Spec, ctx: "StageContext") -> "Artifact":
    """Ask the store for ``spec``'s artifact; compute it (and what it needs) if
    missing. TF32 is allowed unless the runner declares float32 (run_distill,
    run_sharpness: ``@precision("float32")``)."""
    with precision("tf32"):
        return stage_of(spec.kind).run(spec, ctx)


def trains(specs) -> bool:
    """Whether a job of these stages trains networks (and may use DDP workers)."""
    facts = [stage_of(s.kind) for s in specs]
    return any(f.trains for f in facts) and not any(f.distills for f in facts)


def level_of(spec: Spec) -> int:
    return stage_of(spec.kind).level(spec)


def kept_steps(spec: Spec) -> tuple:
    return stage_of(spec.kind).kept_steps(spec)


def recipe_of(spec: Spec, store: "Store") -> Recipe:
    stage = stage_of(spec.kind)
    if stage.recipe is None:
        raise StoreError(f"{spec.id}: a {spec.kind} artifact is not a network")
    return stage.recipe(spec, store)


def method_network_kinds() -> tuple[str, ...]:
    return tuple(kind for kind, stage in STAGES.items() if stage.method_network)


def network_origin(data: DataSpec, model: ModelSpec, seeds: Seeds, rewind=None) -> dict:
    """A results row's origin columns for a network trained from ``seeds``."""
    return {"dataset": data.name, "model": model.name, "seed": seeds.init,
            "rewind": "" if rewind is None else str(rewind)}
