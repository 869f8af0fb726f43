"""Training points and wall time to find tickets: IMP (dense level 0 + L
levels, each trained on the real training set) against distilled IMP (the
same levels, each trained on a distilled set), both exactly as a sweep's
`imp` and `distilled_imp` methods build them, through raylth's stages
(run_stage, a fresh Store per run). The distillation that makes the set is
timed on its own; the tickets' final training on the real data (which every
method needs once per level it reports) is not part of finding them.

    python bench/distilled_vs_imp.py [--small|--full] [--levels L]

small: sweeps/distilled_pruning_quickstart.yaml, seed 0 (digits, LeNet; DM
ipc 10; inner loop 4 epochs at batch 1 on the 100 images; IMP 20 epochs on
the 1,258 real images), L=3.
full: sweeps/paper_resnet18_cifar10.yaml, seed 0 (CIFAR-10, ResNet-18), L=2,
with the paper's budgets (IMP 300 epochs on 50,000 images, inner loop 1,000
epochs on 100) both cut 10x to 30 and 100 epochs, which keeps the paper's
~150x, and DM ipc 10 (1,000 iterations, ConvNet-3) instead of MTT, whose 20
experts would dominate the run.
"""

from __future__ import annotations

import tempfile

import torch

import common
from raylth.specs import DistillSpec, ModelSpec, Step
from raylth.stages import METHODS, StageContext, run_stage
from raylth.plugins.methods.distilled.methods import distilled_prepare
from raylth.store import Store
from raylth.sweep.config import load_sweep

SIZES = {"small": {"sweep": "distilled_pruning_quickstart", "levels": 3},
         "full": {"sweep": "paper_resnet18_cifar10", "levels": 2,
                  "train": {"duration": Step(30, "ep"), "warmup": Step(1, "ep")},
                  "inner": {"duration": Step(100, "ep"), "eval_every": Step(25, "ep")},
                  "distill": DistillSpec(method="dm", ipc=10, iterations=1000, lr_img=1.0,
                                         model=ModelSpec("conv3"))}}


def trials(size: dict, levels: int) -> dict:
    """The seed-0 imp and distilled_imp trials of the size's sweep, cut to ``levels``."""
    found = {}
    for trial in load_sweep(common.REPO / "sweeps" / f"{size['sweep']}.yaml").trials:
        spec = trial.spec
        if spec.method in ("imp", "distilled_imp") and spec.seeds.init == 0 and spec.method not in found:
            spec = spec.replace(levels=levels, train=spec.train.replace(**size.get("train", {})),
                                inner=spec.inner.replace(**size.get("inner", {})) if spec.inner else None)
            if spec.method == "distilled_imp" and "distill" in size:
                spec = spec.replace(distill=size["distill"])
            found[spec.method] = spec
    return found


def run(trial, data_root, device) -> dict:
    """Wall time and points of the trial's ticket-finding stages, in a fresh store."""
    with tempfile.TemporaryDirectory(prefix="raylth-bench-tickets-") as root:
        ctx = StageContext(store=Store(root), data_root=data_root, device=device)
        ctx.dataset(trial.data)  # the real data loaded and on the device before the clock starts
        out = {"distill_wall_s": 0.0}
        if trial.method == "distilled_imp":
            distill, *trunk = distilled_prepare(trial, trial.levels)
            out["distill_wall_s"], _ = common.timed(lambda: run_stage(distill, ctx), device)
            ctx.dataset(trunk[0].data)
        else:
            trunk = METHODS["imp"].artifacts(trial)
        out["trunk_wall_s"], _ = common.timed(lambda: [run_stage(s, ctx) for s in trunk], device)
        metrics = [ctx.store.get(s.id).metrics for s in trunk]
    return out | {"points_seen": sum(m["points_seen"] for m in metrics),
                  "stage_wall_s": [m["wall_s"] for m in metrics], "steps": [m["steps"] for m in metrics],
                  "sparsity": [m["sparsity"] for m in metrics], "trunk_test_acc": [m["test_acc"] for m in metrics]}


def main():
    args = common.parse_args(__doc__.splitlines()[0], lambda p: p.add_argument(
        "--levels", type=int, default=None, help="IMP levels after level 0 (default: 3 small, 2 full)"))
    size = SIZES[common.size_name(args)]
    levels = args.levels or size["levels"]
    device = torch.device(args.device)
    methods = trials(size, levels)
    data_root = common.cifar_root(args) if methods["imp"].data.name == "cifar10" else None
    for _ in range(args.warmup):  # imports, kernels, data files: one untimed run of each
        for trial in methods.values():
            run(trial.replace(levels=1), data_root, device)
    runs = {name: [run(trial, data_root, device) for _ in range(args.repeats)] for name, trial in methods.items()}

    pts = {name: rs[0]["points_seen"] for name, rs in runs.items()}  # the same in every repeat
    trunk = {name: common.median([r["trunk_wall_s"] for r in rs]) for name, rs in runs.items()}
    distill = common.median([r["distill_wall_s"] for r in runs["distilled_imp"]])
    figures = {"imp_points_seen": pts["imp"], "distilled_imp_points_seen": pts["distilled_imp"],
               "points_ratio_imp_over_distilled": pts["imp"] / pts["distilled_imp"],
               "imp_wall_s": trunk["imp"], "distilled_trunk_wall_s": trunk["distilled_imp"],
               "distillation_wall_s": distill,
               "wall_ratio_imp_over_distilled_trunk": trunk["imp"] / trunk["distilled_imp"],
               "wall_ratio_imp_over_distilled_with_distillation": trunk["imp"] / (trunk["distilled_imp"] + distill)}
    details = {"sweep": size["sweep"], "levels": levels, "runs": runs,
               "specs": {name: trial.canonical() for name, trial in methods.items()}}
    notes = ["points_seen sums the trunk artifacts' metrics over levels 0..L (SGD steps x batch; the last "
             "partial batch of an epoch dropped). The distillation's own passes over real images are not "
             "training points; its wall time is distillation_wall_s.",
             "Wall times: the stages of a fresh store, data already loaded, after an untimed warm-up run "
             "of each method at one level; they include each level's test evaluations and checkpoint writes."]
    common.publish("distilled_vs_imp", args, f"{common.size_name(args)}, {common.device_name(device)}, "
                   f"{methods['imp'].model.name} on {methods['imp'].data.name}, {levels} levels",
                   figures, details, notes)


if __name__ == "__main__":
    main()
