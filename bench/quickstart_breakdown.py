"""Where the wall time of `raylth run sweeps/quickstart.yaml` goes: the
command runs as a subprocess against a fresh store; the stored artifacts'
metrics (wall_s, the time inside each stage's training and evaluation) and
finish times attribute it. Reference in the same run: `ray.init(num_cpus=2)`
+ `ray.shutdown()` alone.

    python bench/quickstart_breakdown.py [--repeats N] [--keep-store]

(--small/--full and --data-root are accepted for a uniform command line; the
quickstart has one size and uses the bundled digits data.)

Target: under 30% of the wall time outside training/evaluation.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from raylth.store import Store

SWEEP = common.REPO / "sweeps" / "quickstart.yaml"


def ray_start_stop() -> dict:
    import ray
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2)  # a new local instance, as the quickstart starts
    up = time.perf_counter()
    ray.shutdown()
    return {"init_s": up - start, "shutdown_s": time.perf_counter() - up, "total_s": time.perf_counter() - start}


def union_length(intervals) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def run_quickstart(keep: bool) -> dict:
    storage = Path(tempfile.mkdtemp(prefix="raylth-quickstart-"))
    cmd = [sys.executable, "-m", "raylth.cli.main", "run", str(SWEEP), "--storage", str(storage)]
    log = storage.parent / f"{storage.name}.log"
    try:
        launched = time.time()
        with open(log, "w") as out:
            rc = subprocess.run(cmd, cwd=common.REPO, stdout=out, stderr=subprocess.STDOUT).returncode
        ended = time.time()
        if rc != 0:
            tail = log.read_text().splitlines()[-30:]
            raise SystemExit(f"quickstart failed (exit {rc}); log {log}:\n" + "\n".join(tail))
        # Each artifact: finished at record['created'] after metrics['wall_s'] inside its stage.
        stages = [(a.record["created"] - a.metrics["wall_s"], a.record["created"], a.kind)
                  for a in Store(storage).artifacts() if "wall_s" in a.metrics]
    finally:
        if not keep:
            shutil.rmtree(storage, ignore_errors=True)
            log.unlink(missing_ok=True)
    wall = ended - launched
    inside = union_length([(a, b) for a, b, _ in stages])
    first, last = min(a for a, _, _ in stages), max(b for _, b, _ in stages)
    # wall = until_first_stage + stage_busy + between_stages + after_last_stage
    return {"wall_s": wall, "artifacts": len(stages), "stage_wall_sum_s": sum(b - a for a, b, _ in stages),
            "stage_busy_s": inside, "outside_share": 1 - inside / wall,
            "until_first_stage_s": first - launched, "between_stages_s": (last - first) - inside,
            "after_last_stage_s": ended - last,
            "storage": str(storage) if keep else None, "command": " ".join(cmd)}


def main():
    args = common.parse_args(__doc__.splitlines()[0], lambda p: p.add_argument(
        "--keep-store", action="store_true", help="keep the temporary store and log"))
    import ray  # noqa: F401  (imported before timing ray.init)

    ray_runs = [ray_start_stop() for _ in range(args.warmup + args.repeats)][args.warmup:]
    # The quickstart is timed cold, as a user meets it: no warm-up run.
    runs = [run_quickstart(args.keep_store) for _ in range(args.repeats)]
    med = lambda key, rs=runs: common.median([r[key] for r in rs])
    figures = {"quickstart_wall_s": med("wall_s"), "stage_wall_sum_s": med("stage_wall_sum_s"),
               "stage_busy_s": med("stage_busy_s"), "outside_share_pct": 100 * med("outside_share"),
               "until_first_stage_s": med("until_first_stage_s"), "between_stages_s": med("between_stages_s"),
               "after_last_stage_s": med("after_last_stage_s"),
               "ray_init_s": med("init_s", ray_runs), "ray_init_shutdown_s": med("total_s", ray_runs)}
    notes = ["stage_wall_sum_s: the sum of every artifact's metrics wall_s (training plus the per-epoch "
             "evaluation inside the stage, trials running in parallel counted each); stage_busy_s: the "
             "union of those intervals [created - wall_s, created], i.e. time with at least one stage "
             "training; outside_share_pct = 1 - stage_busy_s / quickstart_wall_s.",
             "until_first_stage_s: process launch to the first stage starting to train (Python and Ray "
             "start-up, Tune set-up, worker launch, data loading). ray_init_s / ray_init_shutdown_s: "
             "ray.init(num_cpus=2) (+ ray.shutdown()) alone in this process, median after a warm-up. "
             "between_stages_s: time inside the run with no stage training (trial and stage "
             "hand-overs, checkpoint loading, pruning, jobs waiting for the jobs they read from).",
             "The quickstart is timed cold (no warm-up run): each repeat uses a fresh store."]
    common.publish("quickstart_breakdown", args,
                   f"{common.device_name(args.device)}, {runs[0]['artifacts']} artifacts", figures,
                   {"runs": runs, "ray_start_stop": ray_runs, "target": {"outside_share_pct": "< 30"}}, notes)


if __name__ == "__main__":
    main()
