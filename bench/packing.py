"""Throughput of k small training jobs packed on one device as Ray tasks with
fractional resources (num_gpus=1/k on a GPU, num_cpus=1 each on the CPU),
each running raylth's Trainer for a fixed number of steps; the reference is
k=1 in the same run. Without Ray (``--backend processes``, the default where
Ray is not installed, e.g. on the GPU check machine) the k jobs are k plain
processes sharing the device.

    python bench/packing.py [--small|--full] [--backend ray|processes]

GPU target (full size): 4 packed jobs >= 2.5x the images/s of one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import time

import torch

import common

try:
    import ray
except ImportError:  # the GPU check machine: plain processes
    ray = None

SIZES = {"full": {"ks": [1, 2, 4, 8], "data": "cifar10", "train_size": 10000, "model": "resnet20",
                  "width": 16, "batch_size": 128, "warmup_steps": 50, "steps": 500},
         "small": {"ks": [1, 2], "data": "digits", "train_size": None, "model": "lenet",
                   "width": None, "batch_size": 64, "warmup_steps": 50, "steps": 2000}}


class Barrier:
    """Lets the k jobs start their timed steps together, after their warm-up."""

    def __init__(self, n: int):
        self.n, self.arrived, self.event = n, 0, asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.n:
            self.event.set()
        await self.event.wait()


def job(size: dict, data_root: str | None, device: str, seed: int, wait) -> dict:
    """One packed job; ``wait()`` returns once every job has warmed up."""
    from raylth.engine.data import load_dataset
    from raylth.engine.models import build_model
    from raylth.engine.train import Trainer
    from raylth.specs import DataSpec, ModelSpec, Seeds, Step, TrainSpec

    device = torch.device(device)
    data = load_dataset(DataSpec(name=size["data"], train_size=size["train_size"]), data_root)
    model = build_model(ModelSpec(name=size["model"], width=size["width"]), data.input_shape,
                        data.num_classes, seed=seed)
    warm, steps = size["warmup_steps"], size["steps"]
    spec = TrainSpec(batch_size=size["batch_size"], duration=Step(warm + steps, "it"), lr=0.05)
    # No test split: the Trainer's end-of-run evaluation costs nothing. (The
    # task runs in a Ray worker, where this folder's `common` is not importable.)
    data = dataclasses.replace(data, test_x=data.test_x[:0], test_y=data.test_y[:0])
    trainer = Trainer(model, data, spec, Seeds.all(seed),
                      augment=data.augment, device=device)
    stamps = {}

    def on_save(step: int, _weights) -> None:  # called at the two steps in save_at
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step == warm:  # every job done warming up before any starts the clock
            wait()
        stamps[step] = time.time()  # wall clock: comparable across the k processes

    trainer.run(save_at=(warm, warm + steps), on_save=on_save)
    return {"start": stamps[warm], "end": stamps[warm + steps],
            "images": steps * min(size["batch_size"], len(data.train_y)),
            "torch_threads": torch.get_num_threads(), "pid": os.getpid()}


def _ray_job(size, data_root, device, seed, barrier):
    return job(size, data_root, device, seed, lambda: ray.get(barrier.wait.remote()))


def _process_job(size, data_root, device, seed, barrier, results):
    torch.set_num_threads(1)
    results.put(job(size, data_root, device, seed, barrier.wait))


def run_packed(k: int, size: dict, data_root, device: str, backend: str) -> dict:
    if backend == "ray":
        barrier = ray.remote(num_cpus=0)(Barrier).remote(k)
        resources = {"num_gpus": 1 / k, "num_cpus": 1} if device == "cuda" else {"num_cpus": 1}
        task = ray.remote(_ray_job)
        jobs = ray.get([task.options(**resources).remote(size, data_root, device, seed, barrier)
                        for seed in range(k)])
    else:
        mp = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        barrier, results = mp.Barrier(k), mp.Queue()
        procs = [mp.Process(target=_process_job, args=(size, data_root, device, seed, barrier, results))
                 for seed in range(k)]
        for p in procs:
            p.start()
        jobs = [results.get() for _ in procs]
        for p in procs:
            p.join()
    span = max(j["end"] for j in jobs) - min(j["start"] for j in jobs)
    images = sum(j["images"] for j in jobs)
    return {"k": k, "span_s": span, "images": images, "images_per_s": images / span,
            "job_s": [j["end"] - j["start"] for j in jobs], "torch_threads": [j["torch_threads"] for j in jobs]}


def main():
    args = common.parse_args(__doc__.splitlines()[0], lambda p: p.add_argument(
        "--backend", choices=["ray", "processes"], default="ray" if ray is not None else "processes",
        help="k Ray tasks with fractional resources, or k plain processes (no Ray needed)"))
    size = SIZES[common.size_name(args)]
    data_root = str(common.cifar_root(args)) if size["data"] == "cifar10" else None
    cpus = os.cpu_count() or 1
    if args.device == "cpu" and max(size["ks"]) > cpus:
        size["ks"] = [k for k in size["ks"] if k <= cpus]
    if args.backend == "ray":
        ray.init(address="local", num_cpus=cpus, num_gpus=1 if args.device == "cuda" else 0,
                 include_dashboard=False, log_to_driver=False)
    try:
        for _ in range(args.warmup):  # worker processes, imports, data files, kernels
            run_packed(max(size["ks"]), size, data_root, args.device, args.backend)
        runs = {k: [run_packed(k, size, data_root, args.device, args.backend) for _ in range(args.repeats)]
                for k in size["ks"]}
    finally:
        if args.backend == "ray":
            ray.shutdown()

    rate = {k: common.median([r["images_per_s"] for r in rs]) for k, rs in runs.items()}
    figures = {}
    for k in size["ks"]:
        figures[f"k{k}_images_per_s"] = rate[k]
        figures[f"k{k}_ratio_vs_k1"] = rate[k] / rate[1]
    notes = [f"Backend: {args.backend}. Each job: its own Ray task (or process) loading the data, building the model and running "
             f"{size['warmup_steps']} untimed warm-up steps, then {size['steps']} timed steps after "
             "a barrier; images/s = all jobs' images / (last end - first start).",
             "On the CPU each job holds num_cpus=1 (Ray sets its torch threads to 1), so k jobs use "
             "k cores: the ratio there measures core scaling, not packing on one accelerator."]
    common.publish("packing", args, f"{common.size_name(args)}, {common.device_name(args.device)}, "
                   f"{size['model']} on {size['data']}, {size['steps']} steps/job", figures,
                   {"sizes": size, "runs": {str(k): rs for k, rs in runs.items()},
                    "target_full_gpu": {"k4_ratio_vs_k1": ">= 2.5"}}, notes)


if __name__ == "__main__":
    main()
