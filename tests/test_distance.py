"""The weight-distance analysis (a plugin of CONTRIBUTING.md's "An
analysis": raylth/plugins/analyses/distance.py): its stage, its trial block,
its report."""

import pytest
import torch

from raylth.reporting import results_frame, write_report
from raylth.specs import DataSpec, ImpLevelSpec, ModelSpec, PruneSpec, Step, TrainSpec
from raylth.plugins.analyses.distance import DistanceSpec
from raylth.stages import StageContext, run_stage
from raylth.store import Store
from raylth.sweep.config import parse_sweep
from raylth.sweep.jobs import sweep_jobs
from raylth.sweep.plan import write_record

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = TrainSpec(lr=0.05, batch_size=64, duration=Step(1, "ep"))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return StageContext(store=Store(tmp_path_factory.mktemp("distance")), device=torch.device("cpu"))


def test_the_distance_of_two_children_layer_by_layer(ctx):
    ticket = run_stage(ImpLevelSpec(data=DataSpec("digits"), model=ModelSpec("lenet"), train=TRAIN, level=1,
                                    prune=PruneSpec(rewind=Step(5, "it"))), ctx)
    spec = DistanceSpec(parent=ticket.id, spawn=Step(5, "it"), noise="order")
    result = run_stage(spec, ctx)
    a, b = (ctx.store.get(i).weights("final") for i in result.metrics["children"])
    for name in ("1.weight", "3.weight", "5.weight"):
        expected = float((a[name].double() - b[name].double()).norm() / a[name].double().norm())
        assert result.metrics["layers"][name] == pytest.approx(expected, rel=1e-12) and expected > 0
    assert set(result.metrics["layers"]) == {"1.weight", "3.weight", "5.weight"}
    same = run_stage(DistanceSpec(parent=ticket.id, spawn=Step(5, "it"), noise="none"), ctx)
    assert same.metrics["distance"] == 0.0  # no SGD noise: identical children


def test_a_distance_block_adds_its_jobs_rows_and_report(ctx, tmp_path):
    sweep = parse_sweep({"name": "dist", "grid": {"method": ["imp"]}, "base": {
        "levels": 1, "data": {"name": "digits"}, "model": {"name": "lenet"},
        "train": {"lr": 0.05, "batch_size": 64, "duration": "1ep"}, "prune": {"rewind": "5it"},
        "distance": {"noise": "order"}}})
    jobs = sweep_jobs(sweep.trials)
    assert [j.label for j in jobs if "distance" in j.label] == ["method=imp,level=0,distance",
                                                                 "method=imp,level=1,distance"]
    write_record(ctx.store, sweep)
    for job in jobs:
        for spec in job.specs:
            run_stage(spec, ctx)
    rows = results_frame(ctx.store.root, "dist")
    row = rows[(rows.stage == "distance") & (rows.level == 1)].iloc[0]
    assert row.method == "imp" and row.level == 1 and row.rewind == "5it" and row.noise == "order"
    written = write_report(ctx.store.root, tmp_path / "report", "dist")
    assert "| dist | digits | lenet | imp | 1 |" in written["distance"].read_text()
    assert any(k.startswith("plot:distance_vs_sparsity") for k in written)
