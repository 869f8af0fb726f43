"""A store written before the stage registry (tests/data/store_v1: every stage
kind, written by `raylth run tests/data/store_v1/sweep.yaml` at the commit
before it) is read, reported and extended by today's code with every result
equal and nothing recomputed."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from raylth.reporting import results_frame, write_report
from raylth.stages import STAGES
from raylth.store import Store
from raylth.sweep.config import load_sweep
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
    pd.testing.assert_frame_equal(now, expected)


def test_results_and_report_equal_those_written_then(old_store, tmp_path):
    _assert_results_as_then(old_store, tmp_path)
    written = write_report(old_store, tmp_path / "report")
    for md in sorted((DATA / "expected").glob("*.md")):
        assert (tmp_path / "report" / md.name).read_text() == md.read_text(), md.name
    assert written


def test_the_sweep_finds_everything_stored_and_computes_nothing(old_store, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in old_store.rglob("*") if p.is_file() and "sweeps" not in p.parts}
    sweep = load_sweep(DATA / "sweep.yaml")
    states = job_states(Store(old_store), sweep.trials)
    assert states and {s.state for s in states} == {"finished"}
    from raylth.api import run

    outcome = run(DATA / "sweep.yaml", storage=old_store)
    assert not outcome.failed and len(outcome.cached) == len(states)
    after = {p: p.stat().st_mtime_ns for p in old_store.rglob("*") if p.is_file() and "sweeps" not in p.parts}
    assert after == before
    _assert_results_as_then(old_store, tmp_path)  # the sweep's record, written again, claims the same rows
