"""Stage ``experts`` (``experts_<hash>``): MTT's expert trajectories on the
real data, shared by every MTT distillation of the same data, network,
expert options and trajectory length."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from raylth.engine.data import seed_for
from raylth.engine.distill import train_experts
from raylth.engine.fastpath import precision
from raylth.engine.models import build_model, check_model_name
from raylth.errors import SpecError
from raylth.specs import DataSpec, DistillSpec, ModelSpec, Spec
from raylth.specs.base import choice, settings
from raylth.specs.distill import ZCA_FIELDS, ZCA_SPACES, check_real_data, reset_unused_zca
from raylth.stages.context import StageContext, ensure
from raylth.stages.datasets import distill_space
from raylth.stages.registry import Stage, register_stage, stage_of
from raylth.store import Artifact, Store


@dataclass(frozen=True)
class ExpertOptions(Spec):
    """How MTT's experts are trained (``distill.experts``)."""
    kind = "expert_options"
    block = "distill.experts"
    n: int = 5              # expert trajectories
    epochs: int = 50        # at most; only max_start_epoch + expert_epochs are trained and kept
    lr: float = 0.01        # MTT's buffer.py: SGD without momentum or weight decay
    batch: int = 256
    seed: int = 0

    def validate(self):
        for name in ("n", "epochs", "batch"):
            if getattr(self, name) < 1:
                raise SpecError(f"distill.experts.{name}: {getattr(self, name)} must be >= 1")
        if self.lr <= 0:
            raise SpecError(f"distill.experts.lr: {self.lr} must be positive")


@dataclass(frozen=True)
class ExpertsSpec(ExpertOptions):
    """The trajectories themselves: ExpertOptions (n, lr, batch, seed) for one
    data set, network and space."""
    kind = "experts"
    block = None
    path_prefix = ""
    epochs: int = 20  # exactly these (the stage's default differs from the option's 50)
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=lambda: ModelSpec("conv3"))
    dsa: bool = True
    zca: bool = False
    zca_eps: float = 0.1
    zca_space: str = choice("pixels", ZCA_SPACES, id_default="normalized")
    seed: int = 0

    def unused_fields(self) -> tuple[str, ...]:
        return () if self.zca else ZCA_FIELDS

    def validate(self):
        reset_unused_zca(self)
        check_real_data(self, "experts")
        super().validate()


def experts_spec(spec) -> ExpertsSpec:
    """The expert trajectories an MTT distillation (a DistillSpec) needs: only the
    first max_start_epoch + expert_epochs epochs (later ones are never matched)."""
    return ExpertsSpec(**settings(spec.experts, ExpertOptions) | {
        "epochs": min(spec.experts.epochs, spec.max_start_epoch + spec.expert_epochs)},
        data=spec.data, model=spec.model, dsa=spec.dsa, zca=spec.zca, zca_eps=spec.zca_eps,
        zca_space=spec.zca_space)


@precision("tf32")  # trained as in the references (cuDNN's default on Ampere/Hopper)
def run_experts(spec: ExpertsSpec, ctx: StageContext) -> Artifact:
    """MTT's expert trajectories; each expert has its own generator and is
    kept in the partial folder as it finishes, so an interrupted run resumes
    at the next expert. Stored longer trajectories of the same experts serve
    a shorter need: their first epochs are these (nothing in an expert's
    training depends on how long it runs)."""
    return longer_experts(spec, ctx.store) or ensure(ctx, spec, lambda: _compute_experts(spec, ctx))


def longer_experts(spec: ExpertsSpec, store: Store) -> Artifact | None:
    """The stored experts artifact of ``spec``, or the shortest stored one
    that differs only in holding more epochs."""
    found = store.get(spec.id)
    if found is not None:
        return found
    candidates = []
    for artifact_id in store.ids_of(spec.kind):
        artifact = store.get(artifact_id)
        if artifact is None:
            continue
        other = ExpertsSpec.from_stored(artifact.spec)
        if other.id != artifact.id:  # a spec this version cannot read back as it was made
            continue
        if other.epochs > spec.epochs and other.replace(epochs=spec.epochs) == spec:
            candidates.append((other.epochs, artifact.id, artifact))
    return min(candidates)[2] if candidates else None


def _compute_experts(spec: ExpertsSpec, ctx: StageContext) -> Artifact | None:
    started = time.time()
    check_model_name(spec.model.name)
    real = ctx.dataset(spec.data)
    x, _ = distill_space(spec, real)

    def model_fn(seed: int):
        return build_model(spec.model, real.input_shape, real.num_classes, seed=seed)

    partial = ctx.store.partial(spec.id)
    writer = ctx.dist.is_main
    trajectories = []
    for i in range(spec.n):
        name = f"trajectories/expert_{i}.pt"
        if partial.has(name):
            continue
        generator = torch.Generator(device=ctx.device).manual_seed(seed_for(spec.seed, i, "expert"))
        trajectory = train_experts(x, real.train_y, model_fn, 1, spec.epochs, spec.lr, spec.batch,
                                   generator=generator, dsa=spec.dsa)[0]
        trajectories.append(trajectory)
        if writer:
            partial.save(name, torch.stack(trajectory))
    if not writer:
        return None
    metrics = {"n": spec.n, "epochs": spec.epochs, "params": int(partial.load("trajectories/expert_0.pt").shape[1]),
               "points_seen": spec.n * spec.epochs * len(real.train_y), "level": 0, "sparsity": 0.0,
               "test_acc": None, "wall_s": time.time() - started, "device": str(ctx.device), "node": ctx.node}
    return ctx.store.finish(spec, partial, metrics)


def load_experts(artifact: Artifact) -> list[list[torch.Tensor]]:
    n = int(artifact.metrics["n"])
    return [list(torch.unbind(artifact.load(f"trajectories/expert_{i}.pt"))) for i in range(n)]


def _experts_origin(spec: ExpertsSpec, origin_of=None) -> dict:
    return {"dataset": spec.data.name, "model": spec.model.name, "seed": spec.seed, "rewind": ""}


# what a distillation implies when no sweep claims it (the experts are part of one)
register_stage(Stage(ExpertsSpec, run_experts, origin=_experts_origin,
                     method=lambda spec, method_of: stage_of(DistillSpec.kind).implied_method(spec, method_of)))
