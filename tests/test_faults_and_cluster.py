"""Scale-out and faults on this machine: DDP through Ray Train inside Tune, a
killed worker, a job that keeps failing, and a two-node local cluster fed by
`ray job submit` and raylth.submit."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

import raylth
from raylth.sweep.jobs import sweep_jobs

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def write_sweep(path: Path, **overrides) -> Path:
    sweep = {"name": "faults", "resources": {"cpu": 1, "gpu": 0}, "max_failures": 1,
             "base": {"levels": 1, "data": {"name": "digits"}, "model": {"name": "lenet"},
                      "train": {"duration": "3ep", "batch_size": 64, "lr": 0.05}},
             "grid": {"seed": [0]}}
    for key, value in overrides.items():
        if key == "base":
            sweep["base"].update(value)
        else:
            sweep[key] = value
    path.write_text(yaml.safe_dump(sweep))
    return path


def metrics(storage: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in storage.glob("*_*/metrics.json")}


def test_ddp_sweep_through_ray_train_equals_one_worker(tmp_path, cli, ray_cluster):
    """Two DDP workers under Ray Train inside a Tune trial equal the same jobs run here on one."""
    from raylth.sweep.config import load_sweep
    from raylth.sweep.runner import run_specs_here

    for job in sweep_jobs(load_sweep(write_sweep(tmp_path / "one.yaml")).trials):
        run_specs_here(list(job.specs), tmp_path / "one", REPO / "data")
    two = cli("run", write_sweep(tmp_path / "two.yaml", workers=2, resources={"cpu": 0.5, "gpu": 0}),
              "--storage", tmp_path / "two", "--address", ray_cluster)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert set(a) == set(b) and len(a) == 2
    for artifact_id in a:
        assert a[artifact_id]["workers"] == 1 and b[artifact_id]["workers"] == 2
        assert b[artifact_id]["test_acc"] == pytest.approx(a[artifact_id]["test_acc"], abs=1e-9)
        wa = torch.load(tmp_path / "one" / artifact_id / "weights" / "final.pt")
        wb = torch.load(tmp_path / "two" / artifact_id / "weights" / "final.pt")
        for name in wa:
            torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-5)


def _trial_processes(head: subprocess.Popen) -> list[psutil.Process]:
    """The Tune trial workers of the session's cluster (descendants of its head process)."""
    found = []
    for proc in psutil.Process(head.pid).children(recursive=True):
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if "ImplicitFunc" in cmdline or "_tune_trainable" in cmdline:
            found.append(proc)
    return found


def test_killed_trial_resumes_from_its_checkpoint_and_equals_uninterrupted(tmp_path, cli, ray_cluster,
                                                                          ray_cluster_head):
    sweep = write_sweep(tmp_path / "s.yaml", base={"levels": 0, "train": {"duration": "150ep", "batch_size": 64,
                                                                            "lr": 0.05}})
    storage = tmp_path / "killed"
    driver = subprocess.Popen([sys.executable, "-m", "raylth.cli.main", "run", str(sweep), "--storage",
                               str(storage), "--address", ray_cluster], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline, killed = time.time() + 240, False
    while time.time() < deadline and driver.poll() is None and not killed:
        resume = list(storage.glob(".partial/*/resume.pt"))
        if resume and torch.load(resume[0], weights_only=False)["trainer"]["step"] >= 10 * 19:
            for proc in _trial_processes(ray_cluster_head):
                proc.send_signal(signal.SIGKILL)
                killed = True
        time.sleep(0.05)
    assert killed, "the training finished before a worker could be killed"
    assert driver.wait(timeout=300) == 0
    (artifact,) = metrics(storage).values()
    assert artifact["resumed_at"] >= 10 * 19  # resumed from a checkpoint, not from scratch
    assert artifact["resumed_at"] < artifact["steps"]

    reference = cli("run", sweep, "--storage", tmp_path / "reference", "--address", ray_cluster)
    assert reference.returncode == 0
    (expected,) = metrics(tmp_path / "reference").values()
    assert expected["resumed_at"] is None
    assert artifact["test_acc"] == expected["test_acc"]
    assert [h["test_loss"] for h in artifact["history"]] == [h["test_loss"] for h in expected["history"]]


def test_a_job_that_keeps_failing_is_reported_and_the_rest_finish(tmp_path, cli, ray_cluster):
    """seed=1's trunk fails: its control, which needs it, is not run; seed 0 finishes."""
    sweep = write_sweep(tmp_path / "s.yaml", grid={"seed": [0, 1], "method": ["imp", "random_prune"]})
    storage = tmp_path / "store"
    failed = cli("run", sweep, "--storage", storage, "--address", ray_cluster, fail_jobs="method=imp,seed=1")
    assert failed.returncode == 1
    assert "failed [method=imp,seed=1]: RuntimeError: injected failure of job method=imp,seed=1" in failed.stdout
    assert "failed [method=random_prune,seed=1]: not run: it needs job [method=imp,seed=1]" in failed.stdout
    status = cli("status", storage)
    assert "faults" in status.stdout
    row = status.stdout.splitlines()[1].split()
    # jobs finished running damaged failed interrupted missing
    assert row[1:] == ["4", "2", "0", "0", "2", "0", "0"], status.stdout
    assert "failed" in status.stdout and "injected failure" in status.stdout
    again = cli("run", sweep, "--storage", storage, "--address", ray_cluster)
    assert again.returncode == 0 and "2 already stored, 2 run now" in again.stdout
    assert cli("status", storage).stdout.splitlines()[1].split()[1:] == ["4", "4", "0", "0", "0", "0", "0"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_node_cluster(tmp_path):
    temp_dir = f"/tmp/raylth-test-{os.getpid()}"
    # every port its own: another local cluster (the session's) may hold Ray's fixed agent port 52365
    port, dashboard, head_agent, worker_agent = (_free_port() for _ in range(4))
    env = dict(os.environ)
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    subprocess.run(ray + ["start", "--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={temp_dir}",
                          "--include-dashboard=true", f"--dashboard-port={dashboard}", "--disable-usage-stats",
                          f"--dashboard-agent-listen-port={head_agent}"],
                   check=True, capture_output=True, env=env, timeout=120)
    subprocess.run(ray + ["start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--disable-usage-stats",
                          f"--dashboard-agent-listen-port={worker_agent}"],
                   check=True, capture_output=True, env=env, timeout=120)
    try:
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        # the cluster's processes and their children (agents rename themselves, e.g. ray::DashboardAgent)
        ours = {proc for proc in psutil.process_iter(["cmdline"])
                if any(temp_dir in part or f"127.0.0.1:{port}" in part for part in proc.info["cmdline"] or [])}
        for proc in list(ours):
            try:
                ours.update(proc.children(recursive=True))
            except psutil.Error:
                pass
        for proc in ours:
            try:
                proc.kill()
            except psutil.Error:
                pass


def test_sweep_submitted_to_a_two_node_cluster_spreads_over_both(two_node_cluster, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    write_sweep(workdir / "s.yaml", grid={"seed": [0, 1, 2, 3]})
    storage = tmp_path / "store"
    for attempt in range(90):  # the dashboard's job agent needs a few seconds after `ray start` (more when busy)
        submit = subprocess.run(
            [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", two_node_cluster,
             "--working-dir", str(workdir), "--", "raylth", "run", "s.yaml", "--storage", str(storage)],
            capture_output=True, text=True, timeout=600, env=dict(os.environ))
        if "No available agent" not in submit.stderr:
            break
        time.sleep(2)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    nodes = {m["node"] for m in metrics(storage).values()}
    assert len(metrics(storage)) == 8 and len(nodes) == 2, nodes

    # from Python, as the README shows: the repository root uploaded, its package run by the job
    quickstart = tmp_path / "quickstart"
    job = raylth.submit("sweeps/quickstart.yaml", address=two_node_cluster, storage=quickstart, working_dir=REPO,
                        overrides=["levels=2", "train.duration=2ep", "grid.seed=[0]"])  # small, and passed on
    assert job.wait(timeout_s=600) == "SUCCEEDED", job.logs()[-3000:]
    assert "quickstart: 3 jobs finished" in job.logs()
    frame = raylth.results(quickstart)
    assert len(frame) == 1 + 3 + 2 and set(frame["method"]) == {"dense", "imp", "random_prune"}  # imp: levels 0-2
