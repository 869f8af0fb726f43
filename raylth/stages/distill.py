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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from raylth.engine.data import Dataset, seed_for
from raylth.engine.distill import (Zca, distill_dm, distill_gm, distill_mtt, distilled_record,
                                   evaluate_images, fit_zca_space, random_subset, train_experts,
                                   whitened_train)
from raylth.engine.distill.init import class_labels
from raylth.engine.fastpath import precision
from raylth.engine.models import build_model, check_model_name
from raylth.errors import DataError, SpecError
from raylth.specs import DistillEvalSpec, DistillSpec, ExpertsSpec
from raylth.stages.context import StageContext, ensure
from raylth.stages.datasets import RECORD, record_zca
from raylth.stages.memory import check_matching, mtt_low_memory
from raylth.stages.registry import Stage, register_stage
from raylth.store import Artifact, Store

def distill_space(spec, real: Dataset) -> tuple[torch.Tensor, Zca | None]:
    """The real training images in the space ``spec`` (a DistillSpec or
    ExpertsSpec) distils in: normalised, or ZCA-whitened from its zca_space."""
    if not spec.zca:
        return real.normalize(real.train_x.float()), None
    zca, x = whitened_train(real, spec.zca_space, spec.zca_eps)
    return x, zca


# -- checks, before anything is stored -------------------------------------------------
def check_distill(spec: DistillSpec, ctx: StageContext) -> Dataset:
    """Raise one SpecError/DataError naming the field or file; returns the real set."""
    if spec.data is None:
        raise SpecError("distill.data: name the real data set to distil, e.g. data: {name: digits}")
    if spec.data.name == "distilled":
        raise SpecError("distill.data: distil a real data set, not a distilled one")
    if spec.method != "import":
        check_model_name(spec.model.name)
    real = ctx.dataset(spec.data)
    _, height, width = real.input_shape
    if spec.factor > 1 and (height % spec.factor or width % spec.factor):
        raise SpecError(f"distill.factor: {spec.factor} does not divide {spec.data.name}'s image size "
                        f"{height}x{width}")
    if spec.method == "import":
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


def _import_path(spec: DistillSpec, ctx_root, name: str | None = None) -> Path:
    path = Path(spec.path if name is None else name).expanduser()
    if not path.is_absolute() and ctx_root is not None and not path.exists():
        path = Path(ctx_root) / path
    return path


def import_files(spec: DistillSpec, data_root=None) -> list[Path]:
    """The files an import reads: path, and labels when given."""
    paths = [_import_path(spec, data_root)]
    if spec.labels:
        paths.append(_import_path(spec, data_root, spec.labels))
    return paths


def _read_tensors(path: Path, field: str):
    def fail(what: str):
        raise DataError(f"distill.{field}: {path}: {what}")

    if not path.is_file():
        fail("no such file")
    try:
        if path.suffix.lower() == ".npz":
            import numpy as np
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.as_tensor(z[k]) for k in z.files}, fail
        return torch.load(path, map_location="cpu", weights_only=True), fail
    except Exception as err:  # torch raises many types for a foreign file
        fail(f"cannot read it ({type(err).__name__}: {' '.join(str(err).split())[:200]})")


def _released_items(spec: DistillSpec, data_root):
    """(images, labels, items, fail) from one file ({images, labels} or IDC's
    [images, labels]) or two (MTT's images_best.pt and labels_best.pt)."""
    items, fail = _read_tensors(_import_path(spec, data_root), "path")
    if spec.labels:
        labels, fail_labels = _read_tensors(_import_path(spec, data_root, spec.labels), "labels")
        if isinstance(items, dict) and "images" in items:
            items = items["images"]
        if isinstance(labels, dict) and "labels" in labels:
            labels = labels["labels"]
        if not isinstance(items, torch.Tensor):
            fail("expected a tensor of images (labels come from distill.labels)")
        if not isinstance(labels, torch.Tensor):
            fail_labels("expected a tensor of class indices")
        if len(labels) != len(items):
            fail_labels(f"holds {len(labels)} labels for the {len(items)} images of {spec.path}; "
                        "pass the labels file saved with these images")
        return items, labels, {}, fail
    if isinstance(items, (list, tuple)) and len(items) >= 2:  # IDC: [images, labels]
        items = {"images": items[0], "labels": items[1]}
    if not isinstance(items, dict) or "images" not in items or "labels" not in items:
        fail("expected a dict with images and labels tensors (or [images, labels]); "
             "for images and labels in two files give labels: LABELS.pt too")
    return items["images"], items["labels"], items, fail


def read_import(spec: DistillSpec, real: Dataset, data_root=None, with_zca: bool = True):
    """(images, labels, zca) of an imported set in the distillation space,
    every problem a DataError naming the file (``with_zca`` False: no ZCA
    is fitted, e.g. to check the files)."""
    images, labels, items, fail = _released_items(spec, data_root)
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    shape = tuple(real.input_shape)
    if images.dim() != 4 or tuple(images.shape[1:]) != shape or len(images) == 0:
        fail(f"images have shape {list(images.shape)}; expected (N, {', '.join(map(str, shape))}) like "
             f"{spec.data.name}")
    if not images.is_floating_point() and not (spec.space == "pixel" and images.dtype == torch.uint8):
        fail(f"images are {images.dtype}; expected float images")
    images = images.float()
    if not torch.isfinite(images).all():
        fail("images hold NaN or infinite values")
    if labels.dim() != 1:
        fail(f"labels have shape {list(labels.shape)}; expected class indices of shape ({len(images)},)"
             + (" (soft labels are not supported)" if labels.dim() == 2 else ""))
    if len(labels) != len(images):
        fail(f"holds {len(labels)} labels for {len(images)} images")
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        fail("labels hold non-integer values; expected class indices")
    labels = labels.long()
    k = real.num_classes
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        fail(f"labels hold values in {int(labels.min())}..{int(labels.max())}, outside 0..{k - 1} "
             f"of {spec.data.name}")
    counts = torch.bincount(labels, minlength=k)
    if not bool((counts == spec.ipc).all()):
        fail(f"holds {counts.tolist()} images per class; declare ipc: n for a set of n images of every class")
    if spec.space == "pixel":
        images = real.normalize(images)
    elif spec.space == "unit":  # IDC's release: unnormalised images in [0, 1]
        images = real.normalize(images * real.pixel_max)
    zca = None
    if spec.zca and with_zca:
        if "zca_matrix" in items and "zca_mean" in items:  # raylth's own record
            zca = Zca.from_dict({"mean": items["zca_mean"], "matrix": items["zca_matrix"],
                                 "shape": list(shape), "eps": float(items.get("zca_eps", spec.zca_eps)),
                                 "input_scale": items.get("zca_input_scale")})
        else:  # as MTT/KIP: fitted on the whole real training set, in zca_space
            zca = fit_zca_space(real, spec.zca_space, spec.zca_eps)
    return images, labels, zca


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


def evaluation_lr(spec_lr: float | None, learned: float | None) -> float:
    """The lr a distilled set is evaluated with: the protocol's, else the
    lr learned with the set (MTT), else DC's 0.01."""
    return spec_lr or learned or 0.01


Monitor = Callable[[Progress], None]


@precision("float32")  # the matching losses and the MTT unroll: no TF32
def run_distill(spec: DistillSpec, ctx: StageContext, monitor: Monitor | None = None) -> Artifact:
    """The stored distilled set of ``spec``; distilled when missing. ``monitor``
    (e.g. a search's pruning check) is called after every iteration of a
    distillation computed now; it may raise to stop it (nothing is stored)."""
    done = ctx.store.get(spec.id)
    if done is not None:
        return done
    real = check_distill(spec, ctx)
    low_memory = mtt_low_memory(spec, real, ctx.device) if spec.method == "mtt" else False
    if spec.method in ("dm", "gm"):
        check_matching(spec, real, ctx.device)
    return ensure(ctx, spec, lambda: _compute_distill(spec, ctx, real, monitor, low_memory))


def _compute_distill(spec: DistillSpec, ctx: StageContext, real: Dataset, monitor,
                     low_memory: bool = False) -> Artifact | None:
    started = time.time()
    device = ctx.device
    k = real.num_classes
    learned_lr, losses, extra = None, [], {}
    if spec.method == "import":
        images, labels, zca = read_import(spec, real, ctx.data_root)
        paths = import_files(spec, ctx.data_root)
        extra = {"source_file": str(paths[0]), "source_sha256": hashlib.sha256(paths[0].read_bytes()).hexdigest()}
        if len(paths) > 1:
            extra.update(labels_file=str(paths[1]), labels_sha256=hashlib.sha256(paths[1].read_bytes()).hexdigest())
    else:
        x, zca = distill_space(spec, real)
        y = real.train_y
        generator = torch.Generator(device=device).manual_seed(seed_for(spec.seed, 0, "distill"))

        def model_fn(seed: int):
            return build_model(spec.model, real.input_shape, k, seed=seed)

        labels = class_labels(k, spec.ipc, device)
        every = max(1, spec.iterations // 200)  # keep about 200 loss values

        def callback(it: int, loss: float, images_now: torch.Tensor, lr: float | None = None) -> None:
            if it % every == 0 or it + 1 == spec.iterations:
                losses.append([it + 1, loss])
            if monitor is not None:
                monitor(Progress(it + 1, spec.iterations, loss, images_now, labels, spec.factor, zca, real, lr))

        common = dict(ipc=spec.ipc, iterations=spec.iterations, lr_img=spec.lr_img_value, dsa=spec.dsa,
                      init=spec.init, generator=generator, callback=callback)
        if spec.method == "dm":
            images, labels = distill_dm(x, y, k, model_fn, batch_real=spec.batch_real, **common)
        elif spec.method == "gm":
            images, labels = distill_gm(x, y, k, model_fn, outer_loop=spec.outer_loop,
                                        inner_loop=spec.inner_loop, lr_net=spec.lr_net,
                                        batch_real=spec.batch_real, factor=spec.factor, **common)
        else:
            experts_artifact = run_experts(spec.experts_spec(), ctx)
            experts = load_experts(experts_artifact)
            images, labels, learned_lr = distill_mtt(
                x, y, k, experts, model_fn, syn_steps=spec.syn_steps, expert_epochs=spec.expert_epochs,
                max_start_epoch=spec.max_start_epoch, lr_lr=spec.lr_lr, lr_init=spec.lr_init,
                batch_syn=spec.batch_syn, low_memory=low_memory, return_lr=True, **common)
            extra = {"experts": experts_artifact.id, "low_memory_auto": low_memory and not spec.low_memory}
    record = distilled_record(images, labels, real.mean, real.std, zca=zca, factor=spec.factor, lr=learned_lr)
    metrics = {"method": spec.method, "ipc": spec.ipc, "images": len(images), "train_images": len(record["labels"]),
               "factor": spec.factor, "zca": spec.zca,
               "iterations": spec.iterations if spec.method != "import" else 0,
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


# -- experts ------------------------------------------------------------------------------
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


# -- distill_eval ----------------------------------------------------------------------------
@precision("tf32")  # trained as in the references (cuDNN's default on Ampere/Hopper)
def run_distill_eval(spec: DistillEvalSpec, ctx: StageContext) -> Artifact:
    if spec.distill is None:
        raise SpecError("distill_eval.distill: name the distillation to evaluate")
    done = ctx.store.get(spec.id)
    if done is not None:
        return done
    check_model_name(spec.model.name)
    if spec.random:
        real = check_baseline(spec.distill, ctx)
    elif ctx.store.has(spec.distill.id):
        real = ctx.dataset(spec.distill.data)
    else:
        real = check_distill(spec.distill, ctx)
    return ensure(ctx, spec, lambda: _compute_eval(spec, ctx, real))


def check_baseline(d: DistillSpec, ctx: StageContext) -> Dataset:
    if d.data is None:
        raise SpecError("distill.data: name the real data set, e.g. data: {name: digits}")
    real = ctx.dataset(d.data)
    check_class_sizes(real, d.ipc, d.data.name, "distill.ipc", d.ipc)
    return real


def random_baseline(d: DistillSpec, real: Dataset, subset_seed: int):
    """A random real subset of d.ipc images per class in d's space, and its ZCA."""
    x, zca = distill_space(d, real)
    generator = torch.Generator().manual_seed(seed_for(subset_seed, d.ipc, "random-subset"))
    images, labels = random_subset(x, real.train_y, d.ipc, generator, real.num_classes)
    return images, labels, zca


def _compute_eval(spec: DistillEvalSpec, ctx: StageContext, real: Dataset) -> Artifact | None:
    started = time.time()
    d = spec.distill
    if spec.random:
        images, labels, zca = random_baseline(d, real, spec.subset_seed)
        lr, source = evaluation_lr(spec.lr, None), None
    else:
        source = run_distill(d, ctx)
        record = source.load(RECORD)
        images, labels, zca = record["images"], record["labels"], record_zca(record)
        lr = evaluation_lr(spec.lr, float(record["lr"]) if "lr" in record else None)
    images, labels = images.to(ctx.device).float(), labels.to(ctx.device).long()

    def model_fn(seed: int):
        return build_model(spec.model, real.input_shape, real.num_classes, seed=seed)

    result = evaluate_images(images, labels, real, model_fn, epochs=spec.epochs, lr=lr,
                             batch_size=spec.batch_size, seeds=list(spec.seeds), dsa=spec.dsa, zca=zca)
    metrics = {"test_acc": result["mean"], "test_acc_std": result["std"], "accs": result["accs"],
               "random": spec.random, "method": "random" if spec.random else d.method, "ipc": d.ipc,
               "images": len(labels), "lr": lr, "epochs": spec.epochs, "distill": source.id if source else None,
               "level": 0, "sparsity": 0.0, "points_seen": len(labels) * spec.epochs,
               "wall_s": time.time() - started, "device": str(ctx.device), "node": ctx.node}
    if not ctx.dist.is_main:
        return None
    artifact = ctx.store.finish(spec, ctx.store.partial(spec.id), metrics)
    if ctx.report:
        ctx.report({"test_acc": metrics["test_acc"], "artifact": spec.id})
    return artifact


# -- the sweep method `distill`: a distilled set, its evaluation and the random baseline -------
def trial_distill(trial) -> DistillSpec:
    """The trial's distillation of its real data (distilled from the raw set:
    ``data.zca`` whitens the real data the trial's networks train on)."""
    return trial.distill.replace(data=trial.data.replace(zca=False, zca_eps=0.1))


def distill_method_artifacts(trial) -> list:
    d = trial_distill(trial)
    options = trial.distill_eval or DistillEvalSpec()
    return [d, options.of(d), options.of(d, random=True)]


def evaluate_progress(spec: DistillEvalSpec, progress: Progress) -> float:
    """A distillation in progress (what a ``run_distill`` monitor sees)
    evaluated as ``spec`` evaluates the finished set, with the lr learned so
    far, on its first seed only: a search's intermediate value (pruning)."""
    real = progress.real

    def model_fn(seed: int):
        return build_model(spec.model, real.input_shape, real.num_classes, seed=seed)

    result = evaluate_images(progress.images.clone(), progress.labels, real, model_fn, epochs=spec.epochs,
                             lr=evaluation_lr(spec.lr, progress.lr), batch_size=spec.batch_size,
                             seeds=[spec.seeds[0]], dsa=spec.dsa, zca=progress.zca, factor=progress.factor)
    return result["mean"]


# -- the stages' facts ------------------------------------------------------------------------
def _distill_origin(spec: DistillSpec, origin_of=None) -> dict:
    return {"dataset": spec.data.name if spec.data is not None else None, "model": spec.model.name,
            "seed": spec.seed, "rewind": ""}


def _eval_origin(spec: DistillEvalSpec, origin_of=None) -> dict:
    d = spec.distill
    return {"dataset": d.data.name if d is not None and d.data is not None else None,
            "model": spec.model.name, "seed": d.seed if d is not None else None, "rewind": ""}


register_stage(Stage(DistillSpec, run_distill, distills=True, method="distill", origin=_distill_origin))
register_stage(Stage(ExpertsSpec, run_experts, method="distill", origin=_distill_origin))
register_stage(Stage(DistillEvalSpec, run_distill_eval, method="distill", origin=_eval_origin))
