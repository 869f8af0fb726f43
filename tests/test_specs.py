"""Specs: stable ids, canonical strings without defaults, strict parsing."""

import dataclasses

import pytest

from raylth.errors import SpecError
from raylth.specs import DataSpec, DistillSpec, ImpLevelSpec, ModelSpec, PruneSpec, Seeds, Step, TrainSpec, TrainStageSpec, TrialSpec
from raylth.plugins.methods.controls import BranchSpec


def _lenet_digits_train_stage(**train):
    return TrainStageSpec(data=DataSpec("digits"), model=ModelSpec("lenet"),
                          train=TrainSpec(lr=0.05, duration=Step.parse("20ep"), **train))


# -- pinned ids -------------------------------------------------------------------
# These ids name stored results (artifact folders, results rows). They were
# computed once and must NEVER change: a change silently orphans every stored
# artifact. If one of these fails, fix the code, not the string.
#
# One deliberate change (README, "Ids that changed"): train.last_batch's default
# became keep (a DataLoader's partial batch), which changes what every training
# computes, so every spec holding a TrainSpec got a new id (NEW below). The ids
# stored before are exactly those of last_batch: drop (OLD below): they still
# name the same computation.

DROP = TrainSpec(last_batch="drop")

PINNED = [
    # OLD: unchanged, reached with last_batch: drop
    (lambda: TrainStageSpec(train=DROP), "train_464fab266c311b0c", "{}"),
    (lambda: _lenet_digits_train_stage(last_batch="drop"), "train_8863f8cfea5936dc",
     '{"train":{"duration":"20ep","lr":0.05}}'),
    (lambda: ImpLevelSpec(level=3, train=DROP, prune=PruneSpec(rewind=Step.parse("500it"))),
     "imp_edbe86c0529dc079", '{"level":3,"prune":{"rewind":"500it"}}'),
    (lambda: TrialSpec(train=DROP), "trial_3429e745661dc785", "{}"),
    (lambda: TrialSpec(method="random_prune", levels=5, model=ModelSpec("resnet20"), train=DROP,
                       data=DataSpec("cifar10"), branch_seed=2, seeds=Seeds.all(1)),
     "trial_fd3c05a9faa9ec12",
     '{"branch_seed":2,"data":{"name":"cifar10"},"levels":5,"method":"random_prune",'
     '"model":{"name":"resnet20"},"seeds":{"augment":1,"init":1,"order":1}}'),
    (lambda: BranchSpec(trunk=ImpLevelSpec(train=DROP)), "branch_cf9a95ea5cf000b4", "{}"),
    # NEW: the defaults since last_batch: keep
    (lambda: TrainStageSpec(), "train_0a91327cb4e77fe8", '{"train":{"last_batch":"keep"}}'),
    (lambda: _lenet_digits_train_stage(), "train_066c8c03031e4cf8",
     '{"train":{"duration":"20ep","last_batch":"keep","lr":0.05}}'),
    (lambda: ImpLevelSpec(level=3, prune=PruneSpec(rewind=Step.parse("500it"))), "imp_77683a960c14a43b",
     '{"level":3,"prune":{"rewind":"500it"},"train":{"last_batch":"keep"}}'),
    (lambda: TrialSpec(), "trial_7e13cb82bf9a3f85", '{"train":{"last_batch":"keep"}}'),
    (lambda: BranchSpec(), "branch_97d62c32fd65f501", '{"trunk":{"train":{"last_batch":"keep"}}}'),
    # distill: only zca: true specs changed (zca_space: pixels); zca_space: normalized is the old id
    (lambda: DistillSpec(), "distill_ae8bf7305ca79db7", "{}"),
    (lambda: DistillSpec(zca=True), "distill_4cc38905312bf098", '{"zca":true,"zca_space":"pixels"}'),
]


@pytest.mark.parametrize("build, expected_id, expected_canonical", PINNED)
def test_pinned_ids_never_change(build, expected_id, expected_canonical):
    spec = build()
    assert spec.canonical() == expected_canonical
    assert spec.id == expected_id


def test_ids_distinguish_kinds_and_values():
    ids = {TrainStageSpec().id, ImpLevelSpec().id, BranchSpec().id, TrialSpec().id,
           ImpLevelSpec(level=2).id, _lenet_digits_train_stage().id,
           _lenet_digits_train_stage(momentum=0.8).id,
           TrainStageSpec(seeds=Seeds(order=1)).id}
    assert len(ids) == 8
    assert TrainStageSpec().id.startswith("train_") and ImpLevelSpec().id.startswith("imp_")
    assert BranchSpec().id.startswith("branch_")


# -- canonical strings omit defaults ------------------------------------------------

def test_explicit_defaults_give_the_same_id():
    explicit = TrainStageSpec(
        data=DataSpec(name="digits", path=None, augment=None),
        model=ModelSpec(name="lenet", width=None),
        train=TrainSpec(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=128,
                        duration=Step(30, "ep"), schedule="cosine", warmup=Step(0, "it"), augment=None,
                        last_batch="keep"),
        seeds=Seeds(init=0, order=0, augment=0), save_at=())
    assert explicit.canonical() == '{"train":{"last_batch":"keep"}}'
    assert explicit.id == TrainStageSpec().id

    partly = TrainStageSpec(data=DataSpec("digits"), model=ModelSpec("lenet"),
                            train=TrainSpec(lr=0.05, duration=Step(20, "ep"), momentum=0.9,
                                            optimizer="sgd", last_batch="drop"))
    assert partly.id == "train_8863f8cfea5936dc"
    assert ImpLevelSpec(level=1, prune=PruneSpec(fraction=0.2)).id == ImpLevelSpec().id


def test_canonical_is_independent_of_key_order():
    a = TrialSpec.from_dict({"train": {"lr": 0.05, "duration": "20ep"}, "levels": 3})
    b = TrialSpec.from_dict({"levels": 3, "train": {"duration": "20ep", "lr": 0.05}})
    assert a.canonical() == b.canonical() == '{"levels":3,"train":{"duration":"20ep","last_batch":"keep","lr":0.05}}'
    assert a.id == b.id


def test_adding_a_defaulted_field_keeps_old_ids():
    """Simulate a future version of TrainSpec (and of the stage holding it) with
    one more field that has a default: stored ids must stay valid."""
    NewTrain = dataclasses.make_dataclass(
        "NewTrain", [("label_smoothing", float, dataclasses.field(default=0.0))],
        bases=(TrainSpec,), frozen=True)
    NewStage = dataclasses.make_dataclass(
        "NewStage", [("train", NewTrain, dataclasses.field(default_factory=NewTrain)),
                     ("ema", bool, dataclasses.field(default=False))],
        bases=(TrainStageSpec,), frozen=True)
    assert NewTrain.kind == TrainSpec.kind and NewStage.kind == "train"

    assert NewTrain().id == TrainSpec().id
    assert NewTrain(lr=0.05).id == TrainSpec(lr=0.05).id
    assert NewStage().id == "train_0a91327cb4e77fe8" == TrainStageSpec().id
    new = NewStage(data=DataSpec("digits"), model=ModelSpec("lenet"),
                   train=NewTrain(lr=0.05, duration=Step.parse("20ep"), label_smoothing=0.0, last_batch="drop"))
    assert new.id == "train_8863f8cfea5936dc"
    # parsed from a dict that names the new field at its default: same id too
    parsed = NewStage.from_dict({"train": {"lr": 0.05, "duration": "20ep", "label_smoothing": 0,
                                           "last_batch": "drop"}})
    assert parsed.id == "train_8863f8cfea5936dc"

    # the new field is part of the id once it is not at its default
    changed = NewStage(train=NewTrain(lr=0.05, duration=Step.parse("20ep"), label_smoothing=0.1, last_batch="drop"))
    assert changed.id != "train_8863f8cfea5936dc"
    assert NewStage(ema=True).id != TrainStageSpec().id


@pytest.mark.parametrize("spec", [
    TrainStageSpec(),
    _lenet_digits_train_stage(),
    TrainStageSpec(train=TrainSpec(schedule="multistep", milestones=(Step(2, "ep"), Step(500, "it")),
                                   eval_every=Step(50, "it")),
                   save_at=(Step(100, "it"),)),
    ImpLevelSpec(level=3, prune=PruneSpec(rewind=Step.parse("500it"), ignore=("fc.weight",))),
    BranchSpec(trunk=ImpLevelSpec(level=2, model=ModelSpec("resnet20", width=8)), method="reinit",
               seed=3),
    TrialSpec(method="reinit", levels=4, data=DataSpec("digits", augment=True, train_size=100)),
])
def test_to_dict_round_trips_through_from_dict(spec):
    cls = type(spec)
    full = cls.from_dict(spec.to_dict())           # what spec.yaml stores
    short = cls.from_dict(spec.to_dict(omit_defaults=True))
    assert full == spec and short == spec
    assert full.id == spec.id == short.id
    if cls is not TrialSpec:
        from raylth.stages import STAGES

        assert STAGES[spec.kind].spec is cls


# -- Step ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("500it", Step(500, "it")), ("2ep", Step(2, "ep")), ("0it", Step(0, "it")),
    (0, Step(0, "it")), (" 30ep ", Step(30, "ep")), ("0ep", Step(0, "ep")),
])
def test_step_parse(text, expected):
    step = Step.parse(text)
    assert step == expected
    assert Step.parse(step) is step


def test_step_str_and_zero():
    assert str(Step.parse("500it")) == "500it" and str(Step.parse(0)) == "0it"
    assert Step.parse("0ep").is_zero() and Step.parse(0).is_zero()
    assert not Step.parse("1it").is_zero()


@pytest.mark.parametrize("bad", ["", "abc", "5", "2 epochs", "-1it", "1.5ep", "ep", "3it4",
                                 "500 iterations", 5, 1.5, True, None, [1]])
def test_step_parse_rejects(bad):
    with pytest.raises(SpecError, match=r"train\.duration"):
        Step.parse(bad, "train.duration")


def test_step_invalid_unit_or_negative():
    with pytest.raises(SpecError):
        Step(3, "epochs")
    with pytest.raises(SpecError):
        Step(-1, "it")


def test_step_iterations():
    assert Step.parse("2ep").iterations(19) == 38
    assert Step.parse("500it").iterations(19) == 500
    assert Step.parse("0ep").iterations(19) == 0
    assert Step.parse(0).iterations(7) == 0
    assert Step.parse("3ep").iterations(1) == 3


# -- from_dict errors -----------------------------------------------------------------

def _error(cls, data) -> str:
    with pytest.raises(SpecError) as info:
        cls.from_dict(data)
    return str(info.value)


def test_unknown_key_names_its_path():
    msg = _error(TrialSpec, {"train": {"lrr": 0.1}})
    assert msg.startswith("train.lrr:") and "unknown key" in msg and "lr" in msg
    assert _error(TrainStageSpec, {"bogus": 1}).startswith("bogus:")
    assert _error(BranchSpec, {"trunk": {"prune": {"fractoin": 0.1}}}).startswith(
        "trunk.prune.fractoin:")
    assert _error(TrainSpec, {"lrr": 0.1}).startswith("train.lrr:")


@pytest.mark.parametrize("data, path", [
    ({"train": {"batch_size": "big"}}, "train.batch_size"),
    ({"train": {"batch_size": 64.0}}, "train.batch_size"),
    ({"train": {"nesterov": "yes"}}, "train.nesterov"),
    ({"train": {"lr": "abc"}}, "train.lr"),
    ({"train": {"lr": True}}, "train.lr"),
    ({"model": {"width": "x"}}, "model.width"),
    ({"model": {"name": 3}}, "model.name"),
    ({"levels": "3"}, "levels"),
    ({"seeds": 3}, "seeds"),
    ({"train": {"duration": "2 epochs"}}, "train.duration"),
    ({"train": {"milestones": ["1ep", "x"]}}, "train.milestones[1]"),
])
def test_wrong_type_names_its_path(data, path):
    assert _error(TrialSpec, data).startswith(f"{path}:")


def test_bad_choice():
    msg = _error(TrialSpec, {"train": {"schedule": "linear"}})
    assert "train.schedule" in msg and "linear" in msg and "cosine" in msg
    assert "train.optimizer" in _error(TrainSpec, {"optimizer": "rmsprop"})
    assert "method" in _error(BranchSpec, {"method": "shuffle"})


@pytest.mark.parametrize("fraction", [1.5, 0, 0.0, 1, -0.2])
def test_impossible_prune_fraction(fraction):
    assert "prune.fraction" in _error(TrialSpec, {"prune": {"fraction": fraction}})
    with pytest.raises(SpecError, match=r"prune\.fraction"):
        PruneSpec(fraction=fraction)


@pytest.mark.parametrize("data, field", [
    ({"train": {"lr": 0}}, "train.lr"),
    ({"train": {"duration": "0it"}}, "train.duration"),
    ({"train": {"momentum": 1.0}}, "train.momentum"),
    ({"train": {"schedule": "step"}}, "train.step_size"),
    ({"train": {"schedule": "multistep"}}, "train.milestones"),
    ({"levels": -1}, "levels"),
])
def test_impossible_values_name_the_field(data, field):
    assert field in _error(TrialSpec, data)


def test_imp_level_rules():
    with pytest.raises(SpecError, match="level"):
        ImpLevelSpec(level=0)
    with pytest.raises(SpecError, match=r"prune\.rewind"):
        ImpLevelSpec(train=TrainSpec(duration=Step(2, "ep")), prune=PruneSpec(rewind=Step(2, "ep")))
    with pytest.raises(SpecError, match="save_at"):
        TrainStageSpec(train=TrainSpec(duration=Step(2, "ep")), save_at=(Step(3, "ep"),))


def test_yaml_style_string_floats_are_numbers():
    spec = TrainSpec.from_dict({"weight_decay": "5e-4", "lr": "1e-2", "gamma": "0.5"})
    assert spec.weight_decay == 5e-4 and isinstance(spec.weight_decay, float)
    assert spec.lr == 0.01 and spec.gamma == 0.5
    # 5e-4 is the default, so it does not appear in the canonical string
    assert spec.canonical() == '{"gamma":0.5,"last_batch":"keep","lr":0.01}'
    assert TrainSpec.from_dict({"weight_decay": "5e-4"}).id == TrainSpec().id
    # integers for float fields become floats: same id as the float spelling
    assert TrainSpec.from_dict({"lr": 1}).id == TrainSpec.from_dict({"lr": 1.0}).id
    assert isinstance(TrainSpec.from_dict({"lr": 1}).lr, float)


def test_parsing_builds_nested_specs_and_steps():
    trial = TrialSpec.from_dict({
        "method": "imp", "levels": 2,
        "train": {"schedule": "multistep", "milestones": ["1ep", "30it"], "duration": "2ep"},
        "prune": {"rewind": "10it", "ignore": "fc.weight"},
        "model": {"name": "lenet", "width": None},
    })
    assert trial.train.milestones == (Step(1, "ep"), Step(30, "it"))
    assert trial.train.duration == Step(2, "ep")
    assert trial.prune.rewind == Step(10, "it")
    assert trial.prune.ignore == ("fc.weight",)  # a single string becomes a 1-tuple
    assert trial.model == ModelSpec("lenet")
    assert TrialSpec.from_dict(None) == TrialSpec()


def test_imp_level_trunk_root():
    spec = ImpLevelSpec(level=3, train=TrainSpec(duration=Step(2, "ep")),
                        prune=PruneSpec(rewind=Step(10, "it")))
    root = spec.trunk_root()
    assert isinstance(root, TrainStageSpec)
    assert root.save_at == (Step(10, "it"),) and root.train == spec.train
    assert ImpLevelSpec(train=TrainSpec(duration=Step(2, "ep"))).trunk_root() == TrainStageSpec(
        train=TrainSpec(duration=Step(2, "ep")))
    # levels of one trunk share its root
    assert spec.at_level(1).trunk_root().id == root.id
    assert spec.at_level(5).level == 5 and spec.at_level(5).id != spec.id


def test_dicts_stored_before_id_defaults_read_back_as_they_were_written():
    """An artifact's stored spec (a full to_dict) and an old sweep record
    (defaults omitted) lack last_batch / zca_space: they meant drop /
    normalized, and from_stored reads them so, with their old ids."""
    old_artifact = {k: v for k, v in TrainStageSpec(train=DROP).to_dict().items()}
    del old_artifact["train"]["last_batch"]
    assert TrainStageSpec.from_stored(old_artifact).id == "train_464fab266c311b0c"
    assert TrainStageSpec.from_dict(old_artifact).id == TrainStageSpec().id  # what from_dict would misread
    assert TrialSpec.from_stored({"method": "random_prune", "levels": 5, "model": {"name": "resnet20"},
                                  "data": {"name": "cifar10"}, "branch_seed": 2,
                                  "seeds": {"augment": 1, "init": 1, "order": 1}}).id == "trial_fd3c05a9faa9ec12"
    assert DistillSpec.from_stored({"zca": True}).id == DistillSpec(zca=True, zca_space="normalized").id
    new = TrialSpec.from_dict({"method": "distilled_imp", "distill": {"method": "dm"}, "inner": {"lr": 0.1},
                               "train": {"augment": {"name": "dsa"}}})
    assert TrialSpec.from_stored(new.to_dict()) == new  # a dict written now reads back unchanged
    assert DistillSpec().to_dict(omit_defaults=True) == {}  # zca_space means nothing without zca


def test_old_sweep_records_keep_their_trials_ids(tmp_path):
    import yaml

    from raylth.store import Store
    from raylth.sweep.config import parse_sweep
    from raylth.sweep.plan import read_record, write_record

    store = Store(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "old.yaml").write_text(yaml.safe_dump(
        {"name": "old", "trials": [{"label": "base", "spec": {}}]}))  # written before record formats
    assert [t.spec.id for t in read_record(store, "old")] == ["trial_3429e745661dc785"]
    write_record(store, parse_sweep({"base": {"levels": 2}}, default_name="old"))
    ids = {t.spec.id for t in read_record(store, "old")}
    assert "trial_3429e745661dc785" in ids and TrialSpec(levels=2).id in ids
