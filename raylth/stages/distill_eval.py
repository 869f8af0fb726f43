"""Stage ``distill_eval``: the field's evaluation of a distilled set (or of a
random real subset of the same size, the baseline), and the sweep method
``distill`` (a set, its evaluation and its baseline)."""

from __future__ import annotations

import time

import torch

from raylth.engine.data import Dataset, seed_for
from raylth.engine.distill import decode_labels, decode_multi, evaluate_images, random_subset
from raylth.engine.distill.evaluate import evaluate_idc
from raylth.engine.fastpath import precision
from raylth.engine.models import build_model, check_model_name
from raylth.errors import SpecError
from raylth.specs import DistillEvalSpec, DistillSpec
from raylth.stages.context import StageContext, ensure
from raylth.stages.datasets import RECORD, distill_space, record_zca
from raylth.stages.distill import Progress, check_class_sizes, check_distill, run_distill
from raylth.stages.registry import Stage, register_stage
from raylth.store import Artifact


def evaluation_lr(spec_lr: float | None, learned: float | None) -> float:
    """The lr a distilled set is evaluated with: the protocol's, else the
    lr learned with the set (MTT), else DC's 0.01."""
    return spec_lr or learned or 0.01


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

    result = evaluate(spec, images, labels, real, model_fn, lr, list(spec.seeds), zca)
    metrics = {"test_acc": result["mean"], "test_acc_std": result["std"], "accs": result["accs"],
               "protocol": spec.protocol, "best_test_acc": result.get("best_mean"),
               "best_accs": result.get("best_accs"), "val_acc": result.get("val_mean"),
               "val_accs": result.get("val_accs"),
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


def evaluate(spec: DistillEvalSpec, images, labels, real: Dataset, model_fn, lr: float, seeds: list[int],
             zca) -> dict:
    """``spec``'s protocol on decoded images: DC's evaluate_synset or IDC's test."""
    if spec.protocol == "idc":
        return evaluate_idc(images, labels, real, model_fn, epochs=spec.epochs, lr=lr, batch_size=spec.batch_size,
                            seeds=seeds, dsa=spec.dsa, zca=zca)
    return evaluate_images(images, labels, real, model_fn, epochs=spec.epochs, lr=lr, batch_size=spec.batch_size,
                           seeds=seeds, dsa=spec.dsa, zca=zca)


def evaluate_progress(spec: DistillEvalSpec, progress: Progress, split: str = "test") -> float:
    """A distillation in progress (what a ``run_distill`` monitor sees)
    evaluated as ``spec`` evaluates the finished set, with the lr learned so
    far, on its first seed only: a search's intermediate value (pruning), on
    ``split`` (test, or val: the held-out training images)."""
    real = progress.real

    def model_fn(seed: int):
        return build_model(spec.model, real.input_shape, real.num_classes, seed=seed)

    images = decode_multi(progress.images.clone(), progress.factor)
    labels = decode_labels(progress.labels, progress.factor)
    result = evaluate(spec, images, labels, real, model_fn, evaluation_lr(spec.lr, progress.lr), [spec.seeds[0]],
                      progress.zca)
    return result["val_mean"] if split == "val" else result["mean"]


def _eval_origin(spec: DistillEvalSpec, origin_of=None) -> dict:
    d = spec.distill
    return {"dataset": d.data.name if d is not None and d.data is not None else None,
            "model": spec.model.name, "seed": d.seed if d is not None else None, "rewind": ""}


register_stage(Stage(DistillEvalSpec, run_distill_eval, origin=_eval_origin))
