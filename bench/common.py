"""What every benchmark shares: arguments, timing, CIFAR data, JSON results.

Each benchmark is a script run as ``python bench/NAME.py [--small|--full]
[--device auto|cpu|cuda] [--data-root DIR] [--repeats N]``; this folder is on
sys.path then, so ``import common`` works. Sizes default to --small without
CUDA and to --full with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CACHE = REPO / ".bench-data"  # git-ignored


# -- arguments -----------------------------------------------------------------
def parse_args(description: str, configure=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: cuda when available, else cpu")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--small", dest="small", action="store_true", default=None,
                      help="CPU-friendly sizes (the default without CUDA)")
    size.add_argument("--full", dest="small", action="store_false",
                      help="full sizes (the default with CUDA)")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py; when it is missing "
                   "a CIFAR-10 copy is built under .bench-data/ from the bundled JPEG archive")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs before the repeats")
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON results")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader workers of the reference loops (default: min(4, cpu count))")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads of this process (default: torch's, one per core)")
    if configure:
        configure(p)
    args = p.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here")
    if args.small is None:
        args.small = args.device != "cuda"
    if args.num_workers is None:
        args.num_workers = min(4, os.cpu_count() or 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    _LOAD["start"] = _loadavg()
    return args


_LOAD: dict = {}


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def size_name(args) -> str:
    return "small" if args.small else "full"


# -- timing --------------------------------------------------------------------
def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    """(seconds, fn()) with the device synchronised on both sides."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def repeat(fn, device, repeats: int, warmup: int = 1) -> dict:
    """Run fn warmup times untimed, then repeats times timed: median and all times."""
    for _ in range(warmup):
        fn()
    times = [timed(fn, device)[0] for _ in range(repeats)]
    return {"median_s": statistics.median(times), "times_s": times}


def median(values) -> float:
    return statistics.median(values)


# -- data ----------------------------------------------------------------------
def _jpg_script() -> Path:
    candidates = [os.environ.get("RAYLTH_CIFAR_JPG_SCRIPT"),
                  REPO.parent / "shared" / "data" / "cifar10_from_jpg.py",
                  REPO / "shared" / "data" / "cifar10_from_jpg.py"]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    raise SystemExit("no cifar10_from_jpg.py found (looked beside the repository in "
                     "../shared/data and in shared/data; or set RAYLTH_CIFAR_JPG_SCRIPT), "
                     "and no --data-root holding cifar-10-batches-py was given")


def cifar_root(args) -> Path:
    """A folder holding cifar-10-batches-py: --data-root when it has one, else
    a copy built once under .bench-data/ (all 5000 images per class for full
    runs, 100 per class for --small)."""
    if args.data_root and (Path(args.data_root) / "cifar-10-batches-py").is_dir():
        return Path(args.data_root)
    if args.data_root:
        print(f"[data] no cifar-10-batches-py under {args.data_root}; using the .bench-data cache")
    limit = 100 if args.small else 0
    root = CACHE / (f"cifar10-{limit}-per-class" if limit else "cifar10-full")
    if (root / "cifar-10-batches-py").is_dir():
        return root
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    cmd = [sys.executable, str(_jpg_script()), str(tmp)] + (["--limit-per-class", str(limit)] if limit else [])
    print(f"[data] building {root} ({' '.join(cmd[1:])})", flush=True)
    subprocess.run(cmd, check=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, root)
    except OSError:  # built by a parallel run first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def without_test(data):
    """The data set with an empty test split: the Trainer's per-epoch test
    evaluation then costs nothing, so a timed epoch is training alone."""
    import dataclasses
    return dataclasses.replace(data, test_x=data.test_x[:0], test_y=data.test_y[:0])


# -- results -------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_name(device) -> str:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()


def device_slug(device) -> str:
    device = torch.device(device)
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def _ray_version() -> str | None:
    try:  # GPU check machines run the engine without Ray
        import ray
    except ImportError:
        return None
    return ray.__version__


def environment(device) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                                    text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
            "ray": _ray_version(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "git_commit": commit, "git_dirty": dirty,
            # 1/5/15-min load averages when the benchmark started and ended: other
            # work on a shared machine shows up here (and in the timings)
            "loadavg_start": _LOAD.get("start"), "loadavg_end": _loadavg(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_result(name: str, args, figures: dict, details: dict | None = None,
                 notes: list[str] | None = None) -> Path:
    out = Path(args.out) / f"{name}-{device_slug(args.device)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "size": size_name(args), "environment": environment(args.device),
              "args": vars(args), "figures": figures, "details": details or {}, "notes": notes or []}
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return out


def publish(name: str, args, title: str, figures: dict, details: dict | None = None,
            notes: list[str] | None = None) -> Path:
    """Write the JSON record and print the table: the end of every benchmark."""
    path = write_result(name, args, figures, details, notes)
    print_table(f"{name} ({title})", figures, path)
    return path


def print_table(title: str, figures: dict, path: Path | None = None) -> None:
    width = max(len(k) for k in figures)
    print(f"\n{title}")
    print("-" * (width + 16))
    for key, value in figures.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {shown:>12}")
    if path:
        print(f"-> {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


# -- bench/gpu_check.sh's helpers -------------------------------------------------
def _gpu_check_summary(out: str, logs: str, parts: list[str]) -> Path:
    """gpu_check-<device>.json: each part's exit status, wall time and log tail,
    and every benchmark JSON of this device the parts wrote."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    slug = device_slug(device)
    record = {"benchmark": "gpu_check", "environment": environment(device), "parts": [], "results": {}}
    for part in parts:
        name, rc, wall, budget = part.split("|")
        log = Path(logs) / f"{name}.log"
        tail = log.read_text(errors="replace").splitlines()[-20:] if log.is_file() else []
        record["parts"].append({"name": name, "status": "ok" if rc == "0" else "timeout" if rc == "124" else "failed",
                                "exit_code": int(rc), "wall_s": float(wall), "budget_s": int(budget), "log_tail": tail})
    for path in sorted(Path(out).glob(f"*-{slug}.json")):
        if not path.name.startswith("gpu_check-"):
            record["results"][path.stem] = json.loads(path.read_text())["figures"]
    path = Path(out) / f"gpu_check-{slug}.json"
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"-> {path}")
    return path


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build-cifar"]:  # bench/gpu_check.sh's data part
        print(cifar_root(argparse.Namespace(data_root=None, small=sys.argv[2:3] == ["small"])))
    elif sys.argv[1:2] == ["--summary"]:
        _gpu_check_summary(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        raise SystemExit("usage: python bench/common.py --build-cifar [small|full] | --summary OUT LOGS PART...")
