"""What every stage needs besides its spec, and the one way stages train and store."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from raylth.engine.data import Dataset, load_dataset
from raylth.engine.distributed import Dist
from raylth.engine.fastpath import FastPath
from raylth.engine.masks import Mask, sparsity
from raylth.engine.models import build_model
from raylth.engine.train import Trainer, default_device
from raylth.specs.refs import checkpoint_name
from raylth.stages.memory import check_training
from raylth.specs import DataSpec, ModelSpec, Seeds, Spec, Step, TrainSpec
from raylth.store import Artifact, Store


@dataclass
class StageContext:
    store: Store
    data_root: Path = Path("data")
    device: torch.device = field(default_factory=default_device)
    report: Callable[[dict], None] | None = None  # progress (e.g. ray.tune.report)
    on_eval: Callable[[dict], None] | None = None  # each evaluation inside a stage (live_progress)
    dist: Dist = field(default_factory=Dist)      # this process among DDP workers
    node: str | None = None                       # the cluster node, recorded in metrics
    compile: bool = False                         # torch.compile the training step (not hashed)
    fast: bool | None = None                      # bf16/channels_last/fused; None: RAYLTH_FAST_PATH, else CUDA
    planned: tuple = ()                           # the job's specs: siblings of a dense run train with it
    _data: dict = field(default_factory=dict, repr=False)

    def dataset(self, spec: DataSpec) -> Dataset:
        """Load once per process and keep it on the training device."""
        key = spec.canonical()
        if key not in self._data:
            self._data[key] = load_dataset(spec, self.data_root, store=self.store).to(self.device)
        return self._data[key]

    @property
    def fast_path(self) -> FastPath:
        """How networks run here (not hashed, like the device; recorded in metrics as ``precision``)."""
        return FastPath.for_device(self.device, self.fast)

    def model(self, spec: ModelSpec, data: Dataset, seed: int) -> nn.Module:
        return build_model(spec, data.input_shape, data.num_classes, seed=seed)

    def evaluation_model(self, spec: ModelSpec, data: Dataset, seed: int) -> nn.Module:
        """A network to load weights into and evaluate, on the device in the fast path's layout."""
        return self.fast_path.prepare(self.model(spec, data, seed))


def ensure(ctx: StageContext, spec: Spec, compute: Callable[[], Artifact]) -> Artifact:
    """The stored artifact of ``spec``; ``compute()`` it only when missing,
    holding the store's lock so concurrent trials never compute it twice.
    Under DDP rank 0 decides and holds the lock; every rank computes (trains)
    and reads the artifact rank 0 stored."""
    dist = ctx.dist
    if dist.world == 1:
        done = ctx.store.get(spec.id)
        if done is not None:
            return done
        with ctx.store.lock(spec.id):
            return ctx.store.get(spec.id) or compute()
    if dist.broadcast(dist.is_main and ctx.store.get(spec.id) is not None):
        return ctx.store.get(spec.id)
    with ctx.store.lock(spec.id) if dist.is_main else contextlib.nullcontext():
        if not dist.broadcast(dist.is_main and ctx.store.get(spec.id) is not None):
            compute()
        dist.barrier()
    return ctx.store.get(spec.id)


def live_progress(ctx: StageContext, spec: Spec, values: dict, **more) -> None:
    """One evaluation inside a stage to ``ctx.on_eval`` (a Tune trial: its progress
    table and trackers): the stage kind and artifact with ``values`` and ``more``
    (level, sparsity), None values left out. The stored history is unchanged."""
    if ctx.on_eval:
        row = {"stage": spec.kind, **more, **values, "artifact": spec.id}
        ctx.on_eval({k: v for k, v in row.items() if v is not None})


def resume_every_s() -> float:
    """Seconds between saves of the resume state (RAYLTH_RESUME_EVERY_S, default 30)."""
    return float(os.environ.get("RAYLTH_RESUME_EVERY_S", "30"))


def train_and_store(ctx: StageContext, spec: Spec, *, data: DataSpec, model: nn.Module,
                    train: TrainSpec, seeds: Seeds, mask: Mask | None = None,
                    start_step: Step | None = None, keep: tuple[Step, ...] = (),
                    extra_metrics: dict | None = None) -> Artifact:
    """Train ``model`` under ``train`` and store the result as ``spec``'s artifact.

    Resumes from the partial folder's latest epoch state when one exists.
    Stores weights at init (or the start step), at each step in ``keep`` and
    at the end, the mask, and metrics with the evaluation history."""
    dataset = ctx.dataset(data)
    check_training(spec.kind, model, train, dataset, ctx.device)
    trainer = Trainer(model, dataset, train, seeds, augment=dataset.augment, mask=mask, device=ctx.device,
                      dist=ctx.dist, compile=ctx.compile, fast=ctx.fast_path.on)
    partial = ctx.store.partial(spec.id)
    writer = partial if ctx.dist.is_main else None  # only rank 0 writes
    started = time.time()
    resumed_at = None
    start = trainer.iterations(start_step) if start_step is not None else 0
    saves = _save_plan(trainer, start, start_step, keep)
    if ctx.dist.broadcast(partial.has("resume.pt")):  # every rank reads it from the shared store
        state = partial.load("resume.pt")
        trainer.load_state_dict(state["trainer"])
        started -= state["wall_s"]
        resumed_at = trainer.step
    else:
        if mask is not None and writer:
            writer.save("mask.pt", mask)
        trainer.start_at(start)

    def on_save(step: int, weights: dict) -> None:
        if writer:
            for name in sorted(saves[step]):
                writer.save(f"weights/{name}.pt", weights)

    last_saved = [time.time()]

    def on_epoch(t: Trainer) -> None:
        # At epoch ends (where a resumed run equals an uninterrupted one), at most
        # every resume_every_s(): saving after each of thousands of tiny epochs
        # (distilled sets) would cost more than the training.
        if writer and time.time() - last_saved[0] >= resume_every_s():
            writer.save("resume.pt", {"trainer": t.state_dict(), "wall_s": time.time() - started})
            last_saved[0] = time.time()

    level, pruned = (extra_metrics or {}).get("level"), sparsity(mask) if mask is not None else 0.0
    on_eval = (lambda entry: live_progress(ctx, spec, entry, level=level, sparsity=pruned)) if ctx.on_eval else None
    with writer.heartbeat() if writer else contextlib.nullcontext():  # alive while an epoch runs long
        history = trainer.run(save_at=saves, on_save=on_save, on_epoch=on_epoch, on_eval=on_eval)
    if writer:
        writer.save("weights/final.pt", trainer.weights())
    metrics = _training_metrics(ctx, trainer, history, start, pruned, time.time() - started)
    metrics |= (extra_metrics or {}) | {"workers": ctx.dist.world, "node": ctx.node, "resumed_at": resumed_at}
    artifact = ctx.store.finish(spec, partial, metrics) if writer else None
    if ctx.report:
        ctx.report({k: v for k, v in metrics.items() if k != "history"} | {"artifact": spec.id})
    return artifact


def _save_plan(trainer: Trainer, start: int, start_step: Step | None, keep: tuple[Step, ...]) -> dict[int, set[str]]:
    """Iteration -> the checkpoint names stored there, each under the name its spec
    writes (1ep and 20it may be one iteration: both are kept)."""
    saves: dict[int, set[str]] = {}
    for step in keep:
        saves.setdefault(0 if step.is_zero() else trainer.iterations(step), set()).add(checkpoint_name(step))
    saves.setdefault(start, set()).add("init" if start == 0 else checkpoint_name(start_step))
    return saves


def _training_metrics(ctx: StageContext, trainer: Trainer, history: list[dict], start: int,
                      pruned: float, wall_s: float) -> dict:
    final = history[-1] if history else {}
    return {
        "test_acc": final.get("test_acc"), "test_loss": final.get("test_loss"),
        "best_test_acc": max((h["test_acc"] for h in history), default=None),
        "val_acc": final.get("val_acc"),
        "sparsity": pruned,
        "steps": trainer.total_steps - start, "steps_per_epoch": trainer.steps_per_epoch,
        "points_seen": trainer.points_seen(trainer.total_steps) - trainer.points_seen(start),
        "wall_s": wall_s, "device": str(ctx.device), "precision": trainer.fast.name,
        "history": history,
    }
