"""Stages: train / IMP level / branch artifacts, reuse, and resumption after a crash.

CPU only: LeNet on digits, 2-4 epochs of 20 steps (batch 64: 19 full and one of 42)."""

import pytest
import torch

from raylth.engine.masks import counts, full_mask, sparsity
from raylth.engine.models import build_model
from raylth.specs import DataSpec, ImpLevelSpec, ModelSpec, PruneSpec, Seeds, Step, TrainSpec, TrainStageSpec
from raylth.plugins.methods.controls import BranchSpec
from raylth.stages import StageContext, run_stage
from raylth.stages import context as context_module
from raylth.stages.context import Trainer
from raylth.store import Partial, Store

pytestmark = pytest.mark.usefixtures("fast_path")  # the stage suite, in both modes (conftest)

CPU = torch.device("cpu")
TRAIN = TrainSpec(lr=0.05, batch_size=64, duration=Step(2, "ep"))
DATA, MODEL = DataSpec("digits"), ModelSpec("lenet")
N_WEIGHTS = 300 * 64 + 100 * 300 + 10 * 100  # 50200 prunable LeNet weights on 8x8 digits


def _ctx(root):
    return StageContext(store=Store(root), data_root=root / "data", device=CPU)


def _imp(level=1, train=TRAIN, **prune):
    return ImpLevelSpec(data=DATA, model=MODEL, train=train, prune=PruneSpec(**prune), level=level)


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def count_steps(monkeypatch):
    """Counts Trainer._train_step calls (the number of SGD updates done)."""
    calls = []
    original = Trainer._train_step

    def step(self, batch):
        calls.append(self.step)
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_train_step", step)
    return calls


def test_dense_runs_that_differ_only_in_their_checkpoints_train_once(tmp_path, count_steps):
    """Siblings (the same run, other save_at) in one job come from one
    training, each artifact with its own checkpoints, equal to a run alone."""
    k0, k5 = (TrainStageSpec(data=DATA, model=MODEL, train=TRAIN, save_at=keep) for keep in ((), (Step(5, "it"),)))
    ctx = StageContext(store=Store(tmp_path / "together"), data_root=tmp_path / "data", device=CPU, planned=(k0, k5))
    first, second = run_stage(k0, ctx), run_stage(k5, ctx)
    assert len(count_steps) == 40  # one run of 40 steps for both
    assert second.metrics["trained_as"] == first.id and second.has_file("weights/step_5it.pt")
    alone = run_stage(k5, _ctx(tmp_path / "alone"))
    for name in ("init", "step_5it", "final"):
        assert _same(second.weights(name), alone.weights(name)), name


def test_siblings_naming_one_iteration_in_two_units_each_keep_their_checkpoint(tmp_path, count_steps):
    """1ep and 20it are the same iteration at batch 64 on digits (20 steps an
    epoch): the one run stores it under both names, each artifact its own."""
    by_epoch, by_step = (TrainStageSpec(data=DATA, model=MODEL, train=TRAIN, save_at=(Step.parse(k),))
                         for k in ("1ep", "20it"))
    ctx = StageContext(store=Store(tmp_path), data_root=tmp_path / "data", device=CPU, planned=(by_epoch, by_step))
    first, second = run_stage(by_epoch, ctx), run_stage(by_step, ctx)
    assert len(count_steps) == 40 and first.metrics["steps_per_epoch"] == 20
    assert first.has_file("weights/step_1ep.pt") and second.has_file("weights/step_20it.pt")
    assert _same(first.weights("step_1ep"), second.weights("step_20it"))


def test_train_stage_is_computed_once(tmp_path, monkeypatch, count_steps):
    spec = TrainStageSpec(data=DATA, model=MODEL, train=TRAIN)
    ctx = _ctx(tmp_path)
    first = run_stage(spec, ctx)
    assert len(count_steps) == 40
    assert first.id == spec.id and first.path == tmp_path / spec.id
    assert first.metrics["steps"] == 40 and first.metrics["level"] == 0
    assert first.metrics["sparsity"] == 0.0 and 0.8 < first.metrics["test_acc"] <= 1.0
    # digits tests on 539 images: a quarter of 2 x 1,258 training points affords one evaluation
    assert [h["step"] for h in first.metrics["history"]] == [40]
    assert first.metrics["test_acc"] == first.metrics["history"][-1]["test_acc"]
    assert first.has_file("weights/init.pt") and first.has_file("weights/final.pt")
    assert first.mask() is None
    init = build_model(MODEL, (1, 8, 8), 10, seed=0).state_dict()
    assert _same(first.weights("init"), init)
    assert not _same(first.weights("final"), init)

    def boom(self, *args, **kwargs):
        raise AssertionError("a stored stage was trained again")

    monkeypatch.setattr(context_module.Trainer, "run", boom)
    for again_ctx in (ctx, _ctx(tmp_path)):  # same process and a fresh context
        again = run_stage(spec, again_ctx)
        assert again.path == first.path and again.metrics == first.metrics
    assert len(count_steps) == 40


def test_imp_levels_build_on_each_other(tmp_path, count_steps):
    ctx = _ctx(tmp_path)
    level2 = _imp(level=2)
    art2 = run_stage(level2, ctx)
    root_id, level1_id = level2.trunk_root().id, level2.at_level(1).id
    assert len(count_steps) == 3 * 40
    assert ctx.store.get(root_id) is not None and ctx.store.get(level1_id) is not None
    assert sorted(a.id for a in ctx.store.artifacts()) == sorted([root_id, level1_id, level2.id])
    art1 = ctx.store.get(level1_id)
    root = ctx.store.get(root_id)

    # level 3 reuses levels 0-2: it trains once more
    art3 = run_stage(_imp(level=3), ctx)
    assert len(count_steps) == 4 * 40

    masks = {1: art1.mask(), 2: art2.mask(), 3: art3.mask()}
    full = full_mask(build_model(MODEL, (1, 8, 8), 10, seed=0))
    assert set(masks[1]) == set(full)
    kept = {1: 40160, 2: 32128, 3: 25702}  # 50200 * 0.8 per level, rounded each time
    for level, mask in masks.items():
        assert sum(counts(mask).values()) == kept[level]
        assert abs(sparsity(mask) - (1 - 0.8 ** level)) < level / N_WEIGHTS
        art = {1: art1, 2: art2, 3: art3}[level]
        assert art.metrics["sparsity"] == sparsity(mask) and art.metrics["level"] == level
        assert art.metrics["steps"] == 40
        final = art.weights("final")
        for n, m in mask.items():
            assert bool((final[n][~m] == 0).all()) and bool((final[n][m] != 0).all())
    for level in (2, 3):  # each level prunes only what the previous one kept
        for n in full:
            assert not bool((masks[level][n] & ~masks[level - 1][n]).any())

    # level 1 prunes the dense run's smallest final weights (global magnitude)
    dense_final = root.weights("final")
    kept_min = min(float(dense_final[n][m].abs().min()) for n, m in masks[1].items())
    pruned_max = max(float(dense_final[n][~m].abs().max()) for n, m in masks[1].items())
    assert pruned_max <= kept_min


def test_ticket_starts_from_init_times_mask(tmp_path):
    ctx = _ctx(tmp_path)
    spec = _imp(level=2)
    ticket = run_stage(spec, ctx)
    root = ctx.store.get(spec.trunk_root().id)
    init, start, mask = root.weights("init"), ticket.weights("init"), ticket.mask()
    assert start.keys() == init.keys()
    for name in init:
        if name in mask:
            assert torch.equal(start[name], init[name] * mask[name]), name
        else:  # biases rewind to init too
            assert torch.equal(start[name], init[name]), name
    assert not _same(ticket.weights("final"), start)


def test_late_rewinding_starts_from_the_rewind_step(tmp_path, count_steps):
    ctx = _ctx(tmp_path)
    spec = _imp(level=1, rewind=Step(10, "it"))
    ticket = run_stage(spec, ctx)
    root = ctx.store.get(spec.trunk_root().id)
    assert spec.trunk_root().save_at == (Step(10, "it"),)
    assert root.has_file("weights/step_10it.pt")
    rewind, start, mask = root.weights("step_10it"), ticket.weights("step_10it"), ticket.mask()
    assert not _same(rewind, root.weights("init"))
    for name in rewind:
        expected = rewind[name] * mask[name] if name in mask else rewind[name]
        assert torch.equal(start[name], expected), name
    assert ticket.metrics["steps"] == 40 - 10
    assert len(count_steps) == 40 + 30
    assert count_steps[40] == 10  # the ticket's first update is step 10 of the schedule


def test_random_prune_branch(tmp_path):
    ctx = _ctx(tmp_path)
    trunk = _imp(level=2)
    branch = run_stage(BranchSpec(trunk=trunk, method="random_prune", seed=0), ctx)
    ticket = ctx.store.get(trunk.id)
    root = ctx.store.get(trunk.trunk_root().id)
    imp_mask, mask = ticket.mask(), branch.mask()
    assert counts(mask) == counts(imp_mask)
    assert all(not torch.equal(mask[n], imp_mask[n]) for n in mask)
    assert branch.metrics["sparsity"] == ticket.metrics["sparsity"]
    assert branch.metrics["level"] == 2
    init, start = root.weights("init"), branch.weights("init")
    for name in init:  # same init as the trunk, under the random mask
        expected = init[name] * mask[name] if name in mask else init[name]
        assert torch.equal(start[name], expected), name
    final = branch.weights("final")
    for n, m in mask.items():
        assert bool((final[n][~m] == 0).all())
    # another seed draws another mask
    other = run_stage(BranchSpec(trunk=trunk, method="random_prune", seed=1), ctx)
    assert other.id != branch.id
    assert any(not torch.equal(other.mask()[n], mask[n]) for n in mask)


def test_reinit_branch(tmp_path):
    ctx = _ctx(tmp_path)
    trunk = _imp(level=1)
    branch = run_stage(BranchSpec(trunk=trunk, method="reinit"), ctx)
    ticket = ctx.store.get(trunk.id)
    root = ctx.store.get(trunk.trunk_root().id)
    mask = branch.mask()
    assert _same(mask, ticket.mask())
    init, start = root.weights("init"), branch.weights("init")
    for name in init:
        assert not torch.equal(start[name], init[name]), name  # a fresh draw everywhere
        if name in mask:
            m = mask[name]
            assert bool((start[name][~m] == 0).all())
            assert not torch.equal(start[name][m], init[name][m])
    assert branch.metrics["steps"] == 40


class _Killed(RuntimeError):
    pass


def _kill_after_second_resume_save(monkeypatch):
    """Make Partial.save crash the run right after it wrote resume.pt for the second time."""
    original = Partial.save
    saves = []

    def save(self, name, obj):
        original(self, name, obj)
        if name == "resume.pt":
            saves.append(obj["trainer"]["step"])
            if len(saves) == 2:
                raise _Killed("killed after epoch 2")

    monkeypatch.setattr(Partial, "save", save)
    return saves


@pytest.mark.parametrize("stage", ["train", "imp"])
def test_killed_stage_resumes_from_its_partial_state(tmp_path, monkeypatch, count_steps, stage):
    train = TrainSpec(lr=0.05, batch_size=64, duration=Step(4, "ep"))
    if stage == "train":
        spec = TrainStageSpec(data=DATA, model=MODEL, train=train)
    else:
        spec = _imp(level=1, train=train)

    # reference: uninterrupted, in its own store
    reference = run_stage(spec, _ctx(tmp_path / "reference"))

    ctx = _ctx(tmp_path / "crashed")
    if stage == "imp":  # the dense level 0 is already there
        run_stage(spec.trunk_root(), ctx)
    count_steps.clear()
    with monkeypatch.context() as patch:
        saves = _kill_after_second_resume_save(patch)
        with pytest.raises(_Killed):
            run_stage(spec, ctx)
    assert saves == [20, 40]
    assert len(count_steps) == 40
    assert ctx.store.get(spec.id) is None  # nothing finished-looking was left behind
    assert (ctx.store.root / ".partial" / spec.id / "resume.pt").is_file()

    count_steps.clear()
    resumed = run_stage(spec, _ctx(tmp_path / "crashed"))  # a fresh process, same store
    assert count_steps[0] == 40 and len(count_steps) == 40  # only epochs 3 and 4
    assert not (ctx.store.root / ".partial" / spec.id).exists()
    assert _same(resumed.weights("final"), reference.weights("final"))
    assert _same(resumed.weights("init"), reference.weights("init"))
    assert resumed.metrics["test_acc"] == reference.metrics["test_acc"]
    assert resumed.metrics["history"] == reference.metrics["history"]
    assert resumed.metrics["steps"] == reference.metrics["steps"] == 80
    if stage == "imp":
        assert _same(resumed.mask(), reference.mask())


def test_resume_state_is_saved_at_most_every_interval(tmp_path, monkeypatch):
    """Tiny epochs (distilled sets) must not pay a checkpoint per epoch."""
    from raylth.store.store import Partial

    saved = []
    original = Partial.save
    monkeypatch.setattr(Partial, "save", lambda self, name, obj: (saved.append(name), original(self, name, obj)))
    monkeypatch.setenv("RAYLTH_RESUME_EVERY_S", "3600")
    spec = TrainStageSpec(data=DataSpec("digits"), model=ModelSpec("lenet"),
                          train=TrainSpec(lr=0.05, batch_size=64, duration=Step.parse("4ep")))
    run_stage(spec, StageContext(store=Store(tmp_path), device=torch.device("cpu")))
    assert "resume.pt" not in saved and "weights/final.pt" in saved
    monkeypatch.setenv("RAYLTH_RESUME_EVERY_S", "0")
    saved.clear()
    run_stage(spec.replace(seeds=Seeds(init=1)), StageContext(store=Store(tmp_path), device=torch.device("cpu")))
    assert saved.count("resume.pt") == 4
