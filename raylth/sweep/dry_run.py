"""``raylth run SWEEP --dry-run``: what a sweep would do, without starting Ray.

Trials, jobs and artifacts by stage, which are stored already (checked as
``raylth run`` checks them), the resources each job asks for, and what the
rest would cost: device-hours and the wall time on a number of devices.

The cost counts the training of every stage that trains a network (dense
runs, IMP levels, controls, children): images x passes x 3 forward passes'
FLOPs (forward and backward), the FLOPs counted by ``torch.utils.flop_counter``
on one image. The rate they run at is, in order of preference:
  1. measured: ``bench/results/epoch_time-<device kind>.json`` (ResNet-18 on
     CIFAR-10 images/s on that device kind) turned into achieved FLOP/s;
  2. this machine's measured float32 matmul rate (CPU sweeps) times 0.3;
  3. the device kind's nominal bf16 dense peak (GPU sweeps; ``--device-kind``,
     default nvidia-a10g, cluster.yaml's GPU workers) times 0.3; half that for
     a sweep with ``precision: float32`` (TF32 convolutions).
Evaluations, distillation and analyses (LMC, Hessians, landscapes) are
counted but not priced: the estimate is of training, a lower bound.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from raylth.engine import limits
from raylth.errors import RaylthError, did_you_mean
from raylth.specs import ModelSpec
from raylth.sweep.config import Sweep
from raylth.sweep.jobs import Job

UTILIZATION = 0.3  # assumed share of the peak a small-image training step reaches
PEAK_BF16_FLOPS = {"nvidia-a10g": 70e12, "nvidia-l4": 121e12, "nvidia-a100": 312e12, "nvidia-h100": 989e12,
                   "nvidia-h200": 989e12, "nvidia-v100": 125e12, "nvidia-t4": 65e12}
DEFAULT_GPU = "nvidia-a10g"
BENCH = Path(__file__).resolve().parents[2] / "bench" / "results"


@dataclass
class JobPlan:
    job: Job
    state: str
    stored: int
    flops: float = 0.0  # training FLOPs of what is left
    seconds: float = 0.0  # estimated device time of that
    unpriced: list[str] = field(default_factory=list)  # kinds left that are not priced


@dataclass
class DryRun:
    sweep: Sweep
    storage: str
    jobs: list[JobPlan]
    rate: float  # FLOP/s assumed for one job
    rate_source: str
    device_kind: str
    devices: float
    stored: set[str] = field(default_factory=set)  # ids of the artifacts stored already

    def critical_path_s(self) -> float:
        """The longest chain of jobs that need one another (what no number of devices shortens)."""
        cost = {p.job.label: p.seconds for p in self.jobs}
        needs = {p.job.label: p.job.needs for p in self.jobs}
        memo: dict[str, float] = {}

        def finish(label: str) -> float:
            if label not in memo:
                memo[label] = cost.get(label, 0.0) + max((finish(n) for n in needs.get(label, ())), default=0.0)
            return memo[label]
        return max((finish(label) for label in cost), default=0.0)

    def lines(self) -> list[str]:
        sweep, jobs = self.sweep, self.jobs
        left = [p for p in jobs if p.state != "finished"]
        ids = {i for p in jobs for i in p.job.ids}  # a job may hold another's artifact (IMP's level 0 is the dense run)
        artifacts, stored = len(ids), len(ids & self.stored)
        out = [f"{sweep.name}: {len(sweep.trials)} trials, {len(jobs)} jobs ({len(jobs) - len(left)} stored, "
               f"{len(left)} to run), {artifacts} artifacts ({stored} stored) in {self.storage}"]
        kinds: dict[str, list[int]] = {}
        for spec in {spec.id: spec for p in jobs for spec in p.job.specs}.values():
            counts = kinds.setdefault(spec.kind, [0, 0])
            counts[0] += 1
            counts[1] += spec.id in self.stored
        out.append(f"  {'stage':<14}{'artifacts':>10}{'stored':>8}{'to compute':>12}")
        out += [f"  {kind:<14}{n:>10}{done:>8}{n - done:>12}" for kind, (n, done) in sorted(kinds.items())]
        for plan in jobs if len(jobs) <= 30 else left[:30]:
            hours = f"{plan.seconds / 3600:.3g} device-h" if plan.seconds else ""
            out.append(f"    {plan.state:<11} {plan.stored}/{len(plan.job.ids)} stored  {plan.job.label}  {hours}")
        if len(jobs) > 30 and len(left) > 30:
            out.append(f"    ... and {len(left) - 30} more to run")
        gpu, cpu = sweep.resources["gpu"], sweep.resources["cpu"]
        out.append(f"resources per job: {sweep.workers} worker(s) x {{cpu: {cpu:g}, gpu: {gpu:g}}}")
        total = sum(p.seconds for p in left)
        unit = "GPU" if gpu else "CPU"
        per_job = sweep.workers * (gpu or cpu)
        device = self.device_kind if gpu else "this machine's CPU"
        out.append(f"estimated cost of what is left: {total * per_job / 3600:.3g} {unit}-hours on {device} "
                   f"({self.rate / 1e12:.3g} TFLOP/s per job: {self.rate_source})")
        slots = max(1, int(self.devices // max(per_job, 1e-9))) if per_job else self.devices
        if sweep.max_concurrent:
            slots = min(slots, sweep.max_concurrent)
        wall = max(self.critical_path_s(), total / slots)
        out.append(f"wall time: ~{_duration(wall)} on {self.devices:g} {unit}(s) ({slots} jobs at once; the "
                   f"longest chain of dependent jobs alone takes {_duration(self.critical_path_s())})")
        unpriced: dict[str, int] = {}
        for plan in left:
            for kind in plan.unpriced:
                unpriced[kind] = unpriced.get(kind, 0) + 1
        if unpriced:
            out.append("not priced (evaluation, distillation, analyses): "
                       + ", ".join(f"{n} {kind}" for kind, n in sorted(unpriced.items())))
        out.append("dry run: nothing was started or written; run without --dry-run to start")
        return out


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def dry_run(sweep: Sweep, store, data_root: Path, device_kind: str | None = None, devices: float = 1) -> DryRun:
    from raylth.sweep.plan import job_states

    gpu = bool(sweep.resources["gpu"])
    kind = (device_kind or DEFAULT_GPU) if gpu else "cpu"
    if gpu and kind not in PEAK_BF16_FLOPS:
        raise RaylthError(f"--device-kind: unknown device kind {kind!r}{did_you_mean(kind, PEAK_BF16_FLOPS)}; "
                          f"known: {', '.join(sorted(PEAK_BF16_FLOPS))}")
    rate, source = _rate(kind, sweep, data_root)
    pricer = _Pricer(store, data_root)
    plans, stored, priced = [], set(), set()
    for state in job_states(store, sweep.trials):
        plan = JobPlan(state.job, state.state, state.finished)
        stored |= state.stored
        for spec in state.job.specs:
            if spec.id not in state.stored and state.state != "running" and spec.id not in priced:
                # one job computes an artifact two jobs share
                priced.add(spec.id)
                flops = pricer.flops(spec)
                if flops is None:
                    plan.unpriced.append(spec.kind)
                else:
                    plan.flops += flops
                    plan.seconds += flops / rate / max(sweep.workers, 1)
        plans.append(plan)
    return DryRun(sweep, store.location, plans, rate, source, kind, devices, stored)


class _Pricer:
    """Training FLOPs of one stage spec (None: not priced)."""

    def __init__(self, store, data_root: Path):
        self.store, self.data_root = store, data_root
        self._forward: dict = {}

    def flops(self, spec) -> float | None:
        from raylth.engine.data import check_dataset, steps_per_epoch
        from raylth.stages.registry import STAGES

        stage = STAGES.get(spec.kind)
        if stage is None or not stage.trains or stage.recipe is None:
            return None
        try:
            data, model, train, _ = stage.recipe(spec, self.store)
            size = check_dataset(data, self.data_root)  # read once per process (the checks read it first)
            n, shape, classes = size.train, size.input_shape, size.num_classes
        except Exception:  # a recipe or data set that needs a stored input not there yet
            return None
        per_epoch = steps_per_epoch(n, train.batch_size, train.last_batch == "drop")
        per_step = min(train.batch_size, n) if train.last_batch == "drop" else n / per_epoch
        images = train.duration.iterations(per_epoch) * per_step
        return 3 * images * self.forward(model, shape, classes)

    def forward(self, model, shape, classes) -> float:
        key = (model, shape, classes)
        if key not in self._forward:
            self._forward[key] = forward_flops(model, shape, classes)
        return self._forward[key]


def forward_flops(model_spec, shape, classes) -> float:
    """FLOPs of one image's forward pass: two per multiply-add of every convolution and linear
    layer, which is what torch.utils.flop_counter counts in these models (tests/test_models.py
    compares the two on every registered model). Counted with forward hooks because the flop
    counter's first use imports torch._dynamo, about 2 s of a dry run."""
    from raylth.engine.models import build_model

    net = build_model(model_spec, shape, classes, seed=0).eval()
    total = [0]

    def conv(module, inputs, output):
        total[0] += 2 * output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)

    def linear(module, inputs, output):
        total[0] += 2 * output.numel() * module.in_features

    hooks = [m.register_forward_hook(conv if isinstance(m, torch.nn.modules.conv._ConvNd) else linear)
             for m in net.modules() if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))]
    with torch.no_grad():
        net(torch.zeros(1, *shape))
    for hook in hooks:
        hook.remove()
    return float(total[0])


def _rate(kind: str, sweep: Sweep, data_root: Path) -> tuple[float, str]:
    """FLOP/s one job reaches on ``kind``, and where the figure comes from.
    A CPU figure in bench/results is another machine's: the CPU is measured here."""
    float32 = sweep.precision == "float32"  # on a GPU: TF32 convolutions, about half the bf16 rate
    measured = None if kind == "cpu" or float32 else _bench_rate(kind)  # the bench runs the bf16 fast path
    if measured is not None:
        return measured
    if kind == "cpu":  # a job's threads: what it asks, at most what this machine or container gives
        cpus = limits.cpus()
        threads = max(1, min(int(sweep.resources["cpu"] or 1), int(cpus.amount)))
        return (_matmul_rate(threads) * UTILIZATION,
                f"measured matmul rate on {threads} thread(s) x {UTILIZATION}; {cpus.source}: {cpus.amount:g}")
    if float32:
        return PEAK_BF16_FLOPS[kind] / 2 * UTILIZATION, f"nominal TF32 peak of {kind} (half its bf16) x {UTILIZATION}"
    return PEAK_BF16_FLOPS[kind] * UTILIZATION, f"nominal bf16 peak of {kind} x {UTILIZATION}"


def _bench_rate(kind: str) -> tuple[float, str] | None:
    path = BENCH / f"epoch_time-{kind}.json"
    try:
        record = json.loads(path.read_text())
        images_per_s = float(record["figures"]["raylth_dense_images_per_s"])
        width = record["details"]["sizes"]["width"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    per_image = 3 * forward_flops(ModelSpec(name="resnet18", width=width), (3, 32, 32), 10)
    return images_per_s * per_image, f"measured ResNet-18 training rate in {path.name}"


def _matmul_rate(threads: int) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(512, 512)
        a @ a  # warm-up
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < 0.2:
            a @ a
            count += 1
        return count * 2 * 512 ** 3 / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
