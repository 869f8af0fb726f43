"""Interrupted, killed and concurrent runs of one sweep (the fault
campaign's cases, through the CLI as a user runs them): Ctrl-C ends a run
with one line and exit 130 and leaves nothing running; two runs of the
sweep on one store at once, one of them killed (its trials die with it),
finish it between them; a dry run then finds nothing left to compute,
nothing finished was rewritten, and the results equal an uninterrupted run."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import raylth

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "sweeps" / "quickstart.yaml"
ONE_SEED = "grid.seed=[0]"  # the quickstart's first seed: 3 jobs, 29 artifacts
pytestmark = pytest.mark.slow


def _as_a_terminal_starts_it():
    # a background job of a non-interactive shell (CI started with `&`) inherits SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(storage: Path, *more: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "raylth.cli.main", "run", str(QUICKSTART), ONE_SEED,
                             "--storage", str(storage), *more], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own process group, as a shell gives a command
                            preexec_fn=_as_a_terminal_starts_it)


def _finished(storage: Path) -> dict[str, int]:
    return {p.name: (p / "metrics.json").stat().st_mtime_ns
            for p in storage.glob("*_*") if (p / "manifest.json").exists()}


def _wait_for(storage: Path, count: int, *drivers) -> None:
    deadline = time.time() + 300
    while len(_finished(storage)) < count and time.time() < deadline:
        assert all(d.poll() is None for d in drivers), "the sweep ended before it could be interrupted"
        time.sleep(0.2)


def _family(driver) -> list[psutil.Process]:
    return [psutil.Process(driver.pid)] + psutil.Process(driver.pid).children(recursive=True)


def test_interrupted_killed_and_concurrent_runs_finish_the_sweep_once(quickstart_store, tmp_path, ray_cluster):
    storage = tmp_path / "results"
    first = _start(storage)  # Ray of its own, as a user's first run: Ctrl-C must leave none of it running
    _wait_for(storage, 8, first)
    family = _family(first)
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-3000:]
    assert re.fullmatch(r"raylth: interrupted: \d of 3 jobs finished; run the same command to continue",
                        err.strip().splitlines()[-1]), err[-3000:]
    assert "Traceback" not in err and "Tuner.restore" not in err, err[-3000:]
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, [p.cmdline() for p in alive]  # nothing left running
    status = subprocess.run([sys.executable, "-m", "raylth.cli.main", "status", str(storage)],
                            capture_output=True, text=True)
    counts = dict(zip(status.stdout.splitlines()[0].split()[1:], status.stdout.splitlines()[1].split()[1:]))
    assert counts["running"] == "0", status.stdout
    kept = _finished(storage)

    # two runs of the sweep on one store at once, on the session's cluster
    second, third = _start(storage, "--address", ray_cluster), _start(storage, "--address", ray_cluster)
    _wait_for(storage, len(kept) + 10, second, third)
    for process in _family(second):  # a crash: the driver dies, and its trials with it
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    second.wait()
    out, err = third.communicate(timeout=600)
    assert third.returncode == 0, out[-2000:] + err[-3000:]

    last = subprocess.run([sys.executable, "-m", "raylth.cli.main", "run", str(QUICKSTART), ONE_SEED, "--storage",
                           str(storage), "--dry-run"], capture_output=True, text=True, timeout=300)
    assert last.returncode == 0 and "3 jobs (3 stored, 0 to run)" in last.stdout, last.stdout + last.stderr
    after = _finished(storage)
    assert all(after[name] == mtime for name, mtime in kept.items()), "a finished artifact was rewritten"
    assert_same_results(storage, quickstart_store)


def assert_same_results(storage: Path, reference: Path) -> None:
    """Every result stored equals the uninterrupted run's row of the same id, and the seed-0 rows are
    all there."""
    resumed = raylth.results(storage).drop_duplicates("id").set_index("id").sort_index()
    expected = raylth.results(reference).drop_duplicates("id").set_index("id")
    assert set(resumed.index) == set(expected[expected.seed == 0].index)
    assert (resumed.test_acc == expected.test_acc[resumed.index]).all()
