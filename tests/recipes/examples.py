"""The recipe examples at work (run by tests/test_recipes.py after mount.py):
a sweep naming the new method, the new analysis block and the new
distillation method runs through jobs, results rows and the report."""

import pytest
import torch

from raylth.reporting import results_frame, write_report
from raylth.stages import METHODS, StageContext, run_stage
from raylth.stages.analyses import ANALYSES
from raylth.specs.distill import DISTILL_METHODS
from raylth.store import Store
from raylth.sweep.config import parse_sweep
from raylth.sweep.jobs import sweep_jobs
from raylth.sweep.plan import write_record

BASE = {"data": {"name": "digits"}, "model": {"name": "lenet", "width": 16},
        "train": {"lr": 0.05, "batch_size": 64, "duration": "1ep"}}


def test_the_examples_are_registered():
    assert "imp_last" in METHODS and "weight_norm" in ANALYSES and "moments" in DISTILL_METHODS


def test_a_sweep_runs_the_new_method_analysis_and_distiller(tmp_path):
    torch.set_num_threads(1)
    sweep = parse_sweep({"name": "recipes", "base": BASE | {"levels": 1}, "grid": {"method": ["imp_last", "distill"]},
                         "per_method": {"imp_last": {"weight_norm": {}}, "distill": {
                             "levels": 0, "distill": {"method": "moments", "ipc": 2, "iterations": 3, "batch_real": 16,
                                                      "model": {"name": "lenet"}},
                             "distill_eval": {"model": {"name": "lenet"}, "epochs": 2, "seeds": [0]}}}})
    ctx = StageContext(store=Store(tmp_path / "store"), device=torch.device("cpu"))
    jobs = sweep_jobs(sweep.trials)
    assert "method=imp_last,level=1,weight_norm" in [job.label for job in jobs]
    write_record(ctx.store, sweep)
    for job in jobs:
        for spec in job.specs:
            run_stage(spec, ctx)
    rows = results_frame(ctx.store.root, "recipes")
    mine = rows[rows.method == "imp_last"]
    assert sorted(mine.stage.unique()) == ["imp", "weight_norm"] and set(mine.level) == {1}
    norm = mine[mine.stage == "weight_norm"].iloc[0]
    weights = ctx.store.get(mine[mine.stage == "imp"].iloc[0].id).weights("final")
    expected = torch.cat([weights[n].double().flatten() for n in ("1.weight", "3.weight", "5.weight")]).norm()
    assert norm.weight_norm == pytest.approx(float(expected), rel=1e-9)
    distilled = rows[(rows.method == "distill") & (rows.stage == "distill")].iloc[0]
    assert ctx.store.get(distilled.id).metrics["iterations"] == 3
    written = write_report(ctx.store.root, tmp_path / "report", "recipes")
    assert "| imp_last | 1 |" in written["weight_norm"].read_text()
