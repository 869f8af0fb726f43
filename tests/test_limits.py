"""A container's limits (raylth.engine.limits): cgroup v2 and v1 trees
written by hand as the kernel lays them out, then a real cgroup limit around
`raylth run` where this machine lets a test make one."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raylth.engine import limits

GiB = 2 ** 30


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _proc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return path


def test_v2_the_tightest_limit_above_the_process_less_its_use(tmp_path):
    root = _tree(tmp_path / "cg", {"cgroup.controllers": "cpu memory", "kubepods/memory.max": "8589934592",
                                   "kubepods/memory.current": "1073741824", "kubepods/pod/memory.max": "max",
                                   "kubepods/pod/cpu.max": "150000 100000", "kubepods/cpu.max": "max 100000"})
    proc = _proc(tmp_path, "0::/kubepods/pod\n")
    memory = limits.memory_limit(root, proc)
    assert memory.amount == 7 * GiB and "cgroup v2 memory.max 8.0 GiB" in memory.source
    cpu = limits.cpu_limit(root, proc)
    assert cpu.amount == 1.5 and "cpu.max 150000 100000" in cpu.source


def test_v1_limits_and_no_limit(tmp_path):
    root = _tree(tmp_path / "cg", {"memory/docker/abc/memory.limit_in_bytes": str(4 * GiB),
                                   "memory/docker/abc/memory.usage_in_bytes": str(GiB),
                                   "memory/docker/memory.limit_in_bytes": "9223372036854771712",
                                   "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000",
                                   "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"})
    proc = _proc(tmp_path, "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n")
    memory = limits.memory_limit(root, proc)
    assert memory.amount == 3 * GiB and "cgroup v1 memory.limit_in_bytes 4.0 GiB" in memory.source
    assert limits.cpu_limit(root, proc).amount == 2.0
    unlimited = _proc(tmp_path, "4:memory:/docker\n")
    assert limits.memory_limit(root, unlimited) is None and limits.cpu_limit(root, unlimited) is None


def test_in_its_own_cgroup_namespace_a_container_reads_the_root(tmp_path):
    """Inside a container /proc/self/cgroup may name a path its mount does not
    have (the namespace's root is the container's cgroup)."""
    root = _tree(tmp_path / "cg", {"cgroup.controllers": "memory", "memory.max": str(8 * GiB), "memory.current": "0"})
    assert limits.memory_limit(root, _proc(tmp_path, "0::/../outside\n")).amount == 8 * GiB


def test_a_hybrid_host_reads_its_v2_mount_under_unified(tmp_path):
    root = _tree(tmp_path / "cg", {"unified/cgroup.controllers": "", "unified/job/memory.max": str(2 * GiB),
                                   "unified/job/memory.current": "0"})
    assert limits.memory_limit(root, _proc(tmp_path, "1:name=systemd:/\n0::/job\n")).amount == 2 * GiB


def test_the_refusal_names_the_limit_it_compared_with(monkeypatch):
    import torch

    from raylth.errors import WontFitError
    from raylth.stages.memory import check_fits

    monkeypatch.setattr(limits, "memory_limit", lambda: limits.Budget(8 * GiB, "the container's memory limit "
                                                                                "(cgroup v2 memory.max 8.0 GiB)"))
    monkeypatch.setattr(limits, "host_available_memory", lambda: 23 * GiB)
    budget = limits.available_memory()
    with pytest.raises(WontFitError, match=r"needs ~12.7 GiB of memory, the worker has 8.0 GiB \(the container's "
                                           r"memory limit \(cgroup v2 memory.max 8.0 GiB\)\): lower"):
        check_fits("dm", 12.7 * GiB, budget, torch.device("cpu"), "lower batch_real")


def _memory_cgroup() -> tuple[Path, str] | None:
    """A fresh cgroup with a memory controller this process may create, and its limit file."""
    v2 = limits._v2_base(limits.CGROUP_ROOT)
    for base, limit in ((v2, "memory.max"), (limits.CGROUP_ROOT / "memory", "memory.limit_in_bytes")):
        if base is None or not os.access(base, os.W_OK):
            continue
        group = base / f"raylth-test-{os.getpid()}"
        try:
            group.mkdir()
        except OSError:
            continue
        if (group / limit).exists():
            return group, limit
        group.rmdir()
    return None


def test_under_a_real_8_gib_cgroup_limit_a_run_that_needs_more_is_refused(tmp_path, cifar10_subset):
    """`raylth run` in a cgroup limited to 8 GiB (on a host with more): a DM
    distillation needing ~13 GiB is refused at once, naming the limit; nothing stored."""
    if limits.host_available_memory() < 14 * GiB:
        pytest.skip("the host itself has less than the job needs")
    made = _memory_cgroup()
    if made is None:
        pytest.skip("no writable cgroup memory controller here (it needs root on a cgroup v1 or v2 host)")
    group, limit = made
    try:
        (group / limit).write_text(str(8 * GiB))
        sweep = {"name": "contained", "data_root": str(cifar10_subset(20)), "grid": {"method": ["distill"]},
                 "base": {"data": {"name": "cifar10"}, "model": {"name": "conv3"},
                          "distill": {"method": "dm", "ipc": 10, "batch_real": 6000, "model": {"name": "conv3"}}}}
        path = tmp_path / "contained.yaml"
        path.write_text(yaml.safe_dump(sweep))
        store = tmp_path / "store"
        inside = f'echo $$ > {group}/cgroup.procs && exec "$0" -m raylth.cli.main run "$1" --storage "$2"'
        done = subprocess.run(["sh", "-c", inside, sys.executable, str(path), str(store)], capture_output=True,
                              text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
        assert "dm: ipc 10 with conv3: needs ~" in lines[0] and "8.0 GiB)" in lines[0] and "cgroup" in lines[0], lines
        assert not store.exists() or not any(store.rglob("*.pt"))
    finally:
        group.rmdir()
