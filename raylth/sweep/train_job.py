"""One job's training as a Ray Train run of DDP workers, launched from its Tune trial.

Every worker runs the job's stages; rank 0 decides what is missing, holds
the store's lock and writes artifacts; the others train their shard of each
global batch and read what rank 0 stored (the storage root must be shared by
all workers: one machine, NFS/EFS, or a bucket URI). A worker that
dies is restarted by Ray Train (``max_failures``); the job then resumes from
the store: finished artifacts are reused and the interrupted stage continues
from its last epoch state, so the result equals an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path


def _worker_loop(config: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch

    from raylth.engine.distributed import Dist
    from raylth.stages import StageContext, run_stage
    from raylth.store import Store

    def progress(metrics: dict) -> None:  # a barrier on all ranks: every rank reports
        ray.train.report({k: metrics[k] for k in config["progress_keys"] if k in metrics})

    def evaluation(metrics: dict) -> None:
        # every rank evaluates at the same steps and reports (a collective); Ray Train
        # hands rank 0's values to the Tune trial (TuneReportCallback)
        ray.train.report(metrics)

    ctx = StageContext(store=Store(config["storage"]), data_root=Path(config["data_root"]),
                       device=ray.train.torch.get_device(), dist=Dist.current(), report=progress,
                       on_eval=evaluation,
                       node=ray.get_runtime_context().get_node_id(), compile=config["compile"],
                       fast=config.get("fast"),
                       planned=tuple(config["specs"]))
    for spec in config["specs"]:
        run_stage(spec, ctx)


def fit_job_with_train(specs, *, storage, data_root: Path, workers: int, resources: dict,
                       max_failures: int, progress_keys, run_name: str, compile: bool = False,
                       fast: bool | None = None) -> None:
    """Run one job's stage ``specs`` on ``workers`` DDP workers (gloo on CPU, NCCL on GPUs)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raylth.store import Store

    per_worker = {"CPU": resources["cpu"]} | ({"GPU": resources["gpu"]} if resources["gpu"] else {})
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"specs": tuple(specs), "storage": str(storage), "data_root": str(data_root),
                           "progress_keys": list(progress_keys), "compile": compile, "fast": fast},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=bool(resources["gpu"]),
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=run_name, **Store(storage).tune_storage("train"),
                             failure_config=FailureConfig(max_failures=max_failures),
                             callbacks=[TuneReportCallback()]),
    )
    trainer.fit()
