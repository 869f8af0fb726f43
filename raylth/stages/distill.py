"""Stages ``distill``, ``experts`` and ``distill_eval``; distilled sets as training data.

A distill artifact holds ``distilled.pt``: a ``distilled_record`` (flat
tensors: ``images``/``labels`` as training data, decoded when factor > 1,
in the normalised space or, with zca, the whitened one (ZCA fitted on the
real training split in ``zca_space``: raw [0, 1] pixels as MTT, or normalised
images in sets made before); ``mean``/``std`` = 0/1; ``source_mean``/
``source_std`` of the real data; ``zca_*`` (``zca_input_scale`` for a
pixel-space ZCA); ``factor``; the
learned ``lr`` for MTT). Without ZCA it is also loadable by the ``tensors``
data set (``DataSpec('tensors', path=<artifact>/distilled.pt, test=<real>)``).
As training data inside raylth it is ``DataSpec(name='distilled', path=<the
distill artifact id>, test=<real set>)``, a data set of the registry whose loader
reads the store (raylth.stages.datasets): training images as stored, the real test split
normalised or, for a whitened set, ZCA-whitened with the stored matrix from
the space it was fitted in.

Every input problem (ipc above a class's image count, a model or data set
that does not exist, an import file with wrong shapes or labels) is raised
by ``check_distill`` before anything is stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from raylth.engine.data import Dataset, seed_for
from raylth.engine.distill import Zca, distilled_record
from raylth.engine.distill.init import class_labels
from raylth.engine.fastpath import precision
from raylth.engine.models import build_model, check_model_name
from raylth.errors import SpecError
from raylth.specs import DistillSpec
from raylth.specs.distill import DistillMethod, register_distill_method
from raylth.stages.context import StageContext, ensure, live_progress
from raylth.stages.datasets import RECORD, distill_space
from raylth.stages.registry import Stage, register_stage
from raylth.store import Artifact


# -- checks, before anything is stored -------------------------------------------------
def check_distill(spec: DistillSpec, ctx: StageContext) -> Dataset:
    """Raise one SpecError/DataError naming the field or file; returns the real set."""
    if spec.data is None:
        raise SpecError("distill.data: name the real data set to distil, e.g. data: {name: digits}")
    if spec.data.name == "distilled":
        raise SpecError("distill.data: distil a real data set, not a distilled one")
    method = spec.distill_method
    if method.synthesizes:
        check_model_name(spec.model.name)
    real = ctx.dataset(spec.data)
    _, height, width = real.input_shape
    if spec.factor > 1 and (height % spec.factor or width % spec.factor):
        raise SpecError(f"distill.factor: {spec.factor} does not divide {spec.data.name}'s image size "
                        f"{height}x{width}")
    if method.inputs is not None:  # the method's own check of what it reads (an import: its files)
        method.inputs(spec, ctx, real)
    else:
        check_class_sizes(real, spec.ipc * (spec.factor ** 2 if spec.init == "real" else 1),
                          spec.data.name, "distill.ipc", spec.ipc, spec.factor)
    return real


def check_class_sizes(real: Dataset, needed: int, name: str, field: str, ipc: int, factor: int = 1) -> None:
    counts = torch.bincount(real.train_y.cpu(), minlength=real.num_classes)
    smallest = int(counts.min())
    if smallest < needed:
        c = int(counts.argmin())
        per = f"{ipc} images per class" + (f" x factor^2 = {needed} real images" if factor > 1 else "")
        raise SpecError(f"{field}: {per}, but class {c} of {name} has only {smallest} training images; "
                        f"use ipc <= {smallest // (factor ** 2 if factor > 1 else 1)}")


# -- distill ----------------------------------------------------------------------------
@dataclass
class Progress:
    """What a distillation monitor sees after an iteration."""
    iteration: int       # iterations done
    iterations: int      # of the distillation's total
    loss: float
    images: torch.Tensor  # the stored (mosaic) images after this iteration, detached
    labels: torch.Tensor
    factor: int
    zca: Zca | None
    real: Dataset
    lr: float | None = None  # MTT: the student lr learned so far


Monitor = Callable[[Progress], None]


@dataclass
class Synthesis:
    """What a synthesising method's run function gets: the real training
    images in the distillation's space, the network maker, and the options
    every method shares (ipc, iterations, lr_img, dsa, init, generator, callback)."""
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    model_fn: Callable[[int], torch.nn.Module]
    common: dict
    low_memory: bool = False  # MTT: as asked, or chosen because only that fits (raylth.stages.memory)


@dataclass
class Distilled:
    images: torch.Tensor
    labels: torch.Tensor
    zca: Zca | None = None
    lr: float | None = None                     # MTT: the learned student lr
    extra: dict = field(default_factory=dict)   # more metrics


@dataclass(frozen=True)
class Distiller(DistillMethod):
    """A distillation method as its plugin declares it (raylth/plugins/distillers):
    the spec's side (DistillMethod: its fields, checks, defaults) and how it
    runs: ``run(spec, ctx, real, synthesis) -> Distilled`` (synthesis None for
    a method that synthesises nothing), ``fits(spec, real, device) ->
    low_memory`` before anything starts (raise WontFitError), ``inputs(spec,
    ctx, real)`` checking what it reads before anything is stored (default:
    enough real images per class)."""
    inputs: Callable | None = None


def register_distiller(distiller: Distiller) -> Distiller:
    """Declare a distillation method: one call, its spec fields and its runner."""
    return register_distill_method(distiller)


@precision("float32")  # the matching losses and the MTT unroll: no TF32
def run_distill(spec: DistillSpec, ctx: StageContext, monitor: Monitor | None = None) -> Artifact:
    """The stored distilled set of ``spec``; distilled when missing. ``monitor``
    (e.g. a search's pruning check) is called after every iteration of a
    distillation computed now; it may raise to stop it (nothing is stored)."""
    done = ctx.store.get(spec.id)
    if done is not None:
        return done
    real = check_distill(spec, ctx)
    fits = spec.distill_method.fits
    low_memory = fits(spec, real, ctx.device) if fits is not None else False
    return ensure(ctx, spec, lambda: _compute_distill(spec, ctx, real, monitor, low_memory))


def _synthesis(spec: DistillSpec, ctx: StageContext, real: Dataset, monitor, losses: list,
               low_memory: bool) -> Synthesis:
    x, zca = distill_space(spec, real)
    k = real.num_classes
    generator = torch.Generator(device=ctx.device).manual_seed(seed_for(spec.seed, 0, "distill"))
    labels = class_labels(k, spec.ipc, ctx.device)
    every = max(1, spec.iterations // 200)  # keep about 200 loss values

    def callback(it: int, loss: float, images_now: torch.Tensor, lr: float | None = None) -> None:
        if it % every == 0 or it + 1 == spec.iterations:
            losses.append([it + 1, loss])
            live_progress(ctx, spec, {"iteration": it + 1, "distill_loss": float(loss)}, level=0)
        if monitor is not None:
            monitor(Progress(it + 1, spec.iterations, loss, images_now, labels, spec.factor, zca, real, lr))

    def model_fn(seed: int):
        return build_model(spec.model, real.input_shape, k, seed=seed)

    common = dict(ipc=spec.ipc, iterations=spec.iterations, lr_img=spec.lr_img_value, dsa=spec.dsa,
                  init=spec.init, generator=generator, callback=callback)
    return Synthesis(x, real.train_y, k, model_fn, common, low_memory), zca


def _compute_distill(spec: DistillSpec, ctx: StageContext, real: Dataset, monitor,
                     low_memory: bool = False) -> Artifact | None:
    started = time.time()
    losses = []
    if spec.distill_method.synthesizes:
        synthesis, zca = _synthesis(spec, ctx, real, monitor, losses, low_memory)
        out = spec.distill_method.run(spec, ctx, real, synthesis)
        out.zca = zca
    else:
        out = spec.distill_method.run(spec, ctx, real, None)
    images, labels, zca, learned_lr, extra, device = out.images, out.labels, out.zca, out.lr, out.extra, ctx.device
    record = distilled_record(images, labels, real.mean, real.std, zca=zca, factor=spec.factor, lr=learned_lr)
    metrics = {"method": spec.method, "ipc": spec.ipc, "images": len(images), "train_images": len(record["labels"]),
               "factor": spec.factor, "zca": spec.zca,
               "iterations": spec.iterations if spec.distill_method.synthesizes else 0,
               "lr": learned_lr, "loss": losses[-1][1] if losses else None, "losses": losses,
               "level": 0, "sparsity": 0.0, "test_acc": None, "points_seen": None,
               "wall_s": time.time() - started, "device": str(device), "node": ctx.node, **extra}
    if not ctx.dist.is_main:
        return None
    partial = ctx.store.partial(spec.id)
    partial.save(RECORD, record)
    artifact = ctx.store.finish(spec, partial, metrics)
    if ctx.report:
        ctx.report({"artifact": spec.id, "wall_s": metrics["wall_s"]})
    return artifact


# -- a sweep trial's distillation ---------------------------------------------------------------
def check_trial_distill(trial, method: str) -> None:
    """The checks every method that distils a trial's data makes of its
    ``distill:`` (and ``distill_eval:``) blocks: one line each, SpecError."""
    if trial.distill is None:
        raise SpecError(f"distill: method {method} needs a distill: block, e.g. "
                        "distill: {method: dm, ipc: 10, iterations: 1000, model: {name: conv3}}")
    if trial.distill.data is not None:
        raise SpecError("distill.data: leave it out in a trial; the trial's data is distilled")
    if trial.distill_eval is not None and (trial.distill_eval.distill is not None or trial.distill_eval.random):
        raise SpecError("distill_eval: leave out distill and random in a trial; the trial's distillation "
                        "and a random subset of the same size are both evaluated")
    d = trial.distill
    if trial.data.zca and not d.zca:
        raise SpecError("data.zca: the real data is ZCA-whitened but the distilled set is not; set distill.zca: "
                        "true (tickets then train in the set's space) or leave data.zca out")
    if trial.data.zca and (d.zca_space != "pixels" or d.zca_eps != trial.data.zca_eps):
        raise SpecError(f"data.zca: the real data is whitened in pixel space with zca_eps {trial.data.zca_eps}, "
                        f"the distilled set in {d.zca_space} space with {d.zca_eps}; use the same ZCA "
                        "(distill.zca_space: pixels, equal zca_eps) so tickets train in the set's space")


def trial_distill(trial) -> DistillSpec:
    """The trial's distillation of its real data (distilled from the raw set:
    ``data.zca`` whitens the real data the trial's networks train on)."""
    return trial.distill.replace(data=trial.data.replace(zca=False, zca_eps=0.1))


# -- the stages' facts ------------------------------------------------------------------------
def _distill_origin(spec: DistillSpec, origin_of=None) -> dict:
    return {"dataset": spec.data.name if spec.data is not None else None, "model": spec.model.name,
            "seed": spec.seed, "rewind": ""}


register_stage(Stage(DistillSpec, run_distill, distills=True, origin=_distill_origin))
