"""Training points and wall time of IMP (L levels after the dense level 0) on
the real training set against the same IMP run on a distilled-size set (10
images per class, proportionally more epochs), both through raylth's
ImpLevelSpec stages (run_stage, StageContext, a fresh Store per run).

    python bench/distilled_vs_imp.py [--small|--full] [--levels L]

The distilled sets themselves come from a distillation stage not yet in
raylth; this benchmark stands in with a real subset of the distilled size
(DataSpec(train_size=100)), which costs the same to train on. It times the
IMP inner loop only, not the distillation or the final training of the ticket
on the real data.
"""

from __future__ import annotations

import tempfile

import torch

import common
from raylth.specs import DataSpec, ImpLevelSpec, ModelSpec, Step, TrainSpec, TrainStageSpec
from raylth.stages import StageContext, run_stage
from raylth.store import Store
from raylth.sweep.config import load_sweep

# small: the quickstart's data, model, training and pruning (20 epochs on the
# 1258 digits training images) vs 200 epochs on 100 images; full: ResNet-20
# on CIFAR-10, 30 epochs on 50,000 images vs 100 epochs on 100 (the paper's
# 300 x 50k vs 1000 x 100, shortened).
SIZES = {"small": {"levels": 3, "real_epochs": 20, "distilled_images": 100, "distilled_epochs": 200,
                   "distilled_batch_size": 50},
         "full": {"levels": 2, "real_epochs": 30, "distilled_images": 100, "distilled_epochs": 100,
                  "distilled_batch_size": 100, "data": "cifar10", "model": "resnet20",
                  "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                            "batch_size": 512, "schedule": "cosine"}}}


def specs(size: dict, levels: int) -> dict[str, ImpLevelSpec]:
    """The level-L spec of each method's IMP trunk."""
    base = load_sweep(common.REPO / "sweeps" / "quickstart.yaml").trials[0].spec
    data, model, train = base.data, base.model, base.train
    if "data" in size:
        data, model, train = DataSpec(name=size["data"]), ModelSpec(name=size["model"]), TrainSpec(**size["train"])
    real_train = train.replace(duration=Step(size["real_epochs"], "ep"))
    n, bs = size["distilled_images"], size["distilled_batch_size"]
    distilled_iters = size["distilled_epochs"] * max(1, n // bs)
    distilled_train = train.replace(
        duration=Step(size["distilled_epochs"], "ep"), batch_size=bs,
        # as many test evaluations per level as the real run (one per real epoch)
        eval_every=Step(max(1, distilled_iters // size["real_epochs"]), "it"))
    spec = lambda d, t: ImpLevelSpec(data=d, model=model, train=t, prune=base.prune, seeds=base.seeds,
                                     level=levels)
    return {"real": spec(data, real_train), "distilled": spec(data.replace(train_size=n), distilled_train)}


def run_imp(spec: ImpLevelSpec, data_root, device) -> dict:
    with tempfile.TemporaryDirectory(prefix="raylth-bench-imp-") as root:
        ctx = StageContext(store=Store(root), data_root=data_root, device=device)
        ctx.dataset(spec.data)  # loaded and on the device before the clock starts
        seconds, _ = common.timed(lambda: run_stage(spec, ctx), device)
        trunk = [spec.trunk_root()] + [spec.at_level(level) for level in range(1, spec.level + 1)]
        metrics = [ctx.store.get(s.id).metrics for s in trunk]
    return {"wall_s": seconds, "points_seen": sum(m["points_seen"] for m in metrics),
            "stage_wall_s": [m["wall_s"] for m in metrics], "steps": [m["steps"] for m in metrics],
            "test_acc": [m["test_acc"] for m in metrics], "sparsity": [m["sparsity"] for m in metrics]}


def warm_up(spec: ImpLevelSpec, data_root, device) -> None:
    """One epoch of the dense stage in a throwaway store: imports, kernels, data files."""
    one = TrainStageSpec(data=spec.data, model=spec.model, train=spec.train.replace(duration=Step(1, "ep")),
                         seeds=spec.seeds)
    with tempfile.TemporaryDirectory(prefix="raylth-bench-warm-") as root:
        run_stage(one, StageContext(store=Store(root), data_root=data_root, device=device))


def main():
    args = common.parse_args(__doc__.splitlines()[0], lambda p: p.add_argument(
        "--levels", type=int, default=None, help="IMP levels after level 0 (default: 3 small, 2 full)"))
    size = dict(SIZES[common.size_name(args)])
    levels = args.levels or size["levels"]
    size["levels"] = levels
    device = torch.device(args.device)
    methods = specs(size, levels)
    data_root = common.cifar_root(args) if methods["real"].data.name == "cifar10" else None
    for spec in methods.values():
        for _ in range(args.warmup):
            warm_up(spec, data_root, device)
    runs = {name: [run_imp(spec, data_root, device) for _ in range(args.repeats)]
            for name, spec in methods.items()}

    pts = {name: rs[0]["points_seen"] for name, rs in runs.items()}  # the same in every repeat
    wall = {name: common.median([r["wall_s"] for r in rs]) for name, rs in runs.items()}
    figures = {"real_points_seen": pts["real"], "distilled_points_seen": pts["distilled"],
               "points_ratio_real_over_distilled": pts["real"] / pts["distilled"],
               "real_wall_s": wall["real"], "distilled_wall_s": wall["distilled"],
               "wall_ratio_real_over_distilled": wall["real"] / wall["distilled"]}
    details = {"sizes": size, "levels": levels, "runs": runs,
               "specs": {name: spec.canonical() for name, spec in methods.items()}}
    notes = ["Stand-in: the distilled method trains on a real subset of the distilled size "
             f"(the first {size['distilled_images']} training images, about 10 per class) because the "
             "distillation stage is not written yet; a distilled set of that size costs the same to "
             "train on. Its accuracies are those of the subset, not of distilled data.",
             "points_seen sums the artifacts' metrics over levels 0..L (steps x batch; raylth drops the "
             "last partial batch of each epoch). wall_s: run_stage of level L in a fresh store, data "
             "already loaded, after an untimed one-epoch warm-up; includes the per-level test "
             "evaluations (the same number for both methods) and the store's checkpoint writes.",
             "Excludes the distillation itself and the final training of the ticket on the real data."]
    path = common.write_result("distilled_vs_imp", args, figures, details, notes)
    common.print_table(f"distilled_vs_imp ({common.size_name(args)}, {common.device_name(device)}, "
                       f"{methods['real'].model.name} on {methods['real'].data.name}, {levels} levels)",
                       figures, path)


if __name__ == "__main__":
    main()
