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

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from raylth.engine.data import Dataset, seed_for
from raylth.engine.distill import Zca, distill_dm, distill_gm, distill_mtt, distilled_record
from raylth.engine.distill.idc import IdcSettings, distill_idc
from raylth.engine.distill.init import class_labels
from raylth.engine.fastpath import precision
from raylth.engine.models import build_model, check_model_name
from raylth.errors import SpecError
from raylth.specs import DistillSpec
from raylth.stages.context import StageContext, ensure, live_progress
from raylth.stages.datasets import RECORD, distill_space
from raylth.stages.experts import load_experts, run_experts
from raylth.stages.memory import check_matching, mtt_low_memory
from raylth.stages.registry import Stage, register_stage
from raylth.stages.release import import_files, read_import
from raylth.store import Artifact


# -- checks, before anything is stored -------------------------------------------------
def check_distill(spec: DistillSpec, ctx: StageContext) -> Dataset:
    """Raise one SpecError/DataError naming the field or file; returns the real set."""
    if spec.data is None:
        raise SpecError("distill.data: name the real data set to distil, e.g. data: {name: digits}")
    if spec.data.name == "distilled":
        raise SpecError("distill.data: distil a real data set, not a distilled one")
    synthesizes = spec.distill_method.synthesizes
    if synthesizes:
        check_model_name(spec.model.name)
    real = ctx.dataset(spec.data)
    _, height, width = real.input_shape
    if spec.factor > 1 and (height % spec.factor or width % spec.factor):
        raise SpecError(f"distill.factor: {spec.factor} does not divide {spec.data.name}'s image size "
                        f"{height}x{width}")
    if not synthesizes:
        read_import(spec, real, ctx.data_root, with_zca=False)  # the files only: the ZCA fit is the run's work
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
class DistillRunner:
    """How a method of raylth.specs.distill.DISTILL_METHODS runs: ``run(spec,
    ctx, real, synthesis)`` (synthesis None for a method that synthesises
    nothing), and ``fits(spec, real, device) -> low_memory`` before anything
    starts (raise WontFitError)."""
    run: Callable[[DistillSpec, StageContext, Dataset, Synthesis | None], Distilled]
    fits: Callable[[DistillSpec, Dataset, torch.device], bool] | None = None


DISTILL_RUNNERS: dict[str, DistillRunner] = {}


def distill_runner(name: str, fits=None):
    def deco(run):
        DISTILL_RUNNERS[name] = DistillRunner(run, fits)
        return run
    return deco


@precision("float32")  # the matching losses and the MTT unroll: no TF32
def run_distill(spec: DistillSpec, ctx: StageContext, monitor: Monitor | None = None) -> Artifact:
    """The stored distilled set of ``spec``; distilled when missing. ``monitor``
    (e.g. a search's pruning check) is called after every iteration of a
    distillation computed now; it may raise to stop it (nothing is stored)."""
    done = ctx.store.get(spec.id)
    if done is not None:
        return done
    real = check_distill(spec, ctx)
    fits = DISTILL_RUNNERS[spec.method].fits
    low_memory = fits(spec, real, ctx.device) if fits is not None else spec.low_memory
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
        out = DISTILL_RUNNERS[spec.method].run(spec, ctx, real, synthesis)
        out.zca = zca
    else:
        out = DISTILL_RUNNERS[spec.method].run(spec, ctx, real, None)
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


# -- the methods' run functions (raylth.specs.distill.DISTILL_METHODS) -------------------------
@distill_runner("dm", fits=check_matching)
def _run_dm(spec: DistillSpec, ctx, real, s: Synthesis) -> Distilled:
    return Distilled(*distill_dm(s.x, s.y, s.num_classes, s.model_fn, batch_real=spec.batch_real, **s.common))


@distill_runner("gm", fits=lambda spec, real, device: check_matching(spec, real, device, gradients=True))
def _run_gm(spec: DistillSpec, ctx, real, s: Synthesis) -> Distilled:
    return Distilled(*distill_gm(s.x, s.y, s.num_classes, s.model_fn, outer_loop=spec.outer_loop,
                                 inner_loop=spec.inner_loop, lr_net=spec.lr_net, batch_real=spec.batch_real,
                                 factor=spec.factor, **s.common))


@distill_runner("mtt", fits=mtt_low_memory)
def _run_mtt(spec: DistillSpec, ctx, real, s: Synthesis) -> Distilled:
    experts_artifact = run_experts(spec.experts_spec(), ctx)
    images, labels, lr = distill_mtt(
        s.x, s.y, s.num_classes, load_experts(experts_artifact), s.model_fn, syn_steps=spec.syn_steps,
        expert_epochs=spec.expert_epochs, max_start_epoch=spec.max_start_epoch, lr_lr=spec.lr_lr,
        lr_init=spec.lr_init, batch_syn=spec.batch_syn, low_memory=s.low_memory, return_lr=True, **s.common)
    return Distilled(images, labels, lr=lr, extra={"experts": experts_artifact.id,
                                                   "low_memory_auto": s.low_memory and not spec.low_memory})


@distill_runner("idc", fits=lambda spec, real, device: check_matching(spec, real, device, gradients=True))
def _run_idc(spec: DistillSpec, ctx, real, s: Synthesis) -> Distilled:
    """IDC condenses [0, 1] pixels and normalises inside its augmentation; the
    set is stored in the normalised space, as every distilled set."""
    scale = real.pixel_max
    pixels = real.train_x.to(ctx.device).float() / scale

    def normalize(x):
        return real.normalize(x * scale)

    settings = IdcSettings(ipc=spec.ipc, factor=spec.factor, iterations=spec.iterations, steps=spec.outer_loop,
                           lr_img=spec.lr_img_value, batch_real=spec.batch_real, batch_syn=spec.batch_syn,
                           n_data=spec.n_data, lr_net=spec.lr_net, metric=spec.metric,
                           match_ops=spec.match_ops if spec.dsa else "none", cutmix=spec.cutmix, init=spec.init)
    callback = s.common["callback"]
    images, labels = distill_idc(pixels, real.train_y.to(ctx.device), s.num_classes, s.model_fn, normalize, settings,
                                 generator=s.common["generator"],
                                 callback=lambda it, loss, now: callback(it, loss, normalize(now)))
    return Distilled(normalize(images), labels)


@distill_runner("import")
def _run_import(spec: DistillSpec, ctx, real, s: None) -> Distilled:
    images, labels, zca = read_import(spec, real, ctx.data_root)
    paths = import_files(spec, ctx.data_root)
    extra = {"source_file": str(paths[0]), "source_sha256": hashlib.sha256(paths[0].read_bytes()).hexdigest()}
    if len(paths) > 1:
        extra.update(labels_file=str(paths[1]), labels_sha256=hashlib.sha256(paths[1].read_bytes()).hexdigest())
    return Distilled(images, labels, zca, extra=extra)


# -- the sweep method `distill`: a distilled set, its evaluation and the random baseline -------
def trial_distill(trial) -> DistillSpec:
    """The trial's distillation of its real data (distilled from the raw set:
    ``data.zca`` whitens the real data the trial's networks train on)."""
    return trial.distill.replace(data=trial.data.replace(zca=False, zca_eps=0.1))


# -- the stages' facts ------------------------------------------------------------------------
def _distill_origin(spec: DistillSpec, origin_of=None) -> dict:
    return {"dataset": spec.data.name if spec.data is not None else None, "model": spec.model.name,
            "seed": spec.seed, "rewind": ""}


register_stage(Stage(DistillSpec, run_distill, distills=True, method="distill", origin=_distill_origin))
