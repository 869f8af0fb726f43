"""Optuna searches (kind: search): the file, define-by-run spaces, pruning,
stale-trial recovery and the ticket objective. A search through Ray whose
driver is killed halfway, resumed to its n_trials, and whose best sweep then
runs: tests/test_faults_and_cluster.py (its study in PostgreSQL, its trials on
two nodes)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
import torch
import yaml

import raylth
from raylth.api import load_sweep, parse_any
from raylth.search import Search, check_search, make_storage, parse_search, recover_stale, run_trial

REPO = Path(__file__).resolve().parents[1]
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

SEARCH = {
    "kind": "search", "name": "tiny", "resources": {"cpu": 1, "gpu": 0},
    "study": {"n_trials": 8, "concurrent": 2, "seed": 0, "intermediate": 2,
              "sampler": {"name": "tpe", "n_startup_trials": 3}, "pruner": {"name": "median", "n_startup_trials": 2}},
    "base": {"distill": {"data": {"name": "digits"}, "method": "dm", "ipc": 2, "iterations": 40,
                         "model": {"name": "lenet"}},
             "eval": {"model": {"name": "lenet"}, "epochs": 100, "seeds": [0]}},
    "space": {"distill.iterations": {"type": "int", "low": 20, "high": 60, "step": 20},
              "distill.lr_img": {"type": "float", "low": 0.1, "high": 10, "log": True}},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def with_(**changes) -> dict:
    raw = yaml.safe_load(yaml.safe_dump(SEARCH))
    for dotted, value in changes.items():
        node, *path = raw, *dotted.split("__")
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return raw


# -- the file ---------------------------------------------------------------------------------
def test_search_files_parse_and_dispatch():
    for name in ("distill_search_digits", "distill_search_cifar10"):
        search = load_sweep(REPO / "sweeps" / f"{name}.yaml")
        assert isinstance(search, Search) and search.name == name and search.objective.name == "distill"
    assert isinstance(parse_any(SEARCH), Search)
    assert type(parse_any({"base": {"levels": 1}})).__name__ == "Sweep"


@pytest.mark.parametrize("changes, needle", [
    ({"study__sampler": "grid"}, "study.sampler: unknown sampler 'grid'"),
    ({"study__n_trials": 0}, "study.n_trials: 0 must be an integer >= 1"),
    ({"studdy": {}}, "unknown key 'studdy'"),
    ({"space__distill.lr_img__type": "loguniform"}, "space.distill.lr_img.type: 'loguniform'"),
    ({"space__distill.ipc": {"type": "int", "low": 1, "high": 300}}, "space.distill.ipc=300"),
    ({"space__distill.ipcc": {"type": "int", "low": 1, "high": 3}}, "ipcc"),
    ({"space__trial.inner.lr": {"type": "float", "low": 0.1, "high": 1}}, "starting with distill. or eval."),
    ({"base__distill__method": "kip"}, "distill.method: 'kip' is not one of"),
])
def test_bad_search_files_fail_with_one_line(changes, needle, tmp_path):
    raw = with_(**changes)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(raylth.errors.RaylthError) as caught:
        search = load_sweep(path)
        check_search(search, tmp_path / "store", tmp_path / "data")  # ipc vs the data
    assert needle in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("url, needle", [
    ("mysql+pymysql://u@127.0.0.1:1/db", "its database driver is not installed (No module named 'pymysql')"),
    ("postgresql+nosuch://u@127.0.0.1:1/db", "is not a database URL SQLAlchemy knows"),
    ("postgresql+psycopg://u:secret@127.0.0.1:1/db", "cannot reach postgresql+psycopg://u:***@127.0.0.1:1/db"),
])
def test_a_study_storage_that_cannot_be_opened_is_one_line(url, needle):
    with pytest.raises(raylth.errors.SpecError) as caught:
        make_storage(url)
    message = str(caught.value)
    assert needle in message and "\n" not in message and "secret" not in message, message


def test_a_search_crosses_to_its_ray_tasks_as_it_is():
    import cloudpickle

    search = parse_search(SEARCH)
    back = cloudpickle.loads(cloudpickle.dumps(search))
    assert back == search and back.specs({}) == search.specs({})


def test_method_fields_are_searched_only_for_their_method():
    search = parse_search(with_(space={
        "distill.method": {"type": "categorical", "choices": ["dm", "mtt"]},
        "distill.syn_steps": {"type": "int", "low": 2, "high": 4},
        "distill.iterations": {"type": "int", "low": 10, "high": 20}},
        base__distill__max_start_epoch=2, base__distill__experts={"epochs": 4}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = []
    for _ in range(12):
        params = search.suggest(study.ask())
        seen.append(params)
        distill, _ = search.specs(params)
        assert ("distill.syn_steps" in params) == (params["distill.method"] == "mtt")
        assert distill.method == params["distill.method"] and distill.iterations == params["distill.iterations"]
    assert {p["distill.method"] for p in seen} == {"dm", "mtt"}


# -- trials, in this process ------------------------------------------------------------------------
def _study(tmp_path, raw, pruner=None):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name=raw["name"], storage=make_storage(url), direction="maximize",
                                pruner=pruner)
    return url, study


def test_a_hopeless_trial_is_pruned_and_stores_no_distillation(tmp_path):
    raw = with_(study__pruner={"name": "median", "n_startup_trials": 1})
    url, study = _study(tmp_path, raw)
    search = parse_search(raw)
    assert search.intermediate_steps() == [20, 40]  # absolute: the same iterations in every trial
    study.add_trial(optuna.trial.create_trial(value=0.99, intermediate_values={20: 0.99, 40: 0.99}))
    trial = study.ask()
    params = {"distill.iterations": 60, "distill.lr_img": 0.1}
    result = run_trial(search, url, trial.number, params, str(tmp_path / "store"), str(tmp_path / "data"))
    assert result["state"] == "pruned" and result["step"] == 20
    frozen = study.get_trials()[trial.number]
    assert list(frozen.intermediate_values) == [20] and frozen.intermediate_values[20] < 0.99
    distill, evaluation = parse_search(raw).specs(params)
    assert not (tmp_path / "store" / distill.id).exists() and not (tmp_path / "store" / evaluation.id).exists()


def test_ticket_objective_scores_the_ticket_at_the_target_sparsity(tmp_path):
    raw = {"kind": "search", "name": "tickets", "study": {"n_trials": 1},
           "base": {"trial": {"method": "distilled_imp", "levels": 1, "data": {"name": "digits"},
                              "model": {"name": "lenet"}, "train": {"lr": 0.05, "batch_size": 64, "duration": "3ep",
                                                                    "eval_every": "1ep"},
                              "distill": {"method": "dm", "ipc": 2, "iterations": 10, "model": {"name": "lenet"}},
                              "inner": {"lr": 0.02, "batch_size": 2, "duration": "2ep"}},
                    "target_sparsity": 0.3},
           "space": {"trial.inner.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
                     "trial.inner.duration": {"type": "int", "low": 1, "high": 3, "unit": "ep"}}}
    search = parse_search(raw)
    url, study = _study(tmp_path, raw)
    trial = study.ask()
    params = search.suggest(trial)
    assert params["trial.inner.duration"].endswith("ep")
    spec, level = search.specs(params)
    assert level == 2 and spec.levels == 2  # 1 - 0.8^2 = 36% >= 30%
    result = run_trial(search, url, trial.number, params, str(tmp_path / "store"), str(tmp_path / "data"))
    assert result["state"] == "complete" and 0.5 < result["value"] <= 1
    ticket = raylth.store.Store(tmp_path / "store").get(result["artifacts"][-1])
    assert ticket.kind == "ticket" and ticket.metrics["level"] == 2
    # scored on the validation split held out of every training; the test accuracy reported beside it
    assert spec.data.validation == 0.1 and ticket.metrics["val_acc"] == result["value"]
    assert ticket.metrics["test_acc"] == result["test_acc"]
    # intermediate values: the ticket's own validation accuracy during its real training (steps: its
    # iterations), the objective's quantity at a partial budget; the distilled trunk reports none
    history = ticket.metrics["history"]
    frozen = study.get_trials()[trial.number]
    assert frozen.intermediate_values == {h["step"]: h["val_acc"] for h in history[:-1]} and history[:-1]


def test_trials_are_scored_on_held_out_training_images_at_equal_absolute_budgets(tmp_path):
    """The objective is the validation accuracy (each class's held-out training
    images, out of the distillation and the evaluation training); the test
    accuracy is returned for the record; a shorter trial reports the same
    absolute steps, those it reaches."""
    raw = with_(study__pruner="none")
    search = parse_search(raw)
    url, study = _study(tmp_path, raw)
    trial = study.ask()
    params = {"distill.iterations": 40, "distill.lr_img": 1.0}
    result = run_trial(search, url, trial.number, params, str(tmp_path / "store"), str(tmp_path / "data"))
    distill, evaluation = search.specs(params)
    assert distill.data.validation == 0.1
    stored = raylth.store.Store(tmp_path / "store").get(evaluation.id).metrics
    assert result["value"] == stored["val_acc"] and result["test_acc"] == stored["test_acc"]
    assert list(study.get_trials()[trial.number].intermediate_values) == [20]
    from raylth.engine.data import load_dataset
    from raylth.specs import DataSpec

    full, held = load_dataset(DataSpec("digits")), load_dataset(distill.data)
    assert len(held.train_y) + len(held.val_y) == len(full.train_y)
    assert torch.bincount(held.val_y).tolist() == [round(0.1 * int(n)) for n in torch.bincount(full.train_y)]
    with pytest.raises(raylth.errors.SpecError, match="study.validation"):
        parse_search(with_(study__validation=0))


def test_trials_of_a_dead_driver_are_failed_and_enqueued_again(tmp_path):
    url = f"journal://{tmp_path / 'study.log'}"
    storage = make_storage(url)
    study = optuna.create_study(study_name="s", storage=storage)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = raylth.store.Store(tmp_path / "store")
    # a driver on another host is alive while its record in the store beats (one rule: raylth.store.liveness)
    elsewhere = {"name": "s", "host": "node-b", "pid": 7, "started": 1.0, "heartbeat": 0.0}
    store.write_file("searches/.drivers/s/node-b-7.json", json.dumps(elsewhere | {"heartbeat": time.time()}).encode())
    for stamp in ({"host": os.uname().nodename, "pid": dead.pid, "started": 0.0},
                  {"host": os.uname().nodename, "pid": os.getpid(), "started": psutil.Process().create_time()},
                  elsewhere, elsewhere | {"pid": 8}):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("driver", stamp)
    # the second trial's driver (this process) is alive, so is node-b's pid 7; node-b's pid 8 never beat
    assert recover_stale(study, storage, store) == 2
    states = [t.state for t in study.get_trials()]
    R, F, W = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING
    assert states == [F, R, R, F, W, W]
    failed, *_, retry, _ = study.get_trials()
    assert retry.params == failed.params and retry.system_attrs["failed_trial"] == failed.number
    assert study.ask().number == 4 and study.get_trials()[4].state == R


def test_pruning_values_use_the_final_evaluation_and_its_learned_lr(tmp_path, monkeypatch):
    """An MTT trial's intermediate values train the evaluation networks with
    the student lr learned so far, as the final objective does with the
    stored one (not at a fixed 0.01)."""
    import raylth.stages.distill_eval as D
    from raylth.stages import StageContext, run_stage
    from raylth.specs import DistillSpec

    mtt = {"data": {"name": "digits"}, "method": "mtt", "ipc": 1, "iterations": 2, "syn_steps": 2,
           "expert_epochs": 1, "max_start_epoch": 1, "lr_lr": 1e-4, "model": {"name": "lenet"},
           "experts": {"n": 1, "epochs": 2}}
    raw = with_(base__distill=mtt, base__eval={"model": {"name": "lenet"}, "epochs": 5, "seeds": [0]},
                study__intermediate=1, space={"distill.lr_init": {"type": "float", "low": 0.01, "high": 0.02}})
    url, study = _study(tmp_path, raw)
    trial = study.ask()
    lrs = []
    original = D.evaluate_images
    monkeypatch.setattr(D, "evaluate_images", lambda *a, **k: (lrs.append(k["lr"]), original(*a, **k))[1])
    result = run_trial(parse_search(raw), url, trial.number, {"distill.lr_init": 0.01}, str(tmp_path / "store"),
                       str(tmp_path / "data"))
    assert result["state"] == "complete" and len(lrs) == 2  # the intermediate value, then the final evaluation
    # the lr after the first of the two iterations: a one-iteration run of the same distillation
    ctx = StageContext(store=raylth.store.Store(tmp_path / "store"))
    first = DistillSpec.from_dict(mtt | {"iterations": 1, "lr_init": 0.01,
                                         "data": {"name": "digits", "validation": 0.1}})  # the search holds out 10%
    learned_then = float(run_stage(first, ctx).load("distilled.pt")["lr"])
    assert learned_then != 0.01 and lrs[0] == pytest.approx(learned_then, rel=1e-6)
    final = raylth.store.Store(tmp_path / "store").get(result["artifacts"][-1])
    assert final.metrics["lr"] != 0.01 and lrs[1] == final.metrics["lr"]
