"""Experiment trackers (``loggers:``): a sweep through Ray Tune and a search
through its Optuna driver, logging to Weights & Biases
(offline), MLflow (a local SQLite store) and TensorBoard (event files) at
once, each run by the CLI in a process of its own; each tracker's own files
read back. The block is checked at the edge."""

import glob
import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from raylth.errors import SpecError
from raylth.search import parse_search
from raylth.sweep.config import parse_sweep
from raylth.sweep.loggers import TRACKERS, installed

INSTALLED = {name: installed(tracker.package) for name, tracker in TRACKERS.items()}
LOGGERS = {"wandb": {"mode": "offline", "project": "raylth-test"}, "mlflow": {}, "tensorboard": True}
SWEEP = {"name": "tracked",
         "base": {"method": "imp", "levels": 1, "data": {"name": "digits"}, "model": {"name": "lenet"},
                  "train": {"duration": "2ep", "batch_size": 64, "lr": 0.05, "eval_every": "1ep"}, "seed": 0}}
SEARCH = {"kind": "search", "name": "tracked_search",
          "study": {"n_trials": 2, "concurrent": 1, "seed": 0, "intermediate": 1, "pruner": "none"},
          "base": {"distill": {"data": {"name": "digits"}, "method": "dm", "ipc": 1, "iterations": 6,
                               "model": {"name": "lenet"}},
                   "eval": {"model": {"name": "lenet"}, "epochs": 5, "seeds": [0]}},
          "space": {"distill.lr_img": {"type": "float", "low": 0.1, "high": 10, "log": True}}}


def needs(name: str):
    return pytest.mark.skipif(not INSTALLED[name], reason=f"{name} is not installed: pip install \"raylth[{name}]\"")


# -- the block, checked at the edge -------------------------------------------------------------
@pytest.mark.parametrize("block, needle", [
    ({"wandbb": {}}, "tracked: loggers.wandbb: unknown key (did you mean 'wandb'?); trackers are wandb, mlflow, "
                     "tensorboard"),
    ({"mlflow": {"experimnt": "x"}}, "loggers.mlflow.experimnt: unknown key (did you mean 'experiment'?)"),
    ({"wandb": {"mode": "ofline"}}, "loggers.wandb.mode: 'ofline' is not online, offline or disabled"),
    ({"wandb": {"project": 3}}, "loggers.wandb.project: 3 must be a str"),
    ({"tensorboard": "yes"}, "loggers.tensorboard: 'yes' must be true or false"),
    ({"tensorboard": {"x": 1}}, "loggers.tensorboard: {'x': 1} must be true or false"),
    ({"mlflow": ["sqlite:///x.db"]}, "loggers.mlflow: ['sqlite:///x.db'] must be true, false or a mapping of "
                                     "tracking_uri, experiment"),
    (["wandb"], "tracked: loggers must be a mapping"),
])
def test_a_bad_loggers_block_is_one_line(block, needle):
    with pytest.raises(SpecError) as err:
        parse_sweep(SWEEP | {"loggers": block}, where="tracked")
    assert needle in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SpecError) as err:  # a search's block is the same
        parse_search(SEARCH | {"loggers": block}, where="tracked")
    assert needle in str(err.value)


def test_a_missing_tracker_package_names_the_extra(monkeypatch):
    import raylth.sweep.loggers as loggers

    found = importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None if name == "mlflow" else found(name))
    with pytest.raises(SpecError, match=r'^tracked: loggers.mlflow needs mlflow: pip install "raylth\[mlflow\]"$'):
        parse_sweep(SWEEP | {"loggers": {"mlflow": True}}, where="tracked")
    assert parse_sweep(SWEEP | {"loggers": {"mlflow": False, "tensorboard": True}}).loggers == {"tensorboard": {}}


def test_every_tracker_has_its_extra_and_a_tune_and_search_logger():
    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = extras["project"]["optional-dependencies"]
    for name, tracker in TRACKERS.items():
        assert tracker.extra in extras and callable(tracker.tune) and callable(tracker.search), name
        assert name in LOGGERS, f"{name}: add it to this file's LOGGERS (the end-to-end run)"


def test_the_cli_refuses_a_bad_block_before_writing_anything(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(SWEEP | {"loggers": {"mlflow": {"tracking_url": "sqlite:///x.db"}}}))
    done = subprocess.run([sys.executable, "-m", "raylth.cli.main", "run", str(path), "--storage",
                           str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.strip().endswith(f"{path}: loggers.mlflow.tracking_url: unknown key (did you mean "
                                        "'tracking_uri'?); loggers.mlflow keys are tracking_uri, experiment")
    assert not (tmp_path / "s").exists()


# -- a sweep and a search with all three trackers ------------------------------------------------
@pytest.fixture(scope="module")
def tracked(tmp_path_factory, ray_cluster):
    """The sweep and the search run as a user runs them: `raylth run FILE` in a
    process of its own (in the suite's process an earlier test's Ray/Tune state
    once cancelled the first trial's actor before it started), on the session's
    cluster (the trackers run in the driver)."""
    root = tmp_path_factory.mktemp("trackers")
    loggers = {name: options for name, options in LOGGERS.items() if INSTALLED[name]}
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"WANDB_DIR": str(root / "wandb"), "WANDB_SILENT": "true"}
    shown = []
    for name, spec in (("sweep", SWEEP), ("search", SEARCH)):
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec | {"loggers": loggers}))
        done = subprocess.run([sys.executable, "-m", "raylth.cli.main", "run", str(path), "--storage",
                               str(root / "results"), "--address", ray_cluster], capture_output=True, text=True,
                              timeout=600, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        shown.append(done.stdout)
    assert "tracked_search: 2 trials complete, 0 pruned" in shown[1], shown[1][-2000:]
    return SimpleNamespace(storage=root / "results", wandb=root / "wandb" / "wandb", stdout=shown[0])


EVALUATIONS = [("train", 0, 1.0), ("train", 0, 2.0), ("imp", 1, 1.0), ("imp", 1, 2.0)]  # (stage, level, epoch)


@pytest.mark.slow
def test_tune_gets_every_evaluation_and_shows_them_in_its_table(tracked):
    trial_dir, = glob.glob(str(tracked.storage / ".ray" / "tracked-*" / "*" / "result.json"))
    results = [json.loads(line) for line in Path(trial_dir).read_text().splitlines()]
    evaluations = [r for r in results if "epoch" in r]
    assert [(r["stage"], r["level"], r["epoch"]) for r in evaluations] == EVALUATIONS
    assert all(0 < r["test_acc"] <= 1 and r["train_loss"] > 0 and r["artifact"].startswith(r["stage"])
               for r in evaluations)
    assert results[0]["config"]["train.lr"] == 0.05 and results[0]["config"]["trial"] == "base"
    header = [line for line in tracked.stdout.splitlines() if "Trial name" in line][-1]  # the last table
    assert "| method " in header and "test acc" in header and "train.lr" not in tracked.stdout


def _wandb_records(path: Path):
    """The records of an offline run's .wandb file (W&B's own protobuf Records,
    framed as a LevelDB log: 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, parts = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last part of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def _wandb_runs(folder: Path) -> dict:
    """name -> {project, group, config, history rows} of each offline run under ``folder``."""
    runs = {}
    for path in folder.glob("offline-run-*/run-*.wandb"):
        run = {"history": []}
        for record in _wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run |= {"project": record.run.project, "group": record.run.run_group, "name": record.run.display_name,
                        "config": {item.key: json.loads(item.value_json) for item in record.run.config.update}}
            elif kind == "history":
                run["history"].append({"/".join(item.nested_key) or item.key: json.loads(item.value_json)
                                       for item in record.history.item})
        runs[run["name"]] = run
    return runs


@pytest.mark.slow
@needs("wandb")
def test_wandb_offline_runs_hold_the_history(tracked):
    runs = _wandb_runs(tracked.wandb)
    assert sorted(runs) == ["base", "trial-0", "trial-1"]
    sweep = runs["base"]
    assert (sweep["project"], sweep["group"]) == ("raylth-test", "tracked")
    assert sweep["config"]["train.lr"] == 0.05 and sweep["config"]["method"] == "imp"
    assert [(row["level"], row["epoch"]) for row in sweep["history"] if "epoch" in row] == \
        [(level, epoch) for _, level, epoch in EVALUATIONS]
    assert all(0 < row["test_acc"] <= 1 for row in sweep["history"] if "epoch" in row)
    for name in ("trial-0", "trial-1"):  # the search's trials: params, distillation losses, intermediate value
        trial = runs[name]
        assert trial["group"] == "tracked_search" and 0.1 <= trial["config"]["distill.lr_img"] <= 10
        assert [row["iteration"] for row in trial["history"] if "iteration" in row] == list(range(1, 7))
        steps = [row["intermediate_step"] for row in trial["history"] if "intermediate_value" in row]
        assert steps == [3]  # the one pruning point: iteration 3 of 6


@pytest.mark.slow
@needs("mlflow")
def test_mlflow_holds_runs_params_and_per_epoch_metrics(tracked):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked.storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")  # the sweep's name by default
    run, = client.search_runs([experiment.experiment_id])
    assert run.data.tags["sweep"] == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.05" and run.data.params["data.name"] == "digits"
    epochs = client.get_metric_history(run.info.run_id, "epoch")
    assert [m.value for m in sorted(epochs, key=lambda m: m.step)] == [epoch for *_, epoch in EVALUATIONS]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 4
    search = client.get_experiment_by_name("tracked_search")
    trials = client.search_runs([search.experiment_id])
    assert sorted(r.info.run_name for r in trials) == ["trial-0", "trial-1"]
    for trial in trials:
        assert trial.data.tags["state"] == "COMPLETE" and "distill.lr_img" in trial.data.params
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "intermediate_value")] == [3]
        assert 0 < trial.data.metrics["value"] <= 1
        assert len(client.get_metric_history(trial.info.run_id, "distill_loss")) == 6


def _scalars(folder) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
@needs("tensorboard")
def test_tensorboard_event_files_hold_the_scalars(tracked):
    pytest.importorskip("tensorboard", reason="the reader is tensorboard's: pip install \"raylth[tensorboard]\"")
    trial, = glob.glob(str(tracked.storage / ".ray" / "tracked-*" / "*" / "events.out.tfevents.*"))
    scalars = _scalars(Path(trial).parent)
    assert [value for _, value in scalars["ray/tune/epoch"]] == [epoch for *_, epoch in EVALUATIONS]
    assert len(scalars["ray/tune/train_loss"]) == 4
    search = _scalars(tracked.storage / ".ray" / "tracked_search" / "trial-0")
    assert [step for step, _ in search["intermediate_value"]] == [3]
    assert len(search["distill/distill_loss"]) == 6 and 0 < search["value"][0][1] <= 1


@pytest.mark.parametrize("name, options", [("wandb", {"mode": "offline"}), ("mlflow", {}), ("tensorboard", {})])
def test_a_trial_whose_actor_never_started_ends_without_a_tracker_run(name, options, tmp_path):
    from raylth.sweep.loggers import Where

    if not INSTALLED[name]:
        pytest.skip(f"{name} is not installed")
    callback = TRACKERS[name].tune(options, Where("s", tmp_path))
    callback.log_trial_end(object(), failed=True)  # Ray's own W&B and MLflow callbacks raised KeyError here
