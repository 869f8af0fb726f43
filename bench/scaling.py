"""The driver at scale: sweeps of 10, 100 and 1,000 trials of tiny jobs
(digits, LeNet, a few SGD steps each) run by `raylth run` in a subprocess on
a fresh store, against the same Ray cluster started and stopped alone; and
the planning and dry run of the 30-seed instability sweep.

    python bench/scaling.py [--trials 10 100 1000] [--steps 2]

Per-job overhead outside training = Tune's tuning loop x job slots / jobs -
the mean time inside a job's stage (its metrics' wall_s): Tune's trial start,
store reads and writes, reporting. What a run pays once (the driver's start,
Ray's start and stop, Tune's setup) is reported apart. The driver's memory is
the peak resident size of the `raylth run` process (Ray's own processes not
counted).

Targets: per-job overhead at 1,000 trials no more than at 10, under 0.5 s on
2 cores; planning and the dry run of the 30-seed instability sweep under 2 s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

import common

# Tune's own account of a run, in the driver's log: "Total run time: 12.2 seconds (11.7 seconds for the tuning loop)"
TUNING_LOOP = re.compile(r"\(([\d.]+) seconds for the tuning loop\)")
SLOTS = os.cpu_count() or 1  # raylth run's local cluster: one 1-CPU job per core at once
INSTABILITY = common.REPO / "sweeps" / "instability_resnet18_cifar10.yaml"


def ray_start_stop(slots: int) -> float:
    code = (f"import time, ray; t = time.perf_counter(); ray.init(num_cpus={slots}); ray.shutdown(); "
            "print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split()[-1])


def tiny_sweep(trials: int, steps: int) -> dict:
    return {"name": f"scaling_{trials}", "resources": {"cpu": 1, "gpu": 0},
            "base": {"levels": 0, "data": {"name": "digits"}, "model": {"name": "lenet"},
                     "train": {"duration": f"{steps}it", "batch_size": 32, "lr": 0.05}},
            "grid": {"seed": list(range(trials))}}


def run_sweep(trials: int, steps: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="raylth-scaling-"))
    try:
        path = folder / "sweep.yaml"
        path.write_text(yaml.safe_dump(tiny_sweep(trials, steps)))
        cmd = [sys.executable, "-m", "raylth.cli.main", "run", str(path), "--storage", str(folder / "store")]
        log = (folder / "driver.log").open("w")  # a file, not a pipe: a full pipe would stall the driver
        start = time.perf_counter()
        driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        peak = 0
        watched = psutil.Process(driver.pid)
        while driver.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.2)
        wall = time.perf_counter() - start
        log.close()
        if driver.returncode != 0:
            raise SystemExit(f"{trials} trials failed (exit {driver.returncode}):\n"
                             f"{(folder / 'driver.log').read_text()[-3000:]}")
        inside = [json.loads(p.read_text())["wall_s"] for p in (folder / "store").glob("*_*/metrics.json")]
        loop = TUNING_LOOP.search((folder / "driver.log").read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"trials": trials, "jobs": len(inside), "wall_s": wall, "stage_mean_s": sum(inside) / len(inside),
            "tuning_loop_s": float(loop.group(1)) if loop else None, "driver_peak_rss_mib": peak / 2 ** 20}


def planning(data_root: Path, seeds: int = 30) -> dict:
    """Planning (sweep, jobs) and the whole dry run (checks, data read, states against an empty
    store, pricing) in this process, each the first in it; then the dry run as a user runs it (a
    fresh interpreter: Python's and torch's imports included)."""
    import raylth
    from raylth.api import _as_sweep
    from raylth.sweep.jobs import sweep_jobs

    overrides = [f"grid.seed={list(range(seeds))}"]
    start = time.perf_counter()
    sweep = _as_sweep(INSTABILITY, overrides)
    jobs = sweep_jobs(sweep.trials)
    planned = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as store:
        start = time.perf_counter()
        raylth.run(INSTABILITY, storage=store, data_root=data_root, overrides=overrides, dry_run=True)
        in_process = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as store:
        cmd = [sys.executable, "-m", "raylth.cli.main", "run", str(INSTABILITY), *overrides, "--dry-run",
               "--storage", store, "--data-root", str(data_root)]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        dry = time.perf_counter() - start
        imports = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); "
                                  "import raylth.cli.main, torch; print(time.perf_counter() - t)"],
                                 capture_output=True, text=True, check=True)
    if done.returncode != 0:
        raise SystemExit(f"the dry run failed: {done.stderr[-2000:]}")
    return {"seeds": seeds, "jobs": len(jobs), "plan_s": planned, "dry_run_in_process_s": in_process,
            "dry_run_s": dry,
            "dry_run_imports_s": float(imports.stdout.split()[-1]), "dry_run_head": done.stdout.splitlines()[0]}


def main():
    def configure(p):
        p.add_argument("--trials", type=int, nargs="+", default=None, help="sweep sizes (default 10 100 1000)")
        p.add_argument("--steps", type=int, default=2, help="SGD steps per job")

    args = common.parse_args(__doc__.splitlines()[0], configure)
    trials = args.trials or [10, 100, 1000]
    start_stop = common.median([ray_start_stop(SLOTS) for _ in range(max(args.repeats, 1))])
    runs = []
    for n in trials:
        run = run_sweep(n, args.steps)
        loop = run["tuning_loop_s"] if run["tuning_loop_s"] is not None else run["wall_s"] - start_stop
        run["overhead_per_job_s"] = loop * SLOTS / run["jobs"] - run["stage_mean_s"]
        run["fixed_s"] = run["wall_s"] - loop  # the driver's start, Ray's start and stop, Tune's setup
        runs.append(run)
        print(f"{n:>5} trials: {run['wall_s']:.1f} s ({loop:.1f} s in Tune's loop), "
              f"{run['overhead_per_job_s']:.3f} s overhead a job, driver {run['driver_peak_rss_mib']:.0f} MiB",
              flush=True)
    plan = planning(common.cifar_root(args))
    figures = {f"overhead_per_job_s_{r['trials']}": r["overhead_per_job_s"] for r in runs}
    figures |= {f"driver_peak_rss_mib_{r['trials']}": r["driver_peak_rss_mib"] for r in runs}
    figures |= {f"fixed_s_{r['trials']}": r["fixed_s"] for r in runs}
    figures |= {"ray_start_stop_s": start_stop, "plan_30_seeds_s": plan["plan_s"],
                "dry_run_30_seeds_in_process_s": plan["dry_run_in_process_s"],
                "dry_run_30_seeds_s": plan["dry_run_s"], "dry_run_imports_s": plan["dry_run_imports_s"]}
    notes = ["overhead_per_job_s = tuning_loop_s x slots / jobs - stage_mean_s, tuning_loop_s as Tune reports it in "
             "the driver's log: what a job costs outside its stage's training and evaluation (Tune's trial start "
             "and end, store reads and writes, reporting), with every slot assumed busy (an upper bound: the "
             "first trials' actors start inside the loop, and the sweep's tail leaves slots idle).",
             "fixed_s = wall_s - tuning_loop_s: paid once per run (the driver's imports and checks, Ray's start and "
             "stop, Tune's setup); ray_start_stop_s is Ray's share, measured alone.",
             "driver_peak_rss_mib: peak resident memory of the `raylth run` process, sampled every 0.2 s.",
             f"planning: {plan['jobs']} jobs of sweeps/instability_resnet18_cifar10.yaml at 30 seeds; plan_s in "
             "this process (sweep, jobs), dry_run_30_seeds_in_process_s raylth.run(..., dry_run=True) in this "
             "process (checks, the data read, job states, pricing), dry_run_s a fresh interpreter's `raylth run "
             "--dry-run` (its imports, dry_run_imports_s, included)."]
    common.publish("scaling", args, f"{common.device_name('cpu')}, {SLOTS} slots", figures,
                   {"runs": runs, "planning": plan,
                    "target": {"overhead_per_job_s": "< 0.5 and not growing",
                               "dry_run_30_seeds_in_process_s": "< 2"}},
                   notes)


if __name__ == "__main__":
    main()
