"""Scale-out and faults on this machine: DDP through Ray Train inside Tune, a
job that keeps failing, and a two-node local cluster with token
authentication (as cluster.yaml starts one) fed by `ray job submit` and raylth.submit: it refuses
a client without its token, and loses nothing when its worker node dies mid-sweep."""

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch
import yaml

import raylth
from ports import free_port
from postgres import server_binaries, throwaway_postgres
from raylth.store import Store
from raylth.sweep.jobs import sweep_jobs
from test_search import SEARCH

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def write_sweep(path: Path, **overrides) -> Path:
    sweep = {"name": "faults", "resources": {"cpu": 1, "gpu": 0}, "max_failures": 1,
             "base": {"levels": 1, "data": {"name": "digits"}, "model": {"name": "lenet"},
                      "train": {"duration": "2ep", "batch_size": 64, "lr": 0.05}},
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


def _kill_with_descendants(processes: list[psutil.Process]) -> int:
    doomed = set()
    for proc in processes:
        try:
            doomed |= {proc, *proc.children(recursive=True)}
        except psutil.Error:
            pass
    for proc in doomed:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return len(doomed)


WORKER_MEMORY = 3 * 2**30  # the worker node's memory resource, as `ray start --memory` sets it


def _own_disk_folder(temp_dir: str) -> Path | None:
    """A folder that the worker node will see as a disk of its own (a tmpfs mounted over it in the
    worker's mount namespace), as each machine of a real cluster has; None where this machine
    allows no mount namespace."""
    folder = Path(f"{temp_dir}-own-disk")
    folder.mkdir(parents=True, exist_ok=True)
    allowed = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                              f"mount -t tmpfs none {folder}"], capture_output=True, timeout=60)
    return folder if allowed.returncode == 0 else None


@pytest.fixture(scope="module")
def two_node_cluster():
    """A head and a worker node started as cluster.yaml starts them: token authentication on, with
    the token in Ray's default file (generated if missing), which the test's own clients read."""
    temp_dir = f"/tmp/raylth-test-{os.getpid()}"
    # every port its own: another local cluster (the session's) may hold Ray's fixed agent port 52365
    port, dashboard, head_agent, worker_agent = (free_port() for _ in range(4))
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    token = subprocess.run(ray + ["get-auth-token", "--generate"], check=True, capture_output=True, text=True,
                           timeout=60).stdout.split()[-1]
    env = dict(os.environ, RAY_AUTH_MODE="token")
    subprocess.run(ray + ["start", "--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={temp_dir}",
                          "--include-dashboard=true", f"--dashboard-port={dashboard}", "--disable-usage-stats",
                          f"--dashboard-agent-listen-port={head_agent}"],
                   check=True, capture_output=True, env=env, timeout=120)
    before = set(psutil.pids())
    worker = ray + ["start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--disable-usage-stats",
                    f"--memory={WORKER_MEMORY}", f"--dashboard-agent-listen-port={worker_agent}"]
    own_disk = _own_disk_folder(temp_dir)
    if own_disk is not None:  # the worker node sees a disk of its own there (its own mount namespace)
        worker = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                  f'mount -t tmpfs none {own_disk} && exec "$@"', "sh", *worker]
    subprocess.run(worker, check=True, capture_output=True, env=env, timeout=120)
    worker_node = [psutil.Process(pid) for pid in set(psutil.pids()) - before if psutil.pid_exists(pid)]
    try:
        yield SimpleNamespace(address=f"http://127.0.0.1:{dashboard}", gcs=f"127.0.0.1:{port}", token=token,
                              worker_node=worker_node, own_disk=own_disk)
    finally:
        # the cluster's processes and their children (agents rename themselves, e.g. ray::DashboardAgent)
        _kill_with_descendants([proc for proc in psutil.process_iter(["cmdline"])
                                if any(temp_dir in part or f"127.0.0.1:{port}" in part
                                       for part in proc.info["cmdline"] or [])])


def as_user(cluster, *command, timeout=900, popen=False):
    """A command in the shell of a user who holds the cluster's token (this session's own settings
    keep token authentication off for the clusters it starts itself)."""
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}
    if popen:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def submitted_from_python(cluster, sweep, storage, working_dir, overrides=(), popen=False):
    """raylth.submit as the README shows it, in the user's interpreter: prints the job's end and logs."""
    code = (f"import raylth\njob = raylth.submit({str(sweep)!r}, address={cluster.address!r}, "
            f"storage={str(storage)!r}, working_dir={str(working_dir)!r}, overrides={list(overrides)!r})\n"
            "print(job.wait(timeout_s=600)); print(job.logs()[-4000:])")
    return as_user(cluster, sys.executable, "-c", code, popen=popen)


def test_sweep_submitted_to_a_two_node_cluster_spreads_over_both(two_node_cluster, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    write_sweep(workdir / "s.yaml", grid={"seed": [0, 1]})  # two trials at once: one on each node
    storage = tmp_path / "store"
    for attempt in range(90):  # the dashboard's job agent needs a few seconds after `ray start` (more when busy)
        submit = as_user(two_node_cluster, sys.executable, "-m", "ray.scripts.scripts", "job", "submit",
                         "--address", two_node_cluster.address, "--working-dir", str(workdir), "--",
                         "raylth", "run", "s.yaml", "--storage", str(storage), timeout=600)
        if "No available agent" not in submit.stderr:
            break
        time.sleep(2)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    nodes = {m["node"] for m in metrics(storage).values()}
    assert len(metrics(storage)) == 4 and len(nodes) == 2, nodes


def test_the_token_cluster_refuses_a_submission_without_its_token(two_node_cluster, tmp_path):
    submit = ("from ray.job_submission import JobSubmissionClient\n"
              f"job = JobSubmissionClient({two_node_cluster.address!r}).submit_job(entrypoint='echo ok')\n"
              "print('submitted', job)")
    # HOME elsewhere: no default token file; none of the session's RAY_AUTH_* settings
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | {"HOME": str(tmp_path)}

    def client(**env):
        return subprocess.run([sys.executable, "-c", submit], env=clean | env, capture_output=True, text=True,
                              timeout=120)

    for refused in (client(), client(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)):
        assert refused.returncode != 0 and "submitted" not in refused.stdout, refused.stdout + refused.stderr[-2000:]
        assert "Token authentication is enabled" in refused.stderr, refused.stderr[-2000:]  # refused for it
    accepted = client(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=two_node_cluster.token)
    assert accepted.returncode == 0 and "submitted" in accepted.stdout, accepted.stderr[-3000:]


def test_a_task_on_a_node_with_a_memory_resource_has_that_budget(two_node_cluster):
    """The memory guard's budget inside a Ray task is the node's `memory` resource where it is less
    than the host's and the container's: 3 GiB on the worker node, named in the budget's source."""
    code = ("import ray\nfrom ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy\n"
            "from raylth.engine import limits\n"
            f"ray.init(address={two_node_cluster.gcs!r})\n"
            f"node = next(n['NodeID'] for n in ray.nodes() if n['Resources'].get('memory') == {WORKER_MEMORY})\n"
            "budget = ray.remote(limits.available_memory).options(num_cpus=0, scheduling_strategy="
            "NodeAffinitySchedulingStrategy(node, soft=False)).remote()\n"
            "print(repr(ray.get(budget))); print(repr(limits.available_memory()))\n")
    out = as_user(two_node_cluster, sys.executable, "-c", code, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    in_task, in_driver = out.stdout.strip().splitlines()[-2:]
    assert f"amount={float(WORKER_MEMORY)}" in in_task and "the Ray node's memory resource (3.0 GiB" in in_task
    assert "Ray node" not in in_driver  # the driver's jobs may run on any node: not bounded by this one


@pytest.fixture(scope="module")
def postgres():
    """One throwaway PostgreSQL server for the module (tests/postgres.py); `.ci/run` installs the
    server binaries where missing, elsewhere the test is skipped without them."""
    if server_binaries() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres): apt-get install postgresql")
    with throwaway_postgres() as url:
        yield url


def trial_states(url: str) -> dict:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as con:
        return dict(con.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())


def dashboard_get(url: str, path: str) -> dict:
    """optuna-dashboard's JSON API, called as its web server would call it."""
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    environ = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(wsgi(url)(environ, lambda code, headers, *exc: status.append(code)))
    assert status == ["200 OK"], (status, body[:500])
    return json.loads(body)


def test_a_search_on_postgresql_across_two_nodes_survives_its_killed_driver(two_node_cluster, postgres, tmp_path,
                                                                          cli, ray_cluster):
    """A search whose study is in PostgreSQL runs its trials on both nodes; its driver, killed with
    trials in flight, is run again: the same study resumes to n_trials, the trials the dead driver
    left RUNNING are FAIL and retried with their parameters, none is counted twice; optuna-dashboard
    reads the study; the best sweep runs."""
    import optuna

    path, storage = tmp_path / "search.yaml", tmp_path / "results"
    path.write_text(yaml.safe_dump(SEARCH | {"study": SEARCH["study"] | {"storage": postgres, "n_trials": 6}}))
    command = (sys.executable, "-m", "raylth.cli.main", "run", str(path), "--storage", str(storage),
               "--address", two_node_cluster.gcs)
    driver = as_user(two_node_cluster, *command, popen=True)
    deadline, states = time.time() + 300, {}
    while time.time() < deadline and driver.poll() is None:
        with contextlib.suppress(Exception):  # the study's tables are being created
            states = trial_states(postgres)
        if states.get("COMPLETE", 0) + states.get("PRUNED", 0) >= 2 and states.get("RUNNING", 0) >= 1:
            break
        time.sleep(0.2)
    assert driver.poll() is None, "the search ended before its driver could be killed:\n" + driver.stderr.read()
    _kill_with_descendants([psutil.Process(driver.pid)])
    driver.communicate()
    killed = trial_states(postgres)
    running = killed.get("RUNNING", 0)
    assert running >= 1 and killed.get("COMPLETE", 0) + killed.get("PRUNED", 0) < 6, killed

    again = as_user(two_node_cluster, *command, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after = trial_states(postgres)
    assert after.get("COMPLETE", 0) + after.get("PRUNED", 0) == 6, after  # none lost, none counted twice
    assert "RUNNING" not in after and after.get("FAIL", 0) == running, (killed, after)
    study = optuna.load_study(study_name="tiny", storage=postgres)
    for failed in study.get_trials(states=(optuna.trial.TrialState.FAIL,)):
        retried = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == failed.number]
        # retried with every parameter it had drawn (a driver killed between two suggestions leaves
        # some undrawn: the retry draws those afresh)
        assert len(retried) == 1 and failed.params.items() <= retried[0].params.items(), (failed, retried)
    assert len({m["node"] for m in metrics(storage).values()}) == 2  # trials ran on both nodes

    summaries = dashboard_get(postgres, "/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == ["tiny"]
    shown = dashboard_get(postgres, f"/api/studies/{summaries[0]['study_id']}")["trials"]
    assert sorted(t["number"] for t in shown) == [t.number for t in study.get_trials()]

    best = storage / "searches" / "tiny-best.yaml"
    assert f"best sweep: {best}" in again.stdout
    sweep = yaml.safe_load(best.read_text())
    assert sweep["name"] == "tiny_best" and sweep["base"]["distill"]["lr_img"] == pytest.approx(
        study.best_params["distill.lr_img"])
    ran = cli("run", best, "--address", ray_cluster)
    assert ran.returncode == 0 and "tiny_best: 1 jobs finished" in ran.stdout, ran.stdout[-3000:] + ran.stderr[-3000:]
    frame = raylth.results(storage, sweep="tiny_best")
    evals = [Store(storage).get(i).metrics for i in frame[frame.stage == "distill_eval"].id]
    # the search's evaluation, reused (its objective: the validation split), and the random baseline
    assert len(evals) == 2 and study.best_value in [m["val_acc"] for m in evals]


def test_a_folder_a_node_does_not_see_is_refused_before_anything_is_stored(two_node_cluster, tmp_path):
    """A store in a folder that is each node's own disk (here: the worker node's own tmpfs at the
    same path) would scatter the results: refused with one line naming the node, nothing stored.
    The other tests of this module run on a folder both nodes see, so they pass the same check."""
    if two_node_cluster.own_disk is None:
        pytest.skip("this machine allows no mount namespace (unshare --mount) to give a node its own disk")
    sweep = write_sweep(tmp_path / "s.yaml")
    storage = two_node_cluster.own_disk / "store"
    out = as_user(two_node_cluster, sys.executable, "-m", "raylth.cli.main", "run", str(sweep), "--storage",
                  str(storage), "--address", two_node_cluster.gcs, timeout=300)
    assert out.returncode != 0, out.stdout[-2000:] + out.stderr[-2000:]
    line = out.stderr.strip().splitlines()[-1]
    assert "of the Ray cluster do not see this folder" in line and "s3://" in line, out.stderr[-2000:]
    assert not [p for p in storage.rglob("*") if p.is_file()]  # no record, no artifact, no probe left


def test_a_dead_worker_node_costs_nothing_its_job_resumes_on_the_head(two_node_cluster, tmp_path, cli, ray_cluster):
    """A spot node reclaimed mid-sweep: the worker node's processes (its raylet and the trial it
    runs) killed by their ids (a trial killed on its own is the same fault to Tune: retried, resumed).
    The sweep, submitted from Python as the README shows (the repository root uploaded, overrides
    passed on), finishes with every result; the job that was on the dead node resumes on the head
    from its last saved state; results equal a run that lost nothing. Runs last in this module: the
    cluster has one node afterwards."""
    overrides = ["levels=0", "train.duration=150ep", "grid.seed=[0,1]", "grid.method=[imp]"]
    storage = tmp_path / "store"
    user = submitted_from_python(two_node_cluster, "sweeps/quickstart.yaml", storage, REPO, overrides, popen=True)
    deadline, killed = time.time() + 300, 0
    while time.time() < deadline and not killed and user.poll() is None:
        partial = list(storage.glob(".partial/*/resume.pt"))
        if len(partial) == 2 and all(torch.load(p, weights_only=False)["trainer"]["step"] >= 10 * 19 for p in partial):
            killed = _kill_with_descendants(two_node_cluster.worker_node)  # both trials, one on each node, saved
        time.sleep(0.2)
    assert killed, "the sweep finished before the worker node could be killed"
    out, err = user.communicate(timeout=600)
    assert out.startswith("SUCCEEDED") and "2 jobs finished" in out, out[-3000:] + err[-3000:]
    assert "raylth.submit: uploading" in err and "auth_token" in err  # secrets left out, and said
    found = metrics(storage)
    assert len(found) == 2
    resumed = [m for m in found.values() if m["resumed_at"] is not None]
    assert len(resumed) == 1 and 10 * 19 <= resumed[0]["resumed_at"] < resumed[0]["steps"], found
    assert len({m["node"] for m in found.values()}) == 1  # both finished on the head: the worker is gone

    reference = cli("run", REPO / "sweeps" / "quickstart.yaml", *overrides, "--storage", tmp_path / "reference",
                    "--address", ray_cluster)
    assert reference.returncode == 0, reference.stdout[-2000:] + reference.stderr[-2000:]
    expected = metrics(tmp_path / "reference")
    assert set(expected) == set(found)
    for artifact_id, m in found.items():
        assert m["test_acc"] == expected[artifact_id]["test_acc"]
        assert [h["test_loss"] for h in m["history"]] == [h["test_loss"] for h in expected[artifact_id]["history"]]
