"""A real study end to end through raylth's stages, without Ray: ResNet-18 on
CIFAR-10, 2 IMP levels, a random-pruning control, an instability analysis of
2 children of the dense network and a sharpness job, stored and reported as
a sweep's would be (the sweep record, every job in dependency order, then
``raylth report``'s files).

    python bench/gpu_study.py [--small|--full] [--device cuda]

--full: ResNet-18 width 64 on all of CIFAR-10, 2 epochs per training;
--small: width 8 on 100 images per class, 1 epoch (the CPU check of the script).
"""

from __future__ import annotations

import graphlib
import shutil
import sys
import time

import torch

import common
from raylth.reporting.report import write_report
from raylth.stages import StageContext, run_stage
from raylth.store import Store
from raylth.sweep.config import parse_sweep
from raylth.sweep.jobs import sweep_jobs
from raylth.sweep.plan import check_analysis_inputs, check_trials, write_record

SIZES = {"full": {"width": 64, "epochs": "2ep", "batch_size": 512, "probes": 20},
         "small": {"width": 8, "epochs": "1ep", "batch_size": 100, "probes": 4}}


def study(size: dict) -> dict:
    return {
        "name": "gpu_study",
        "base": {"levels": 2, "data": {"name": "cifar10"}, "model": {"name": "resnet18", "width": size["width"]},
                 "train": {"lr": 0.1, "batch_size": size["batch_size"], "duration": size["epochs"]},
                 "prune": {"fraction": 0.2, "rewind": "0it"}, "seed": 0,
                 "sharpness": {"checkpoint": "init", "levels": [2], "probes": size["probes"], "iterations": 5,
                               "batches": 2, "batch_size": 128}},
        "per_method": {"dense": {"lmc": {"children": 2, "alphas": 5, "train_eval": 1000}}},
        "grid": {"method": ["dense", "imp", "random_prune"]},
    }


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    size = SIZES[common.size_name(args)]
    data_root = common.cifar_root(args)
    store_root = common.CACHE / f"gpu_study-{common.device_slug(args.device)}"
    shutil.rmtree(store_root, ignore_errors=True)
    sweep = parse_sweep(study(size), where="gpu_study")
    check_trials(sweep, data_root)
    store = Store(store_root)
    check_analysis_inputs(sweep, store)
    write_record(store, sweep)
    jobs = {job.label: job for job in sweep_jobs(sweep.trials)}
    order = graphlib.TopologicalSorter({label: job.needs for label, job in jobs.items()}).static_order()
    ctx = StageContext(store=store, data_root=data_root, device=torch.device(args.device))
    seconds = {}
    for label in order:
        started = time.perf_counter()
        for spec in jobs[label].specs:
            run_stage(spec, ctx)
        common.sync(args.device)
        seconds[label] = time.perf_counter() - started
    report = write_report(store_root, store_root / "report", sweep.name)
    figures = {"jobs": len(jobs), "total_s": sum(seconds.values()), "report_files": len(report),
               "ray_imported": "ray" in sys.modules} | {f"{label} s": s for label, s in seconds.items()}
    common.publish("gpu_study", args, f"ResNet-18 width {size['width']}, {size['epochs']} per training",
                   figures, details={"size": size, "report": sorted(str(p) for p in report.values())})


if __name__ == "__main__":
    main()
