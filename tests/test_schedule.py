"""Which jobs a sweep's jobs wait for, and the Tune searcher that hands them
out in that order (no Ray cluster needed)."""

from pathlib import Path

import pytest
from ray.tune.search import Searcher

import raylth.api
from raylth.errors import RaylthError
from raylth.sweep.config import load_sweep
from raylth.sweep.jobs import Job, _check_acyclic, reads, sweep_jobs
from raylth.sweep.schedule import DependencyOrder

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def needs_of(name: str) -> dict[str, tuple[str, ...]]:
    return {job.label: job.needs for job in sweep_jobs(load_sweep(SWEEPS / name).trials)}


def test_controls_wait_for_their_own_trunk_and_dense_waits_for_the_trunk_that_contains_it():
    needs = needs_of("quickstart.yaml")
    assert needs == {"seed=0,method=dense": ("seed=0,method=imp",), "seed=0,method=imp": (),
                     "seed=0,method=random_prune": ("seed=0,method=imp",),
                     "seed=1,method=dense": ("seed=1,method=imp",), "seed=1,method=imp": (),
                     "seed=1,method=random_prune": ("seed=1,method=imp",)}


def test_children_wait_for_their_parent_and_the_analysis_for_its_children():
    needs = needs_of("instability_quickstart.yaml")
    trunk = "seed=1,rewind=0it,method=imp"
    assert needs[f"{trunk},level=6,child=0"] == (trunk,)
    assert set(needs[f"{trunk},level=6,lmc"]) == {trunk, f"{trunk},level=6,child=0", f"{trunk},level=6,child=1"}
    # one dense run per seed keeps every rewind point's checkpoint: both trunks of a seed wait for it,
    # then run at once (and at once with other seeds')
    assert needs[trunk] == needs["seed=1,rewind=100it,method=imp"] == ("seed=1,rewind=0it,method=dense",)
    jobs = {job.label: job for job in sweep_jobs(load_sweep(SWEEPS / "instability_quickstart.yaml").trials)}
    dense = jobs["seed=1,rewind=0it,method=dense"]
    assert [str(s.save_at[0]) if s.save_at else "" for s in dense.specs] == ["", "100it"]


def test_tickets_wait_for_the_distilled_trunk_of_their_seed_and_the_shared_distillation():
    needs = needs_of("distilled_pruning_quickstart.yaml")
    assert needs["seed=0,method=distilled_imp,level=3"] == ("seed=0,method=distilled_imp,prepare",)
    # the distilled set does not depend on the seed: seed 1 reads the one seed 0's job makes
    assert set(needs["seed=1,method=distilled_imp,level=3"]) == {"seed=0,method=distilled_imp,prepare",
                                                                 "seed=1,method=distilled_imp,prepare"}


def test_sharpness_splits_the_trials_dense_network_by_each_selected_levels_mask():
    sweep = load_sweep(SWEEPS / "distilled_pruning_quickstart.yaml")
    jobs = {job.label: job for job in sweep_jobs(sweep.trials)}
    dense = jobs["seed=0,method=dense"].specs[0]
    for method in ("imp", "random_prune", "distilled_imp"):
        labels = [label for label in jobs if label.startswith(f"seed=0,method={method},") and "sharpness" in label]
        assert labels == [f"seed=0,method={method},level={level},sharpness" for level in (2, 4, 6, 8)]
        spec = jobs[labels[1]].specs[0]
        assert spec.network == f"{dense.id}:init" and len(spec.masks) == 1
        # the mask is this trial's level-4 network, and the job waits for the job that makes it
        maker = next(job for job in jobs.values() if spec.masks[0] in job.ids and "sharpness" not in job.label)
        assert maker.label in jobs[labels[1]].needs
    # the dense trial's own: the curvature alone, no mask
    assert jobs["seed=0,method=dense,level=0,sharpness"].specs[0].masks == ()


def test_every_shipped_sweep_has_an_order():
    for path in SWEEPS.glob("*.yaml"):
        sweep = raylth.api.load_sweep(path)  # searches too
        if hasattr(sweep, "trials"):
            labels = [job.label for job in sweep_jobs(sweep.trials)]
            assert len(labels) == len(set(labels)), path.name


def test_reads_finds_nested_stages_ids_and_declared_inputs():
    jobs = sweep_jobs(load_sweep(SWEEPS / "instability_quickstart.yaml").trials)
    lmc = next(job for job in jobs if job.label.endswith("level=3,lmc")).specs[0]
    assert reads(lmc) == {lmc.parent} | {child.id for child in lmc.inputs()}
    branch_jobs = sweep_jobs(load_sweep(SWEEPS / "quickstart.yaml").trials)
    branch = next(job for job in branch_jobs if "random_prune" in job.label).specs[2]
    assert branch.trunk.id in reads(branch)


def test_a_cycle_is_refused():
    a, b = Job("a", ()), Job("b", ())
    with pytest.raises(RaylthError, match="jobs need each other"):
        _check_acyclic([a, b], [[1], [0]])


def test_searcher_hands_out_jobs_once_their_needs_finished():
    jobs = [Job("trunk0", ()), Job("control0", (), needs=("trunk0",)), Job("trunk1", ()),
            Job("control1", (), needs=("trunk1", "done-before"))]  # needs outside this run are met
    order = DependencyOrder(jobs)
    assert order.suggest("t1") == {"trial": "trunk0"}
    assert order.suggest("t2") == {"trial": "trunk1"}
    assert order.suggest("t3") is None  # both controls wait
    order.on_trial_complete("t2", result={})
    assert order.suggest("t3") == {"trial": "control1"}
    order.on_trial_complete("t1", result={})
    assert order.suggest("t4") == {"trial": "control0"}
    assert order.suggest("t5") == Searcher.FINISHED


def test_jobs_that_need_a_failed_job_are_skipped_in_turn():
    jobs = [Job("trunk", ()), Job("child", (), needs=("trunk",)), Job("lmc", (), needs=("child",)),
            Job("other", ())]
    order = DependencyOrder(jobs)
    assert order.suggest("t1") == {"trial": "trunk"}
    assert order.suggest("t2") == {"trial": "other"}
    order.on_trial_complete("t1", error=True)
    assert order.suggest("t3") == Searcher.FINISHED
    assert order.skipped == {"child": "trunk", "lmc": "child"}


def test_searcher_state_survives_save_and_restore(tmp_path):
    order = DependencyOrder([Job("a", ()), Job("b", (), needs=("a",))])
    order.suggest("t1")
    order.on_trial_complete("t1", result={})
    order.save(str(tmp_path / "searcher.pkl"))
    restored = DependencyOrder([])
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.suggest("t2") == {"trial": "b"}


def test_jobs_specs_cross_to_ray_as_they_are():
    """Tune's with_parameters and Ray Train's train_loop_config pickle a job's specs: the same specs come back."""
    import cloudpickle

    for path in sorted(SWEEPS.glob("*.yaml")):
        sweep = raylth.api.load_sweep(path)
        if hasattr(sweep, "trials"):
            for job in sweep_jobs(sweep.trials):
                back = cloudpickle.loads(cloudpickle.dumps(job.specs))
                assert back == job.specs and [s.id for s in back] == job.ids, (path.name, job.label)


def test_a_trials_resource_request_holds_no_jobs():
    """Tune unpickles the trainable with its resource request at every trial actor's start: the
    request must not carry the sweep's jobs, or each start costs in proportion to the sweep
    (bench/scaling.py: 1,000 trials went from 0.38 to 0.14 s overhead a job without them)."""
    from ray import cloudpickle

    from raylth.sweep.runner import _trial_resources

    jobs = {job.label: (job.specs, job.trains) for job in sweep_jobs(load_sweep(SWEEPS / "quickstart.yaml").trials)}
    assert _trial_resources(jobs, 1, {"cpu": 1, "gpu": 0}) == {"cpu": 1, "gpu": 0}
    with_train = _trial_resources(jobs, 2, {"cpu": 1, "gpu": 0})
    assert with_train({"trial": "seed=0,method=imp"}) == {"cpu": 0.01, "gpu": 0}  # Ray Train asks for its workers
    pickled = cloudpickle.dumps(with_train)
    assert b"lenet" not in pickled and b"digits" not in pickled  # labels only, no specs
