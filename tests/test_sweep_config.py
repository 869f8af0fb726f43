"""Sweep files: expansion, shorthands and every bad input failing with one clear line."""

from pathlib import Path

import pytest
import yaml

import raylth

from raylth.errors import RaylthError, SpecError
from raylth.specs import AugmentSpec
from raylth.sweep.config import load_sweep, parse_sweep
from raylth.sweep.plan import check_trials

REPO = Path(__file__).resolve().parents[1]


def sweep(**changes):
    raw = {"name": "t", "base": {"levels": 2, "data": {"name": "digits"}, "model": {"name": "lenet"},
                                 "train": {"duration": "2ep"}},
           "grid": {"seed": [0, 1], "method": ["dense", "imp"]}}
    for key, value in changes.items():
        raw[key] = value
    return raw


def test_grid_is_cartesian_product_with_readable_labels():
    s = parse_sweep(sweep())
    assert [t.label for t in s.trials] == ["seed=0,method=dense", "seed=0,method=imp",
                                           "seed=1,method=dense", "seed=1,method=imp"]
    assert s.trials[2].spec.seeds.init == s.trials[2].spec.seeds.order == s.trials[2].spec.seeds.augment == 1
    assert s.trials[1].spec.method == "imp" and s.trials[1].spec.levels == 2


def test_dotted_and_shorthand_grid_keys():
    s = parse_sweep(sweep(grid={"train.lr": [0.1, 0.01], "rewind": ["0it", "1ep"], "seeds.order": [3]}))
    assert len(s.trials) == 4
    assert {t.spec.train.lr for t in s.trials} == {0.1, 0.01}
    assert {str(t.spec.prune.rewind) for t in s.trials} == {"0it", "1ep"}
    assert {t.spec.seeds.order for t in s.trials} == {3}


def test_shipped_sweeps_parse_and_check():
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        s = raylth.api.load_sweep(path)  # searches too
        assert s.trials, path
        if all(t.spec.data.name == "digits" for t in s.trials):
            check_trials(s, Path("unused"))


@pytest.mark.parametrize("raw, needle", [
    (sweep(grdi={"seed": [0]}), "'grdi' (did you mean 'grid'?)"),
    (sweep(base={"trian": {"lr": 0.1}}), "trian: unknown key (did you mean 'train'?)"),
    (sweep(base={"train": {"lrr": 0.1}}), "train.lrr: unknown key (did you mean 'lr'?)"),
    (sweep(base={"prune": {"fraction": 1.5}}), "prune.fraction"),
    (sweep(base={"train": {"duration": "ten epochs"}}), "train.duration"),
    (sweep(grid={"seed": []}), "grid.seed"),
    (sweep(grid={"seed": 3}), "grid.seed"),
    (sweep(resources={"gpus": 1}), "resources.gpus"),
    (sweep(resources={"gpu": -1}), "resources.gpu"),
    (sweep(max_failures=-1), "max_failures"),
    (sweep(base={"levels": 2, "lmc": {"levels": [3]}}), "lmc.levels: 3 is not a level of this trial (0..2)"),
    (sweep(base={"levels": 2, "sharpness": {"levels": [4]}}), "sharpness.levels: 4 is not a level"),
    (sweep(name="a b"), "name"),
])
def test_bad_sweeps_name_the_field(raw, needle):
    with pytest.raises(SpecError) as err:
        parse_sweep(raw)
    message = str(err.value)
    assert needle in message and "\n" not in message


@pytest.mark.parametrize("base, needle", [
    ({"model": {"name": "resnet_18"}}, "model.name: unknown model 'resnet_18' (did you mean 'resnet18'?)"),
    ({"method": "lottery"}, "method: unknown method 'lottery'; known methods are"),  # nothing close
    ({"data": {"name": "mnist"}}, "data.name: unknown data set 'mnist'"),
    ({"prune": {"strategy": "smallest"}}, "prune.strategy: unknown strategy 'smallest'"),
])
def test_unknown_names_fail_before_any_work(base, needle, tmp_path):
    s = parse_sweep({"base": {"levels": 1, **base}})
    with pytest.raises(SpecError) as err:
        check_trials(s, tmp_path)
    assert needle in str(err.value)


def test_missing_cifar_offline_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYLTH_OFFLINE", "1")
    s = parse_sweep({"base": {"data": {"name": "cifar10"}, "model": {"name": "resnet20"}}})
    with pytest.raises(RaylthError) as err:
        check_trials(s, tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in str(err.value)
    assert "download" in str(err.value)


def test_missing_and_broken_sweep_files(tmp_path):
    with pytest.raises(RaylthError, match="no such sweep file"):
        load_sweep(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: {data: [\n")
    with pytest.raises(RaylthError, match="not valid YAML"):
        load_sweep(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(SpecError, match="a sweep is a mapping"):
        load_sweep(listy)


@pytest.mark.parametrize("changes, needle", [
    ({"prune": {"rewind": "100it"}, "train": {"duration": "2ep"}}, "prune.rewind: 100it is iteration 100"),
    ({"train": {"duration": "2ep", "schedule": "multistep", "milestones": ["1ep", "500it"]}},
     "train.milestones[1]"),
])
def test_steps_past_the_end_of_training_fail_up_front(changes, needle, tmp_path):
    s = parse_sweep({"base": {"levels": 1, **changes}})  # batch 128: 1258 digits = 9 steps/epoch
    with pytest.raises(SpecError) as err:
        check_trials(s, tmp_path)
    assert needle in str(err.value) and "2ep = 20 iterations" in str(err.value)


def test_a_job_larger_than_a_local_cluster_fails_instead_of_waiting(caplog):
    from raylth.sweep.runner import _check_fits

    s = parse_sweep({"workers": 2, "resources": {"cpu": 1}, "base": {"levels": 1}})
    with pytest.raises(RaylthError, match=r"one job needs 2.01 CPU .* the Ray cluster has 2 CPU"):
        _check_fits(s, {"CPU": 2.0}, started_here=True)
    _check_fits(s, {"CPU": 2.0}, started_here=False)  # an autoscaling cluster may grow: a warning
    assert "waiting for the autoscaler" in caplog.text
    _check_fits(parse_sweep({"workers": 2, "resources": {"cpu": 0.5}, "base": {"levels": 1}}), {"CPU": 2.0}, True)
    with pytest.raises(RaylthError, match="1 GPU"):
        _check_fits(parse_sweep({"resources": {"gpu": 1}, "base": {"levels": 1}}), {"CPU": 2.0}, True)
    # enough in total, but no one node holds a worker: one line (a warning on a cluster we joined)
    nodes = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    wide = parse_sweep({"resources": {"cpu": 6, "gpu": 1}, "base": {"levels": 1}})
    with pytest.raises(RaylthError, match=r"fit no node of the Ray cluster \(the largest has 4 CPU and 1 GPU\)"):
        _check_fits(wide, {"CPU": 8.0, "GPU": 2.0}, True, nodes)
    caplog.clear()
    _check_fits(wide, {"CPU": 8.0, "GPU": 2.0}, False, nodes)
    assert "fit no node" in caplog.text and "\n" not in caplog.records[-1].getMessage()
    _check_fits(parse_sweep({"resources": {"cpu": 2, "gpu": 0.5}, "base": {"levels": 1}}),
                {"CPU": 8.0, "GPU": 2.0}, True, nodes)


def test_distillation_inputs_that_need_the_data_fail_before_the_sweep(tmp_path):
    base = {"levels": 2, "data": {"name": "digits"}, "model": {"name": "lenet"},
            "inner": {"lr": 0.02, "batch_size": 1, "duration": "1ep"}}
    too_many = parse_sweep({"base": {**base, "method": "distilled_imp",
                                     "distill": {"method": "dm", "ipc": 1000, "model": {"name": "lenet"}}}})
    with pytest.raises(SpecError, match=r"\[base\]: distill.ipc") as err:
        check_trials(too_many, tmp_path)
    assert "\n" not in str(err.value)
    missing = parse_sweep({"base": {**base, "method": "distill",
                                    "distill": {"method": "import", "path": str(tmp_path / "nope.pt"), "ipc": 1}}})
    with pytest.raises(RaylthError, match="nope.pt"):
        check_trials(missing, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_sharpness_brings_the_dense_network_it_splits(tmp_path):
    """A sweep without a dense or imp trial: the Hessian job trains the dense network itself."""
    from raylth.sweep.jobs import sweep_jobs

    raw = {"name": "s", "base": {"levels": 2, "data": {"name": "digits"}, "model": {"name": "lenet"},
                                 "sharpness": {"levels": [2]}},
           "grid": {"method": ["random_prune"]}}
    jobs = {job.label: job for job in sweep_jobs(parse_sweep(raw).trials)}
    hessian = jobs["method=random_prune,hessian"]
    assert [s.kind for s in hessian.specs] == ["train", "hessian"]
    split = jobs["method=random_prune,level=2,sharpness"].specs[0]
    assert split.network == f"{hessian.specs[0].id}:init" and hessian.label in jobs[
        "method=random_prune,level=2,sharpness"].needs
    with pytest.raises(SpecError, match="sharpness.probes: 0 must be >= 1"):
        parse_sweep({"base": {"sharpness": {"probes": 0}}})


def test_storage_and_data_root_precedence(tmp_path, monkeypatch):
    from raylth.sweep.paths import resolve_paths

    sweep = parse_sweep({"storage": str(tmp_path / "s"), "data_root": str(tmp_path / "in-file"),
                         "base": {"levels": 1}}, "p", "p")
    monkeypatch.delenv("RAYLTH_DATA", raising=False)
    assert resolve_paths(sweep) == (tmp_path / "s", tmp_path / "in-file")
    monkeypatch.setenv("RAYLTH_DATA", str(tmp_path / "env"))
    assert resolve_paths(sweep)[1] == tmp_path / "env"  # $RAYLTH_DATA overrides the file
    assert resolve_paths(sweep, data_root=tmp_path / "flag")[1] == tmp_path / "flag"  # --data-root overrides both
    assert resolve_paths(sweep, storage="s3://b/p?region=x")[0] == "s3://b/p?region=x"  # a URI is kept as given


def test_the_paper_sweep_is_the_papers_recipe_with_imp_rewinding():
    path = REPO / "sweeps" / "paper_resnet18_cifar10.yaml"
    sweep = load_sweep(path)
    by_method = {t.spec.method: t.spec for t in sweep.trials if t.spec.seeds.init == 0}
    assert set(by_method) == {"dense", "imp", "random_prune", "distilled_imp", "distilled_random", "mask_then_imp",
                              "distill"}
    assert str(by_method["imp"].prune.rewind) == "2000it" and str(by_method["random_prune"].prune.rewind) == "2000it"
    assert by_method["distilled_imp"].prune.rewind.is_zero()  # distilled IMP: rewound to init
    spec = by_method["distilled_imp"]
    paper_augment = AugmentSpec(name="dsa", ops="color_crop_flip_scale_rotate", mode="idc", cutmix=0.5)
    for train, epochs in ((spec.train, 300), (spec.inner, 1000)):
        assert (train.optimizer, train.lr, train.momentum, train.weight_decay, train.batch_size) == (
            "sgd", 0.01, 0.9, 5e-4, 64)
        assert str(train.duration) == f"{epochs}ep" and train.schedule == "multistep" and train.gamma == 0.2
        assert [m.amount for m in train.milestones] == [2 * epochs // 3, 5 * epochs // 6]
        assert train.augment == paper_augment and train.last_batch == "keep"
    assert spec.model.name == "resnet18_idc" and spec.prune.fraction == 0.2 and spec.levels == 10
    assert (spec.distill.method, spec.distill.factor, spec.distill.ipc, spec.distill.zca) == ("idc", 2, 10, False)
    assert spec.prune.rewind_bn is False and spec.data.norm == "dc" and sweep.precision == "float32"
    header = path.read_text().split("\nname:")[0]
    assert "GPU-hours" in header and "FLOP-derived" in header


def test_per_method_blocks_are_merged_under_the_grid_and_checked():
    raw = {"base": {"levels": 1, "prune": {"fraction": 0.3}, "train": {"lr": 0.1}},
           "per_method": {"imp": {"prune": {"rewind": "10it"}, "train": {"lr": 0.2}}},
           "grid": {"method": ["dense", "imp"], "train.lr": [0.05]}}
    trials = {t.spec.method: t.spec for t in parse_sweep(raw).trials}
    assert str(trials["imp"].prune.rewind) == "10it" and trials["imp"].prune.fraction == 0.3
    assert trials["dense"].prune.rewind.is_zero()
    assert trials["imp"].train.lr == 0.05  # the grid wins
    with pytest.raises(SpecError, match="per_method.imq: unknown key.*did you mean 'imp'"):
        parse_sweep(dict(raw, per_method={"imq": {}}))
    with pytest.raises(SpecError, match="per_method.imp: must be a mapping of trial fields"):
        parse_sweep(dict(raw, per_method={"imp": {"method": "dense"}}))


def test_precision_is_a_sweep_setting_that_reaches_every_stage(tmp_path, monkeypatch):
    """precision: float32 trains as the references do, even where the fast path
    (bf16, here forced on CPU) would be the default; a wrong value is one line."""
    from raylth.specs import DataSpec, ModelSpec, Step, TrainSpec, TrainStageSpec
    from raylth.store import Store
    from raylth.sweep.runner import run_specs_here

    assert parse_sweep(sweep()).precision == "auto"
    assert parse_sweep(sweep(precision="float32")).precision == "float32"
    with pytest.raises(SpecError, match=r"^sweep: precision: 'fp32' is not one of auto, float32, bf16"):
        parse_sweep(sweep(precision="fp32"))
    monkeypatch.setenv("RAYLTH_FAST_PATH", "1")
    spec = TrainStageSpec(data=DataSpec("digits"), model=ModelSpec("lenet", 16),
                          train=TrainSpec(batch_size=256, duration=Step(2, "it")))
    for fast, expected in ((False, "float32"), (None, "bf16")):
        store = tmp_path / str(fast)
        [done] = run_specs_here([spec], store, tmp_path / "data", fast=fast)
        assert Store(store).get(done).metrics["precision"] == expected
