"""Live progress: every evaluation inside a stage goes to ``StageContext.on_eval``
(in a Tune trial: ``tune.report``, so Tune's progress table and the trackers get
it) while the stage's stored history stays what it was. Through Ray Tune end to
end (with the trackers): tests/test_trackers.py."""

import optuna
import pytest
import torch

from raylth.search import make_storage, parse_search, run_trial
from raylth.specs import DataSpec, DistillSpec, ImpLevelSpec, ModelSpec, Step, TrainSpec
from raylth.plugins.analyses.lmc import ChildSpec
from raylth.stages import StageContext, run_stage
from raylth.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = TrainSpec(lr=0.05, batch_size=64, duration=Step.parse("2ep"), eval_every=Step.parse("1ep"))
HISTORY_KEYS = {"step", "epoch", "train_loss", "test_loss", "test_acc"}  # a stored history entry, as before


def test_every_evaluation_of_training_imp_levels_and_children_is_reported_as_it_happens(tmp_path):
    rows = []
    ctx = StageContext(store=Store(tmp_path), device=torch.device("cpu"), on_eval=rows.append)
    spec = ImpLevelSpec(data=DataSpec("digits"), model=ModelSpec("lenet"), train=TRAIN, level=1)
    level = run_stage(spec, ctx)
    child = run_stage(ChildSpec(parent=level.id, spawn=Step.parse("0it")), ctx)
    dense = ctx.store.get(spec.trunk_root().id)
    for artifact, stage, depth, kept in ((dense, "train", 0, 0.0), (level, "imp", 1, level.metrics["sparsity"]),
                                         (child, "child", 1, level.metrics["sparsity"])):
        mine = [row for row in rows if row["artifact"] == artifact.id]
        history = artifact.metrics["history"]
        assert [set(entry) for entry in history] == [HISTORY_KEYS] * 2  # one entry per epoch, as stored before
        assert [{k: row[k] for k in HISTORY_KEYS} for row in mine] == history
        assert all(row["stage"] == stage and row["level"] == depth and row["sparsity"] == kept for row in mine)
        assert [row["epoch"] for row in mine] == [1.0, 2.0]
    # in the order they happened: the dense run, its pruned level, then the child
    assert [row["stage"] for row in rows] == ["train"] * 2 + ["imp"] * 2 + ["child"] * 2


def test_distillation_reports_its_iterations_and_loss(tmp_path):
    rows = []
    ctx = StageContext(store=Store(tmp_path), device=torch.device("cpu"), on_eval=rows.append)
    spec = DistillSpec(data=DataSpec("digits"), method="dm", ipc=1, iterations=10, model=ModelSpec("lenet"))
    artifact = run_stage(spec, ctx)
    assert [[row["iteration"], row["distill_loss"]] for row in rows] == artifact.metrics["losses"]
    assert {row["stage"] for row in rows} == {"distill"} and {row["artifact"] for row in rows} == {artifact.id}


def test_a_search_trial_returns_the_evaluations_inside_its_stages(tmp_path):
    raw = {"kind": "search", "name": "live", "study": {"n_trials": 1, "intermediate": 1, "pruner": "none"},
           "base": {"distill": {"data": {"name": "digits"}, "method": "dm", "ipc": 1, "iterations": 6,
                                "model": {"name": "lenet"}},
                    "eval": {"model": {"name": "lenet"}, "epochs": 5, "seeds": [0]}},
           "space": {"distill.lr_img": {"type": "float", "low": 0.1, "high": 10, "log": True}}}
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="live", storage=make_storage(url), direction="maximize")
    trial = study.ask()
    result = run_trial(parse_search(raw), url, trial.number, {"distill.lr_img": 1.0}, str(tmp_path / "s"),
                       str(tmp_path / "data"))
    assert result["state"] == "complete"
    assert [row["iteration"] for row in result["progress"]] == list(range(1, 7))
    assert study.get_trials()[0].intermediate_values.keys() == {3}  # the study's own values: at iteration 3 of 6


def test_tunes_progress_table_shows_the_evaluation_columns(capsys, tmp_path, monkeypatch):
    from ray.tune.experiment import Trial

    from raylth.sweep.loggers import PROGRESS_COLUMNS, progress_reporter

    # a trial outside a Ray session: no storage folders
    monkeypatch.setattr(Trial, "local_experiment_path", property(lambda self: str(tmp_path)))
    monkeypatch.setattr(Trial, "local_path", property(lambda self: None))
    trial = Trial("raylth", config={"trial": "method=imp", "method": "imp", "train.lr": 0.05}, stub=True)
    trial.set_status(Trial.RUNNING)
    trial.update_last_result({"stage": "imp", "level": 2, "epoch": 3.0, "train_loss": 0.25, "test_acc": 0.9,
                              "sparsity": 0.36, "artifact": "imp_0123456789abcdef"})
    reporter = progress_reporter()
    reporter.setup(start_time=0.0, total_samples=1)
    reporter.report([trial], False)
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if "Trial name" in line)
    names = [name.strip() for name in header.strip("|").split("|")]
    # the job's method (not the whole flattened spec) and the evaluation's columns, in order
    assert names[3:] == ["method"] + [PROGRESS_COLUMNS[k] for k in ("stage", "level", "epoch", "train_loss",
                                                                    "test_acc", "sparsity")]
    assert "train.lr" not in table and "| imp " in table
