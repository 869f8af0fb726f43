"""What this process may use, as a container (a Kubernetes pod, a Docker
container, a Slurm job) limits it: cgroup v2 ``memory.max`` / ``cpu.max``, or
v1 ``memory.limit_in_bytes`` / ``cpu.cfs_quota_us``, over the process's own
cgroup and every cgroup above it; in a Ray task or actor, the ``memory``
resource of the node it runs on (``ray start --memory``, or what Ray derived
from these same limits less its object store's share); else the host's memory
and CPUs.

Each answer says where it comes from, so that a refusal can name the limit
it compared with.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
UNLIMITED = 2 ** 60  # v1 writes "no limit" as a number near 2**63


@dataclass(frozen=True)
class Budget:
    amount: float  # bytes, or CPUs
    source: str    # where it was read, for messages: "the host's available memory", ...


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _membership(proc_cgroup: Path) -> tuple[str | None, dict[str, str]]:
    """(the v2 path, {v1 controller: path}) of this process."""
    v2, v1 = None, {}
    for line in (_read(proc_cgroup) or "").splitlines():
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":
            v2 = path
        for controller in filter(None, controllers.split(",")):
            v1[controller] = path
    return v2, v1


def _chain(base: Path, path: str) -> list[Path]:
    """The process's cgroup folder under ``base`` and every one above it. In a
    container (its own cgroup namespace) the path is relative to what the
    container sees mounted: when it does not exist, ``base`` is the cgroup."""
    here = base / path.lstrip("/")
    if not here.is_dir():
        return [base]
    chain = [here]
    while chain[-1] != base and base in chain[-1].parents:
        chain.append(chain[-1].parent)
    return chain


def _v2_base(root: Path) -> Path | None:
    for base in (root, root / "unified"):  # unified: a hybrid host's v2 mount
        if (base / "cgroup.controllers").is_file():
            return base
    return None


def memory_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> Budget | None:
    """The memory this process's cgroups leave it (the tightest limit less
    that cgroup's current use), or None when no cgroup limits it."""
    v2, v1 = _membership(proc_cgroup)
    found: list[Budget] = []
    base = _v2_base(root)
    if v2 is not None and base is not None:
        for folder in _chain(base, v2):
            limit = _read(folder / "memory.max")
            if limit and limit != "max":
                used = float(_read(folder / "memory.current") or 0)
                found.append(Budget(float(limit) - used, f"the container's memory limit (cgroup v2 memory.max "
                                                         f"{float(limit) / 2**30:.1f} GiB)"))
    if "memory" in v1 and (root / "memory").is_dir():
        for folder in _chain(root / "memory", v1["memory"]):
            limit = _read(folder / "memory.limit_in_bytes")
            if limit and int(limit) < UNLIMITED:
                used = float(_read(folder / "memory.usage_in_bytes") or 0)
                found.append(Budget(float(limit) - used, f"the container's memory limit (cgroup v1 "
                                                         f"memory.limit_in_bytes {int(limit) / 2**30:.1f} GiB)"))
    return min(found, key=lambda b: b.amount) if found else None


def cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> Budget | None:
    """The CPUs this process's cgroups' quotas give it, or None without a quota."""
    v2, v1 = _membership(proc_cgroup)
    found: list[Budget] = []
    base = _v2_base(root)
    if v2 is not None and base is not None:
        for folder in _chain(base, v2):
            quota, _, period = (_read(folder / "cpu.max") or "max").partition(" ")
            if quota != "max" and period:
                found.append(Budget(int(quota) / int(period), f"the container's CPU quota (cgroup v2 cpu.max "
                                                              f"{quota} {period})"))
    controller = next((c for c in ("cpu", "cpu,cpuacct") if c in v1), None)
    mount = next((root / m for m in ("cpu", "cpu,cpuacct") if (root / m).is_dir()), None)
    if controller and mount:
        for folder in _chain(mount, v1[controller]):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0:
                found.append(Budget(int(quota) / int(period), f"the container's CPU quota (cgroup v1 "
                                                              f"cpu.cfs_quota_us {quota} / {period})"))
    return min(found, key=lambda b: b.amount) if found else None


def host_available_memory() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def ray_node_memory() -> Budget | None:
    """The ``memory`` resource of the Ray node this task or actor runs on; None
    outside a Ray worker (a driver's jobs may run on any node)."""
    ray = sys.modules.get("ray")  # never imported here only to look
    if ray is None or not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:
        return None
    memory = _node_memory(context.get_node_id())
    if not memory:
        return None
    return Budget(memory, f"the Ray node's memory resource ({memory / 2**30:.1f} GiB; ray start --memory)")


@functools.lru_cache(maxsize=8)  # a node's resources are fixed when it starts: asked once per worker
def _node_memory(node_id: str) -> float | None:
    import ray

    memory = next((node["Resources"].get("memory") for node in ray.nodes() if node["NodeID"] == node_id), None)
    return float(memory) if memory else None


def available_memory() -> Budget:
    """Bytes this process may still allocate: the host's available memory, or
    less where a container's limit or the Ray node's memory resource says less."""
    host = Budget(host_available_memory(), "the host's available memory")
    return min((b for b in (memory_limit(), ray_node_memory(), host) if b is not None), key=lambda b: b.amount)


def cpus() -> Budget:
    """CPUs this process may use: its affinity mask, or fewer under a quota
    (rounded up: a quota of 1.5 CPUs runs 2 threads part of the time)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    host = Budget(float(count), "the CPUs this process may run on")
    limit = cpu_limit()
    if limit is not None and math.ceil(limit.amount) < count:
        return Budget(float(max(1, math.ceil(limit.amount))), limit.source)
    return host
