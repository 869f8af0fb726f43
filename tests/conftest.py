"""Shared pytest fixtures."""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"

TESTS = Path(__file__).resolve().parent
# Save the resume state at every epoch end (the default is at most every 30 s),
# so tests that interrupt short runs find one; inherited by Ray workers and by
# every process the tests start, as are Ray's settings below: no token on local
# clusters, every worker's log line shown, Ray Train's print patch off.
os.environ.setdefault("RAYLTH_RESUME_EVERY_S", "0")
for _key, _value in {"RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "0",
                     "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}.items():
    os.environ.setdefault(_key, _value)


if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each
    import torch

    torch.set_num_threads(1)


RAY_FIXTURES = {"ray_cluster", "ray_cluster_head"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """xdist groups, so that what a fixture builds is built once: every test of
    the session's quickstart store on one worker, and each module that starts
    Ray (marked slow) or uses the session's cluster on one worker, its module
    fixtures (a two-node cluster, a tracked sweep) shared by its tests."""
    ray_modules = {item.path for item in items
                   if item.get_closest_marker("slow") or RAY_FIXTURES & set(getattr(item, "fixturenames", ()))}
    for item in items:
        if "quickstart_store" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("quickstart"))
        elif item.path in ray_modules:  # the whole module: its fixtures built once
            item.add_marker(pytest.mark.xdist_group(f"ray-{item.path.stem}"))


@pytest.fixture(scope="session")
def cli():
    """``cli(*args)``: ``raylth ARGS`` in a fresh interpreter, as a user types
    it; ``env`` adds to the session's environment, ``fail_jobs="label;..."``
    makes the jobs whose label holds one of them fail (fail_jobs.py)."""
    def run(*args, cwd=None, env=None, timeout=600, fail_jobs=None) -> subprocess.CompletedProcess:
        command = ["-m", "raylth.cli.main"] if fail_jobs is None else [str(TESTS / "fail_jobs.py"), fail_jobs]
        return subprocess.run([sys.executable, *command, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})

    return run


@pytest.fixture(scope="session")
def ray_cluster_head():
    """The process that started the session's Ray cluster (see ray_cluster):
    its descendants are the cluster's processes, trial workers included."""
    code = ("import sys, ray; ray.init(num_cpus=2, include_dashboard=False); "
            "print(ray.get_runtime_context().gcs_address, flush=True); sys.stdin.read(); ray.shutdown()")
    head = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    head.address = head.stdout.readline().strip()
    if not head.address:
        head.kill()
        pytest.fail("the session's Ray cluster did not start")
    yield head
    head.stdin.close()  # its driver shuts the cluster down
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        head.kill()


@pytest.fixture(scope="session")
def ray_cluster(ray_cluster_head):
    """The address of one local Ray cluster (2 CPUs, no dashboard) for the
    whole session: sweeps that can share a cluster join it (``--address``)
    instead of each starting and stopping its own. Not for tests of what a run
    does with a cluster it starts itself (refusing resources it cannot give,
    shutting it down), nor for tests whose workers need an environment of
    their own (a node's cache): those start their own."""
    return ray_cluster_head.address


@pytest.fixture(scope="session")
def cifar10_subset(tmp_path_factory):
    """build(n): a folder holding cifar-10-batches-py with n images per class
    in each split, built once per n and session from ../shared/data (the xdist
    workers share it); the calling test is skipped when that is not there."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # one copy for every xdist worker

    def build(per_class: int) -> Path:
        script = SHARED / "data" / "cifar10_from_jpg.py"
        if not script.is_file() or not (script.parent / "cifar10-jpg.tar.xz").is_file():
            pytest.skip(f"no {script} (or its archive) beside the repository")
        root = shared / f"cifar10_{per_class}_per_class"
        with open(shared / f"cifar10_{per_class}_per_class.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker builds it, the other waits and reads it
            if not (root / "cifar-10-batches-py" / "test_batch").is_file():
                subprocess.run([sys.executable, str(script), str(root), "--limit-per-class", str(per_class)],
                               check=True, capture_output=True, timeout=120)
        return root

    return build


@pytest.fixture(scope="session")
def cifar10_subset_root(cifar10_subset):
    """20 images per class in each split."""
    return cifar10_subset(20)


@pytest.fixture(scope="session")
def cifar10_distill_ctx(cifar10_subset, tmp_path_factory):
    """A CPU StageContext on the CIFAR-10 subset of 100 images per class per
    split (1,000 train, 1,000 test), with one store for the session: a set
    distilled or evaluated by one test is reused by the next."""
    import torch

    from raylth.stages import StageContext
    from raylth.store import Store

    return StageContext(store=Store(tmp_path_factory.mktemp("cifar10_distill_store")), device=torch.device("cpu"),
                        data_root=cifar10_subset(100))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: intra-op threads only add overhead, and on a busy machine
    two spinning threads made a 0.5 s evaluation take 15 s. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits_data():
    """scikit-learn's digits as a raylth Dataset on the CPU (bundled: offline)."""
    from raylth.engine.data import load_dataset
    from raylth.specs import DataSpec

    return load_dataset(DataSpec("digits"))


@pytest.fixture(scope="module", params=[False, True], ids=["float32", "fastpath"])
def fast_path(request):
    """The stage suites of training, IMP, children and interpolation
    (test_stages, test_cifar_stages, test_lmc_stages' ticket tests) run twice:
    float32 as CPU runs by default, then on the fast path CUDA takes (bf16
    autocast, channels_last, fused optimizer; RAYLTH_FAST_PATH=1), so that
    every line of it runs in CI. Module fixtures that hold a store take this
    one, so each mode computes its own. Distillation runs in float32 in both
    modes (its stages declare it), so its suite runs once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYLTH_FAST_PATH", "1" if request.param else "0")
        yield request.param


@pytest.fixture(scope="session")
def quickstart_store(tmp_path_factory, ray_cluster):
    """sweeps/quickstart.yaml run once, uninterrupted, through the CLI: the
    reference that interrupted and damaged runs are compared with."""
    repo = Path(__file__).resolve().parents[1]
    storage = tmp_path_factory.mktemp("quickstart") / "results"
    done = subprocess.run([sys.executable, "-m", "raylth.cli.main", "run", str(repo / "sweeps" / "quickstart.yaml"),
                           "--storage", str(storage), "--address", ray_cluster], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "6 jobs finished" in done.stdout
    return storage
