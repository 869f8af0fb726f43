"""A store written before the stage registry (tests/data/store_v1: every stage
kind, written by `raylth run tests/data/store_v1/sweep.yaml` at the commit
before it) is read, reported and extended by today's code with every result
equal and nothing recomputed."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raylth.reporting import results_frame, write_report
from raylth.stages import STAGES
from raylth.store import Store
from raylth.sweep.config import load_sweep, parse_sweep
from raylth.sweep.plan import job_states

DATA = Path(__file__).parent / "data" / "store_v1"


@pytest.fixture
def old_store(tmp_path):
    root = tmp_path / "store"
    shutil.copytree(DATA / "store", root)
    return root


KINDS_THEN = {"train", "imp", "branch", "child", "lmc", "sharpness", "landscape", "distill", "experts",
              "distill_eval", "ticket", "maskimp"}


def test_it_holds_every_stage_kind_there_was():
    kinds = {p.name.rsplit("_", 1)[0] for p in (DATA / "store").iterdir() if not p.name.startswith((".", "sweeps"))}
    assert kinds == KINDS_THEN and KINDS_THEN <= set(STAGES)


def _assert_results_as_then(store, tmp_path):
    expected = pd.read_csv(DATA / "expected" / "results.csv", keep_default_na=False, dtype=str)
    results_frame(store).to_csv(tmp_path / "now.csv", index=False)
    now = pd.read_csv(tmp_path / "now.csv", keep_default_na=False, dtype=str)
    # Since #15 a ticket's points_seen is its own training (its stored train_points_seen: one epoch of
    # digits); what it held then, the distilled trunk's levels 0..L, is its search_points as a
    # distilled_imp row. Columns added since (search_points, config/...) are checked in test_results_tidy.
    tickets = expected.stage == "ticket"
    distilled = tickets & (expected.method == "distilled_imp")
    assert list(now.search_points[distilled]) == list(expected.points_seen[distilled])
    expected.loc[tickets, "points_seen"] = "1258.0"
    pd.testing.assert_frame_equal(now[expected.columns], expected)


def test_results_and_report_equal_those_written_then(old_store, tmp_path):
    _assert_results_as_then(old_store, tmp_path)
    written = write_report(old_store, tmp_path / "report")
    for md in sorted((DATA / "expected").glob("*.md")):
        assert (tmp_path / "report" / md.name).read_text() == md.read_text(), md.name
    assert written


def _then(sweep_file: Path) -> dict:
    """The sweep asking for what was stored: the Hessians then were of the
    network in eval mode, `bn: running` since sharpness.bn exists."""
    raw = yaml.safe_load(sweep_file.read_text())
    raw["base"]["sharpness"]["bn"] = "running"
    return raw


@pytest.mark.slow  # Ray: the session's cluster
def test_the_sweep_finds_everything_stored_and_computes_nothing(old_store, tmp_path, ray_cluster):
    before = {p: p.stat().st_mtime_ns for p in old_store.rglob("*") if p.is_file() and "sweeps" not in p.parts}
    sweep = parse_sweep(_then(DATA / "sweep.yaml"), "compat")
    states = job_states(Store(old_store), sweep.trials)
    # the Hessian of each distinct network is a job of its own now; then it was part of each sharpness job
    new = {s.job.label for s in states if any(i.startswith("hessian_") for i in s.job.ids)}
    new_ids = {i for s in states if s.job.label in new for i in s.job.ids if i.startswith("hessian_")}
    assert states and {s.state for s in states if s.job.label not in new} == {"finished"}
    assert len(new) == 1  # the sweep's one dense network
    then = tmp_path / "then.yaml"
    then.write_text(yaml.safe_dump(_then(DATA / "sweep.yaml")))
    done = subprocess.run([sys.executable, "-m", "raylth.cli.main", "run", str(then), "--storage", str(old_store),
                           "--address", ray_cluster], capture_output=True, text=True, timeout=600)  # as a user runs it
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    cached = len(states) - len(new)
    assert f"{len(states)} jobs finished ({cached} already stored, {len(new)} run now), 0 failed" in done.stdout
    after = {p: p.stat().st_mtime_ns for p in old_store.rglob("*") if p.is_file() and "sweeps" not in p.parts}
    assert {p: t for p, t in after.items() if p in before} == before  # nothing stored then was touched
    added = {p.relative_to(old_store).parts[0] for p in set(after) - set(before)}
    assert {a for a in added if not a.startswith((".ray", ".partial", ".verified"))} == {f"{next(iter(new_ids))}"}
    _assert_results_as_then(old_store, tmp_path)  # the sweep's record, written again, claims the same rows


def test_the_unchanged_file_plans_only_the_new_train_mode_hessians(old_store):
    states = job_states(Store(old_store), load_sweep(DATA / "sweep.yaml").trials)
    missing = {s.job.label for s in states if s.state != "finished"}
    assert missing and all("sharpness" in label or "hessian" in label for label in missing)
