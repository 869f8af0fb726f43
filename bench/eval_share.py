"""Share of a distilled IMP level's wall time spent evaluating on the test
split: 100 CIFAR-10 images (10 per class, as a distilled set) trained 300
epochs at batch 64 and tested on the real test split, with the default
evaluation cadence against evaluating after every epoch (the cadence before).

    python bench/eval_share.py [--small|--full] [--device cuda]

--full: ResNet-18 width 64, the 10,000 test images; --small: width 16, 1,000
test images and 60 epochs (the CPU check).
"""

from __future__ import annotations

import dataclasses
import time

import torch

import common
from raylth.engine.data import load_dataset
from raylth.engine.models import build_model
from raylth.engine.train import Trainer
from raylth.specs import DataSpec, ModelSpec, Seeds, Step, TrainSpec

SIZES = {"full": {"width": 64, "epochs": 300}, "small": {"width": 16, "epochs": 60}}


def level(data, size: dict, device: str, eval_every: Step | None) -> dict:
    model = build_model(ModelSpec("resnet18", width=size["width"]), data.input_shape, data.num_classes, seed=0)
    spec = TrainSpec(lr=0.01, batch_size=64, duration=Step(size["epochs"], "ep"), eval_every=eval_every)
    trainer = Trainer(model, data, spec, Seeds(), device=torch.device(device))
    spent, record = [0.0], trainer._record_eval

    def timed_eval():
        seconds, _ = common.timed(record, device)
        spent[0] += seconds

    trainer._record_eval = timed_eval
    wall, _ = common.timed(trainer.run, device)
    return {"wall_s": wall, "eval_s": spent[0], "eval_share": spent[0] / wall, "evaluations": len(trainer.history)}


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    size = SIZES[common.size_name(args)]
    real = load_dataset(DataSpec("cifar10"), common.cifar_root(args))
    g = torch.Generator().manual_seed(0)
    idx = torch.cat([torch.nonzero(real.train_y == c).flatten()[torch.randperm(int((real.train_y == c).sum()),
                     generator=g)[:10]] for c in range(10)])
    data = dataclasses.replace(real, train_x=real.train_x[idx], train_y=real.train_y[idx], augment=False)
    before = level(data, size, args.device, Step(1, "ep"))
    after = level(data, size, args.device, None)
    figures = {f"{k} every epoch": v for k, v in before.items()} | {f"{k} default": v for k, v in after.items()}
    common.publish("eval_share", args, f"100 images, {size['epochs']} epochs, {len(data.test_y)} test images",
                   figures, details={"size": size},
                   notes=["The default cadence evaluates once per epoch while that stays under a quarter of "
                          "the training cost (Trainer.eval_period), else evenly fewer times, and at the end."
                          " The last evaluation is always made: with few training points it is the floor."])


if __name__ == "__main__":
    main()
