"""Tidy results (issue #15): config/ columns for the hyperparameters that vary
in a sweep, parquet output, the training histories as rows, and the two
training-point columns (points_seen: the artifact's own training;
search_points: the pruning loop up to its level). Two tiny sweeps computed in
this process (no Ray): one over seed x lr x method, one distilled_imp over ipc."""

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

import raylth
from raylth.cli.main import main
from raylth.reporting.results import columns, results_frame
from raylth.store import Store
from raylth.sweep.config import parse_sweep
from raylth.sweep.jobs import sweep_jobs
from raylth.sweep.plan import write_record
from raylth.sweep.runner import run_specs_here

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"duration": "1ep", "batch_size": 128, "lr": 0.05}
BASE = {"levels": 2, "data": {"name": "digits"}, "model": {"name": "lenet"}, "train": TRAIN}
PLAIN = {"name": "tidy", "base": BASE,
         "grid": {"seed": [0, 1], "train.lr": [0.05, 0.1], "method": ["dense", "imp", "random_prune"]}}
DISTILLED = {"name": "tidy_distilled",
             "base": BASE | {"method": "distilled_imp",
                             "distill": {"method": "dm", "ipc": 1, "iterations": 2, "model": {"name": "lenet"}},
                             "inner": {"lr": 0.02, "batch_size": 10, "duration": "1ep"}},
             "grid": {"distill.ipc": [1, 2]}}
POINTS = 1258  # digits' training split: one epoch, the last partial batch counted
OLD_STORE = Path(__file__).parent / "data" / "store_v1" / "store"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tidy") / "store"
    data = tmp_path_factory.mktemp("data")
    for raw in (PLAIN, DISTILLED):
        sweep = parse_sweep(raw, raw["name"])
        for job in sweep_jobs(sweep.trials):
            run_specs_here(list(job.specs), root, data_root=data)
        write_record(Store(root), sweep)
    return root


def test_config_columns_are_the_keys_that_vary(store):
    frame = raylth.results(store)
    assert list(frame.columns[:len(columns())]) == columns()  # the columns there were stay, in order
    config = list(frame.columns[len(columns()):])
    assert config == ["config/method", "config/train.lr", "config/seed", "config/distill.ipc"]
    plain, distilled = frame[frame.sweep == "tidy"], frame[frame.sweep == "tidy_distilled"]
    assert len(plain) == 4 * (1 + 3 + 2) and len(distilled) == 2 * 2
    for r in plain.to_dict("records"):  # each row holds its own trial's values
        assert f"seed={r['config/seed']}" in r["trial"] and f"train.lr={r['config/train.lr']}" in r["trial"]
    assert (plain["config/method"] == plain.method).all()
    assert set(plain["config/seed"]) == {0, 1} and (plain["config/seed"] == plain.seed).all()
    assert plain["config/distill.ipc"].isna().all()  # the plain trials hold no distillation
    # a key constant within a sweep still shows its value where another sweep varies it
    assert (distilled["config/seed"] == 0).all() and (distilled["config/train.lr"] == 0.05).all()
    assert sorted(distilled["config/distill.ipc"]) == [1, 1, 2, 2]
    # one sweep alone: only its own varying keys
    only = raylth.results(store, sweep="tidy_distilled")
    assert list(only.columns[len(columns()):]) == ["config/distill.ipc"]


def test_points_seen_is_own_training_and_search_points_the_loop(store):
    frame = raylth.results(store)
    nets = frame[frame.stage.isin(["train", "imp", "branch", "ticket"])]
    assert (nets.points_seen == POINTS).all()  # tickets too: their own training on the real data
    for r in nets.to_dict("records"):
        if r["method"] in ("dense", "imp", "random_prune"):
            # imp: real levels 0..L; random_prune: the trunk's 0..L-1 and its own training (rewind 0: as long)
            assert r["search_points"] == POINTS * (r["level"] + 1), r
        else:  # distilled_imp: the distilled trunk's levels 0..L, 10 images per ipc, one pass each
            assert r["search_points"] == 10 * r["config/distill.ipc"] * (r["level"] + 1), r
    # summing points_seen along one imp trunk gives its top level's search_points
    for _, imp in frame[frame.method == "imp"].groupby("trial"):
        assert len(imp) == 3 and imp.points_seen.sum() == imp.search_points.max()
    assert frame[~frame.stage.isin(["train", "imp", "branch", "ticket"])].search_points.isna().all()


def test_an_old_store_reads_the_new_points(tmp_path):
    frame = results_frame(OLD_STORE)  # written before the two were told apart: derived from its metrics
    tickets = frame[(frame.stage == "ticket") & (frame.method == "distilled_imp")]
    assert list(tickets.points_seen) == [POINTS, POINTS]  # its own training: train_points_seen
    assert list(tickets.search_points) == [20, 30]  # its distilled trunk's levels 0..L: points_seen then
    maskimp = frame[frame.stage == "maskimp"].iloc[0]
    assert maskimp.search_points == 20 + POINTS + POINTS  # distilled 0..1, the start ticket, real level 2
    assert list(frame.columns[len(columns()):]) == ["config/method"]


def test_history_has_a_row_per_evaluation(store):
    frame = raylth.history(store)
    results = raylth.results(store)
    config = [c for c in results.columns if c.startswith("config/")]
    assert len(config) >= 2 and [c for c in frame.columns if c.startswith("config/")] == config  # the same
    for column in ("sweep", "stage", "method", "seed", "level", "step", "epoch", "train_loss", "test_loss",
                   "test_acc", "trial", "id"):
        assert column in frame.columns
    s = Store(store)
    for artifact_id in results[results.stage.isin(["imp", "ticket"])].id.unique():
        history = s.get(artifact_id).metrics["history"]
        rows = frame[frame.id == artifact_id].drop_duplicates("trial")
        mine = frame[(frame.id == artifact_id) & (frame.trial == rows.trial.iloc[0])]
        assert list(mine.step) == [h["step"] for h in history]
        assert list(mine.test_acc) == [h["test_acc"] for h in history]
        assert mine.test_acc.iloc[-1] == s.get(artifact_id).metrics["test_acc"]
    # a method's preparation is in the histories (no results row): the distilled trunk's levels 0..2
    trunk = frame[(frame.method == "distilled_imp") & (frame.dataset == "distilled")]
    assert sorted(set(zip(trunk.level, trunk["config/distill.ipc"]))) == [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)]
    assert set(frame[frame.sweep == "tidy"]["config/seed"]) == {0, 1}
    assert set(raylth.history(store, sweep="tidy").sweep) == {"tidy"}


def test_cli_formats_and_parquet_round_trip(store, tmp_path, capsys):
    for history in ([], ["--history"]):
        frame = (raylth.history if history else raylth.results)(store)
        out = tmp_path / f"r{len(history)}.parquet"
        assert main(["results", str(store), "--format", "parquet", "--out", str(out), *history]) == 0
        back = pd.read_parquet(out)
        pd.testing.assert_frame_equal(back, frame, check_dtype=False)
        assert main(["results", str(store), "--format", "csv", "--out", str(tmp_path / "r.csv"), *history]) == 0
        assert len(pd.read_csv(tmp_path / "r.csv")) == len(frame)
        capsys.readouterr()
        assert main(["results", str(store), "--format", "json", *history]) == 0
        assert len(json.loads(capsys.readouterr().out)) == len(frame)


def test_parquet_is_not_written_to_a_terminal(store, monkeypatch, capsys):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["results", str(store), "--format", "parquet"]) == 2
    err = capsys.readouterr()
    assert err.out == "" and len(err.err.strip().splitlines()) == 1 and "--out FILE" in err.err


def test_a_parquet_of_mixed_values_is_written_as_text(tmp_path):
    from raylth.reporting.results import write_table

    frame = pd.DataFrame({"config/x": [1, "flip", None], "config/levels": [(1, 2), (3,), None]})
    write_table(frame, "parquet", tmp_path / "m.parquet")
    back = pd.read_parquet(tmp_path / "m.parquet")
    assert list(back["config/x"][:2]) == ["1", "flip"] and back["config/x"].isna().iloc[2]
    assert [list(v) for v in back["config/levels"][:2]] == [[1, 2], [3]]


def test_an_unrecorded_artifact_has_no_config(store, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(store, root)
    for name in ("tidy", "tidy_distilled"):
        (root / "sweeps" / f"{name}.yaml").unlink()
    frame = raylth.results(root)
    assert set(frame.sweep) == {""} and list(frame.columns) == columns()
    imp = frame[(frame.stage == "imp") & (frame.dataset == "digits")]  # (the distilled trunks are imp levels too)
    assert len(imp) == 8 and (imp.search_points == POINTS * (imp.level + 1)).all()
