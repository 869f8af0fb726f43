"""The field's evaluation protocol (DC/DSA/DM/MTT ``evaluate_synset``):
train a fresh network per seed on the synthetic set with DSA, then test it
on the real test split."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from raylth.engine.data import seed_for

from raylth.engine.data.dsa import DEFAULT_STRATEGY
from .common import ModelFn, sgd_epoch
from .init import class_indices, decode_labels, decode_multi
from raylth.engine.data.zca import Zca


def random_subset(real_x: torch.Tensor, real_y: torch.Tensor, ipc: int,
                  generator: torch.Generator, num_classes: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The baseline of the same size: ipc random real examples per class,
    class-major (real_x as given, e.g. already normalised)."""
    if num_classes is None:
        num_classes = int(real_y.max()) + 1
    idx = class_indices(real_y, ipc, num_classes, generator).to(real_x.device)
    return real_x[idx], real_y[idx]


@torch.no_grad()
def test_accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(y), batch_size):
        correct += int((model(x[start:start + batch_size]).argmax(1) == y[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(y))


def prepare_test(test, device, zca: Zca | None = None, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The real test split (or ``split``: val, the held-out training images)
    in the distillation space: normalised, or ZCA-whitened (through the space
    ``zca`` was fitted in) when it is given."""
    x, y = test.split(split)
    x = x.to(device)
    x = zca.whiten(x, test) if zca is not None else test.normalize(x.float())
    return x, y.to(device)


def train_on(images: torch.Tensor, labels: torch.Tensor, model_fn: ModelFn, seed: int,
             epochs: int, lr: float, batch_size: int, dsa: bool = True,
             dsa_strategy: str = DEFAULT_STRATEGY, lr_decay: float = 0.1,
             momentum: float = 0.9, weight_decay: float = 5e-4):
    """One evaluation network trained on (images, labels); the data order and
    the augmentations come from ``seed`` alone (seed_for(seed, 0, ...))."""
    device = images.device
    net = model_fn(seed).to(device)
    net.train()
    g = torch.Generator().manual_seed(seed_for(seed, 0, "distill-eval"))
    for epoch in range(epochs):
        if epoch == 0 or epoch == epochs // 2:
            if epoch:
                lr *= lr_decay
            # DC recreates the optimizer at the decay (its momentum restarts)
            optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum,
                                        weight_decay=weight_decay)
        sgd_epoch(net, optimizer, images, labels, batch_size, g, dsa, dsa_strategy)  # DSA per example
    return net


IDC_DSA_OPS = "color_crop_flip_scale_rotate"  # IDC's dsa_strategy less cutout (its evaluation CutMixes)


def idc_train_spec(epochs: int, lr: float, batch_size: int, dsa: bool = True):
    """IDC's evaluation training (test.py / train.py for CIFAR) as a TrainSpec:
    SGD momentum 0.9, weight decay 5e-4, lr x0.2 at 2/3 and 5/6 of the epochs,
    IDC's DiffAug per example (flip and color, then one of crop/scale/rotate
    per batch) and CutMix with probability 0.5, the last partial batch kept,
    a test evaluation at every quarter (IDC's epoch_print_freq)."""
    from raylth.specs import AugmentSpec, Step, TrainSpec

    augment = AugmentSpec("dsa", ops=IDC_DSA_OPS, mode="idc", cutmix=0.5) if dsa else AugmentSpec(cutmix=0.5)
    return TrainSpec(lr=lr, momentum=0.9, weight_decay=5e-4, batch_size=batch_size, duration=Step(epochs, "ep"),
                     schedule="multistep", milestones=(Step(2 * epochs // 3, "ep"), Step(5 * epochs // 6, "ep")),
                     gamma=0.2, eval_every=Step(max(1, epochs // 4), "ep"), augment=augment, last_batch="keep")


def evaluate_idc(images: torch.Tensor, labels: torch.Tensor, test, model_fn: ModelFn, epochs: int = 1000,
                 lr: float = 0.01, batch_size: int = 64, seeds: Sequence[int] = (0, 1, 2), dsa: bool = True,
                 zca: Zca | None = None) -> dict:
    """IDC's evaluation protocol (``idc_train_spec``) of a synthetic set (already
    normalised, decoded), each seed a fresh model_fn(seed) trained by raylth's
    Trainer in float32 with seeds (seed, seed, seed). Returns {'mean', 'std',
    'accs'} of the final test accuracies and {'best_mean', 'best_accs'}: the
    best of the quarterly evaluations, which IDC reports."""
    from raylth.engine.data import Dataset
    from raylth.engine.train import Trainer
    from raylth.specs import Seeds

    images, labels = images.detach().float(), labels.to(images.device).long()
    test_x, test_y = prepare_test(test, images.device, zca)
    held = {} if test.val_x is None else dict(zip(("val_x", "val_y"), prepare_test(test, images.device, zca, "val")))
    channels = images.shape[1]
    data = Dataset("synthetic", images, labels, test_x, test_y, (0.0,) * channels, (1.0,) * channels,
                   test.num_classes, **held)
    spec = idc_train_spec(epochs, lr, batch_size, dsa)
    finals, bests, vals = [], [], []
    for seed in seeds:
        trainer = Trainer(model_fn(seed), data, spec, Seeds.all(seed), device=images.device, fast=False)
        history = trainer.run()
        finals.append(history[-1]["test_acc"])
        bests.append(max(h["test_acc"] for h in history))
        vals.append(history[-1].get("val_acc"))
    summary = _mean_std(finals)
    return summary | {"best_mean": _mean_std(bests)["mean"], "best_accs": bests} | _val(vals)


def _val(accs: list) -> dict:
    """Validation accuracies (None without a validation split)."""
    if not accs or accs[0] is None:
        return {}
    return {"val_mean": _mean_std(accs)["mean"], "val_accs": accs}


def _mean_std(accs: list[float]) -> dict:
    mean = sum(accs) / len(accs) if accs else float("nan")
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs)) if accs else float("nan")
    return {"mean": mean, "std": std, "accs": list(accs)}


def evaluate_images(images: torch.Tensor, labels: torch.Tensor, test, model_fn: ModelFn,
                    epochs: int = 300, lr: float = 0.01, batch_size: int = 256,
                    seeds: Sequence[int] = (0, 1, 2), dsa: bool = True, zca: Zca | None = None,
                    *, factor: int = 1, dsa_strategy: str = DEFAULT_STRATEGY,
                    lr_decay: float = 0.1) -> dict:
    """Train a fresh model_fn(seed) per seed on the (already normalised, and
    whitened if distilled with ZCA) synthetic images: SGD momentum 0.9, weight
    decay 5e-4, batch_size, ``epochs`` epochs, lr multiplied by ``lr_decay``
    from epoch epochs // 2 on (DC's evaluate_synset: x0.1, with a fresh
    optimizer, after epoch Epoch // 2 + 1 of Epoch + 1), DSA per example; then
    test on ``test`` (a Dataset), normalised the same way, or ZCA-whitened
    through ``zca`` when it is given.
    ``factor`` > 1: images are IDC mosaics, decoded first. Runs on the
    images' device. Returns {'mean', 'std', 'accs'}: accuracies as fractions,
    std over seeds (population, as numpy's default in the papers' reports)."""
    images = images.detach().float()
    labels = labels.to(images.device)
    if factor > 1:
        images, labels = decode_multi(images, factor), decode_labels(labels, factor)
    test_x, test_y = prepare_test(test, images.device, zca)
    val = prepare_test(test, images.device, zca, "val") if test.val_x is not None else None
    accs, vals = [], []
    for seed in seeds:
        net = train_on(images, labels, model_fn, seed, epochs, lr, batch_size, dsa,
                       dsa_strategy, lr_decay)
        accs.append(test_accuracy(net, test_x, test_y))
        vals.append(test_accuracy(net, *val) if val is not None else None)
    return _mean_std(accs) | _val(vals)
