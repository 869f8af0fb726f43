"""Damaged artifacts (part of the fault campaign), without Ray: a stored job
is finished in the plan; truncated, garbled, deleted and bit-flipped files
make it damaged (never finished); `raylth verify` finds each and --repair
moves exactly those aside; work left by a dead process is interrupted."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from raylth.cli.main import main
from raylth.store import Store
from raylth.sweep.config import parse_sweep
from raylth.sweep.jobs import sweep_jobs
from raylth.sweep.plan import job_states, write_record
from raylth.sweep.runner import run_specs_here

pytestmark = pytest.mark.usefixtures("one_thread")

SWEEP = {"name": "faults", "base": {"levels": 3, "method": "imp", "data": {"name": "digits"},
                                    "model": {"name": "lenet"},
                                    "train": {"duration": "1ep", "batch_size": 128, "lr": 0.05}},
         "grid": {"seed": [0, 1]}}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A store holding every artifact of a three-level IMP sweep (computed in this process)."""
    root = tmp_path_factory.mktemp("faults") / "store"
    sweep = parse_sweep(SWEEP, "faults")
    for job in sweep_jobs(sweep.trials):
        run_specs_here(list(job.specs), root, data_root=tmp_path_factory.mktemp("data"))
    write_record(Store(root), sweep)
    return root, sweep


@pytest.fixture
def store_copy(stored, tmp_path):
    root, sweep = stored
    shutil.copytree(root, tmp_path / "store")
    return tmp_path / "store", sweep


def test_a_stored_job_is_finished_in_the_plan(stored):
    root, sweep = stored
    states = job_states(Store(root), sweep.trials)
    assert states and {s.state for s in states} == {"finished"}


def _flip(path, count=16):
    """Invert ``count`` bytes in the middle of a file, in place (its size unchanged)."""
    middle = path.stat().st_size // 2
    with open(path, "r+b") as f:
        f.seek(middle)
        chunk = f.read(count)
        f.seek(middle)
        f.write(bytes(b ^ 0xFF for b in chunk))


def _damage(root, ids):
    """Truncate, garble, delete and flip bytes in four artifacts: {id: what was done}."""
    imp = sorted(i for i in ids if i.startswith("imp_"))
    train = next(i for i in ids if i.startswith("train_"))
    os.truncate(root / imp[0] / "weights" / "final.pt", 1000)
    (root / imp[1] / "metrics.json").write_text("{garbled")
    (root / imp[2] / "mask.pt").unlink()
    _flip(root / train / "weights" / "final.pt")
    return {imp[0]: "truncated", imp[1]: "garbled", imp[2]: "deleted", train: "bit-flipped"}


def test_damaged_artifacts_are_damaged_never_finished_and_verify_finds_each(store_copy, capsys):
    root, sweep = store_copy
    ids = [i for job in sweep_jobs(sweep.trials) for i in job.ids]
    damaged = _damage(root, ids)
    states = job_states(Store(root), sweep.trials)
    assert {i for s in states for i in s.damaged} == set(damaged)
    assert all(s.state == "damaged" for s in states if set(s.damaged))
    assert main(["status", str(root)]) == 0
    out = capsys.readouterr().out
    assert "damaged" in out and "run the same sweep again" in out

    assert main(["verify", str(root)]) == 1
    out = capsys.readouterr().out
    assert {line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("damaged")} == set(damaged)
    assert f"{len(set(ids))} artifacts checked, {len(set(ids)) - 4} intact, 4 damaged" in out
    assert all((root / i).is_dir() for i in damaged)  # without --repair nothing moves

    untouched = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()
                 and p.relative_to(root).parts[0] not in damaged and p.relative_to(root).parts[0][0] != "."}
    assert main(["verify", str(root), "--repair"]) == 0
    assert not any((root / i).exists() for i in damaged)
    broken = {p.name.rsplit("-", 3)[0]: (p / "REASON.txt").read_text() for p in (root / ".broken").iterdir()}
    assert set(broken) == set(damaged)
    assert "truncated" in broken[next(i for i, how in damaged.items() if how == "truncated")]
    assert "checksum" in broken[next(i for i, how in damaged.items() if how == "bit-flipped")]
    assert len(untouched) > 20 and {p: p.stat().st_mtime_ns for p in untouched} == untouched
    assert main(["verify", str(root)]) == 0


def test_a_deleted_manifest_makes_the_artifact_damaged(store_copy):
    root, sweep = store_copy
    artifact_id = sweep_jobs(sweep.trials)[0].ids[0]
    (root / artifact_id / "manifest.json").unlink()
    assert Store(root).condition(artifact_id)[0] == "damaged"


def test_work_of_a_dead_process_is_interrupted_and_of_a_live_one_running(store_copy):
    root, sweep = store_copy
    job = sweep_jobs(sweep.trials)[-1]
    shutil.rmtree(root / job.ids[-1])
    owner = root / ".partial" / job.ids[-1] / "owner.json"
    owner.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "time": 0}))
    state = next(s for s in job_states(Store(root), sweep.trials) if s.job == job)
    assert state.state == "interrupted"
    owner.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": 0}))
    assert next(s for s in job_states(Store(root), sweep.trials) if s.job == job).state == "running"
    # ... unless every recorded driver of the sweep is gone
    assert next(s for s in job_states(Store(root), sweep.trials, drivers_alive=False) if s.job == job).state \
        == "interrupted"


def test_a_damaged_input_is_recomputed_equal(store_copy, tmp_path):
    root, sweep = store_copy
    job = sweep_jobs(sweep.trials)[-1]
    store = Store(root)
    before = {i: store.get(i).weights("final") for i in job.ids}
    path = root / job.ids[0] / "weights" / "final.pt"
    os.truncate(path, 100)
    with pytest.warns(UserWarning, match="truncated"):
        run_specs_here(list(job.specs), root, data_root=tmp_path)
    for i in job.ids:
        after = store.get(i).weights("final")
        assert all(torch.equal(before[i][k], after[k]) for k in after)


def test_a_read_only_store_moves_nothing_aside(store_copy):
    root, sweep = store_copy
    artifact_id = sweep_jobs(sweep.trials)[0].ids[0]
    os.truncate(root / artifact_id / "weights" / "final.pt", 10)
    assert Store(root, read_only=True).get(artifact_id) is None  # what a dry run reads through
    assert (root / artifact_id).is_dir() and not (root / ".broken").exists()


def test_a_manifest_left_in_the_partial_folder_is_not_a_file_of_the_artifact(tmp_path):
    from raylth.specs import Step, TrainSpec, TrainStageSpec

    spec = TrainStageSpec(train=TrainSpec(duration=Step(1, "ep")))
    store = Store(tmp_path)
    partial = store.partial(spec.id)
    partial.save("weights/final.pt", {"w": torch.ones(3)})
    (partial.path / "manifest.json").write_text("{}")  # an earlier finish that stopped after its manifest
    artifact = store.finish(spec, partial, {"test_acc": 0.5})
    assert "manifest.json" not in artifact.manifest and store.condition(spec.id) == ("finished", "")
