"""The training loop: determinism, resumption, schedules, evaluation (CPU, digits, LeNet)."""

import io
import math

import pytest
import torch
import torch.nn.functional as F

from devices import TEST_DEVICE
from raylth.engine.data import Dataset
from raylth.engine.masks import full_mask, prune
from raylth.engine.models import build_model
from raylth.engine.optim import lr_factor
from raylth.engine.train import Trainer, evaluate
from raylth.specs import AugmentSpec, ModelSpec, Seeds, Step, TrainSpec

CPU = torch.device("cpu")


def _spec(**kw):
    base = dict(lr=0.05, batch_size=64, duration=Step(2, "ep"))
    base.update(kw)
    return TrainSpec(**base)


def _model(data, seed=0):
    return build_model(ModelSpec("lenet"), data.input_shape, data.num_classes, seed=seed)


PAPER_AUGMENT = AugmentSpec(name="dsa", ops="color_crop_flip_scale_rotate", mode="idc", cutmix=0.5)


def _trainer(data, spec=None, seeds=Seeds(), init=0, augment=False, mask=None, fast=None):
    return Trainer(_model(data, init), data, spec or _spec(), seeds, augment=augment, mask=mask,
                   device=TEST_DEVICE, fast=fast)


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _snapshot(trainer):
    """A deep copy of the trainer's state, through torch.save as a resume file would be."""
    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def test_steps_and_history(digits_data):
    trainer = _trainer(digits_data, _spec(eval_every=Step(1, "ep")))
    assert len(digits_data.train_y) == 1258
    # 19 full batches of 64 and the last partial one of 42, as a DataLoader
    assert trainer.steps_per_epoch == 20 and trainer.total_steps == 40
    history = trainer.run()
    assert trainer.step == 40 and trainer.points_seen() == 2 * 1258
    assert [h["step"] for h in history] == [20, 40]
    assert [h["epoch"] for h in history] == [1.0, 2.0]
    for h in history:
        assert 0.0 <= h["test_acc"] <= 1.0 and h["train_loss"] > 0 and h["test_loss"] > 0
    assert history[-1]["test_acc"] > 0.8  # it learns: chance is 0.1
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_iteration_duration_and_eval_every(digits_data):
    epochs = []
    trainer = _trainer(digits_data, _spec(duration=Step(30, "it"), eval_every=Step(10, "it")))
    history = trainer.run(on_epoch=lambda t: epochs.append(t.step))
    assert trainer.step == 30
    assert [h["step"] for h in history] == [10, 20, 30]
    assert epochs == [20]  # only completed epochs


def test_save_at_hands_out_weights(digits_data):
    saved = {}
    trainer = _trainer(digits_data, _spec(duration=Step(30, "it")))
    init = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run(save_at=[0, 5, 19], on_save=lambda step, w: saved.__setitem__(step, w))
    assert sorted(saved) == [0, 5, 19]
    assert _same_weights(saved[0], init)
    assert not _same_weights(saved[5], init) and not _same_weights(saved[5], saved[19])
    assert not _same_weights(saved[19], trainer.weights())


@pytest.mark.device_portable
@pytest.mark.parametrize("fast", [None, True], ids=["default", "fastpath"])
@pytest.mark.parametrize("augment", [False, True, PAPER_AUGMENT], ids=["none", "crop_flip", "dsa_cutmix"])
def test_same_seeds_same_run(digits_data, augment, fast):
    a, b = _trainer(digits_data, augment=augment, fast=fast), _trainer(digits_data, augment=augment, fast=fast)
    ha, hb = a.run(), b.run()
    assert ha == hb
    assert _same_weights(a.weights(), b.weights())


@pytest.mark.device_portable
def test_different_order_seed_differs(digits_data):
    a = _trainer(digits_data, seeds=Seeds(order=0))
    b = _trainer(digits_data, seeds=Seeds(order=1))
    a.run(), b.run()
    assert not torch.equal(a.weights()["1.weight"], b.weights()["1.weight"])
    assert a.history != b.history


@pytest.mark.device_portable
def test_different_init_seed_differs(digits_data):
    a, b = _trainer(digits_data, init=0), _trainer(digits_data, init=1)
    assert not torch.equal(a.weights()["1.weight"], b.weights()["1.weight"])
    a.run(), b.run()
    assert not torch.equal(a.weights()["1.weight"], b.weights()["1.weight"])


@pytest.mark.device_portable
def test_augment_seed_matters_only_with_augmentation(digits_data):
    runs = {}
    for augment in (False, True):
        for seed in (0, 1):
            t = _trainer(digits_data, _spec(duration=Step(10, "it")), Seeds(augment=seed),
                         augment=augment)
            t.run()
            runs[augment, seed] = t.weights()
    assert _same_weights(runs[False, 0], runs[False, 1])
    assert not _same_weights(runs[True, 0], runs[True, 1])
    assert not _same_weights(runs[False, 0], runs[True, 0])


@pytest.mark.device_portable
@pytest.mark.parametrize("fast", [None, True], ids=["default", "fastpath"])
@pytest.mark.parametrize("augment", [False, True, PAPER_AUGMENT], ids=["none", "crop_flip", "dsa_cutmix"])
def test_resume_is_bitwise_identical(digits_data, augment, fast):
    spec = _spec(duration=Step(3, "ep"), weight_decay=5e-4, momentum=0.9, eval_every=Step(1, "ep"))
    full = _trainer(digits_data, spec, augment=augment, fast=fast)
    captured = {}

    def on_epoch(t):
        if t.step == t.steps_per_epoch:  # after epoch 1 of 3
            captured["state"] = _snapshot(t)

    full_history = full.run(on_epoch=on_epoch)
    assert captured["state"]["step"] == 20 and len(captured["state"]["history"]) == 1

    # a fresh trainer (even from another init) continues from the saved state
    resumed = _trainer(digits_data, spec, init=7, augment=augment, fast=fast)
    resumed.load_state_dict(captured["state"])
    assert resumed.step == 20
    steps = []
    original = resumed._train_step
    resumed._train_step = lambda batch: (steps.append(1), original(batch))
    history = resumed.run()
    assert len(steps) == 40
    assert history == full_history
    assert _same_weights(resumed.weights(), full.weights())

    # restoring only the weights and the step (not the optimizer's momentum) is
    # detectably different, so the equality above is a real check
    partial = _trainer(digits_data, spec, augment=augment, fast=fast)
    partial.model.load_state_dict(captured["state"]["model"])
    partial.start_at(20)
    partial.run()
    assert not _same_weights(partial.weights(), full.weights())


@pytest.mark.device_portable
def test_resume_with_mask(digits_data):
    model = _model(digits_data)
    mask = prune("global_magnitude", dict(model.state_dict()), full_mask(model), 0.5)
    spec = _spec(duration=Step(3, "ep"))
    full = _trainer(digits_data, spec, mask=mask)
    captured = {}
    full.run(on_epoch=lambda t: captured.setdefault("state", _snapshot(t)))
    resumed = _trainer(digits_data, spec, init=3, mask=mask)
    resumed.load_state_dict(captured["state"])
    resumed.run()
    assert _same_weights(resumed.weights(), full.weights())
    for n, m in mask.items():
        assert bool((full.weights()[n][~m] == 0).all())
        assert bool((full.weights()[n][m] != 0).all())


@pytest.mark.parametrize("schedule, extra", [
    ("cosine", {}),
    ("step", {"step_size": Step(1, "ep"), "gamma": 0.5}),
    ("multistep", {"milestones": (Step(10, "it"), Step(1, "ep")), "gamma": 0.5}),
    ("constant", {"warmup": Step(20, "it")}),
])
def test_start_at_sets_the_schedules_lr(digits_data, schedule, extra):
    spec = _spec(schedule=schedule, **extra)
    factor = lr_factor(spec, 20)
    for k in (0, 7, 19, 25):
        trainer = _trainer(digits_data, spec)
        trainer.start_at(k)
        assert trainer.step == k
        lr = trainer.optimizer.param_groups[0]["lr"]
        assert lr == pytest.approx(0.05 * factor(k), rel=1e-12)
    trainer = _trainer(digits_data, spec)
    trainer.start_at(7)
    if schedule == "cosine":
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(
            0.05 * 0.5 * (1 + math.cos(math.pi * 7 / 40)), rel=1e-12)
    steps = []
    original = trainer._train_step
    trainer._train_step = lambda batch: (steps.append(1), original(batch))
    trainer.run()
    assert len(steps) == 40 - 7 and trainer.step == 40


def test_lr_follows_the_schedule_each_step(digits_data):
    spec = _spec(duration=Step(30, "it"), warmup=Step(5, "it"))
    trainer = _trainer(digits_data, spec)
    factor = lr_factor(spec, trainer.steps_per_epoch)
    seen = []
    original = trainer._train_step

    def step(batch):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        original(batch)

    trainer._train_step = step
    trainer.run()
    assert seen == pytest.approx([0.05 * factor(k) for k in range(30)], rel=1e-12)
    assert seen[0] == pytest.approx(0.01) and seen[4] == pytest.approx(0.05)


def test_lr_factor_cosine():
    f = lr_factor(TrainSpec(duration=Step(100, "it")), 10)
    assert f(0) == 1.0 and f(100) == pytest.approx(0.0, abs=1e-15)
    assert f(50) == pytest.approx(0.5, rel=1e-12)
    assert f(25) == pytest.approx(0.5 * (1 + math.sqrt(0.5)), rel=1e-12)
    assert f(200) == pytest.approx(0.0, abs=1e-15)  # clamps after the end
    g = lr_factor(TrainSpec(duration=Step(10, "ep")), 10)  # epochs -> 100 iterations
    assert g(50) == pytest.approx(0.5, rel=1e-12)


def test_lr_factor_cosine_with_warmup():
    f = lr_factor(TrainSpec(duration=Step(110, "it"), warmup=Step(10, "it")), 10)
    assert f(0) == pytest.approx(0.1) and f(4) == pytest.approx(0.5)
    assert f(9) == 1.0 and f(10) == 1.0
    assert f(60) == pytest.approx(0.5, rel=1e-12)
    assert f(110) == pytest.approx(0.0, abs=1e-15)
    e = lr_factor(TrainSpec(duration=Step(10, "ep"), warmup=Step(1, "ep")), 10)
    assert e(4) == pytest.approx(0.5) and e(9) == 1.0


def test_lr_factor_step():
    f = lr_factor(TrainSpec(schedule="step", step_size=Step(2, "ep"), gamma=0.1,
                            duration=Step(10, "ep")), 10)
    assert f(0) == 1.0 and f(19) == 1.0
    assert f(20) == pytest.approx(0.1) and f(39) == pytest.approx(0.1)
    assert f(45) == pytest.approx(0.01)


def test_lr_factor_multistep():
    f = lr_factor(TrainSpec(schedule="multistep", milestones=(Step(5, "ep"), Step(30, "it")),
                            gamma=0.5, duration=Step(10, "ep")), 10)
    assert f(0) == 1.0 and f(29) == 1.0
    assert f(30) == 0.5 and f(49) == 0.5
    assert f(50) == 0.25 and f(100) == 0.25


def test_lr_factor_constant_with_warmup():
    f = lr_factor(TrainSpec(schedule="constant", warmup=Step(4, "it"), duration=Step(1, "ep")), 10)
    assert [f(k) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(TrainSpec(schedule="constant"), 10)(123) == 1.0


def test_evaluate_matches_a_manual_computation(digits_data):
    trainer = _trainer(digits_data, _spec(duration=Step(10, "it")))
    trainer.run()
    model = trainer.model
    model.train()
    result = evaluate(model, digits_data)
    assert model.training  # mode restored
    assert 0.0 <= result["acc"] <= 1.0

    with torch.no_grad():
        model.eval()
        logits = model(digits_data.normalize(digits_data.test_x.float()))
        model.train()
    y = digits_data.test_y
    correct = int((logits.argmax(1) == y).sum())
    assert result["acc"] == correct / len(y)
    assert 0.3 < result["acc"] < 1.0  # neither chance nor perfect: a meaningful comparison
    assert result["loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)

    # batching and limit do not change the answer
    small = evaluate(model, digits_data, batch_size=64, limit=200)
    assert small["acc"] == int((logits[:200].argmax(1) == y[:200]).sum()) / 200
    assert small["loss"] == pytest.approx(float(F.cross_entropy(logits[:200], y[:200])), rel=1e-5)

    train = evaluate(model, digits_data, split="train")
    with torch.no_grad():
        model.eval()
        tl = model(digits_data.normalize(digits_data.train_x.float()))
    assert train["acc"] == int((tl.argmax(1) == digits_data.train_y).sum()) / len(digits_data.train_y)
    assert train["acc"] != result["acc"]


def test_default_evaluation_stays_under_a_quarter_of_training():
    """Without eval_every: once per epoch while k evaluations of the test split
    cost at most a quarter of the training points, else evenly fewer, always
    at the end; eval_every is kept as given."""
    def trainer(n_train, n_test, epochs, **kw):
        x = torch.zeros(n_train + n_test, 1, 2, 2, dtype=torch.uint8)
        y = torch.arange(n_train + n_test) % 10
        data = Dataset("t", x[:n_train], y[:n_train], x[n_train:], y[n_train:], (0.0,), (1.0,), 10)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 10))
        return Trainer(model, data, _spec(duration=Step(epochs, "ep"), **kw), Seeds(), device=CPU)

    distilled = trainer(100, 10_000, 300)  # a distilled level: 600 steps, one evaluation
    assert distilled.eval_period == distilled.total_steps == 600
    full = trainer(50_000, 10_000, 30)  # CIFAR-10: 0.25 x 50,000 per epoch > 10,000: every epoch
    assert full.eval_period == full.steps_per_epoch
    some = trainer(1_000, 1_000, 40)  # 0.25 x 40,000 / 1,000 = 10 evaluations of 40 epochs
    assert some.total_steps // some.eval_period == 10
    assert trainer(100, 10_000, 300, eval_every=Step(250, "ep")).eval_period == 500


def test_the_fast_path_runs_on_cpu(digits_data):
    """What CUDA takes by default, CPU takes on request: bf16 autocast,
    channels_last weights and the fused optimizer kernel."""
    model = build_model(ModelSpec("conv3", width=8), (1, 8, 8), 10, seed=0)
    trainer = Trainer(model, digits_data, _spec(duration=Step(2, "it")), Seeds(), device=CPU, fast=True)
    dtypes = []
    trainer.model.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    trainer.run()
    assert trainer.fast.on and dtypes and set(dtypes) == {torch.bfloat16}
    assert trainer.optimizer.defaults["fused"] is True
    conv = next(p for p in trainer.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    exact = Trainer(build_model(ModelSpec("conv3", width=8), (1, 8, 8), 10, seed=0), digits_data,
                    _spec(duration=Step(2, "it")), Seeds(), device=CPU)
    assert not exact.fast.on and exact.optimizer.defaults["foreach"] is True


def test_a_bad_fast_path_setting_is_one_line(monkeypatch, digits_data):
    from raylth.errors import RaylthError

    monkeypatch.setenv("RAYLTH_FAST_PATH", "yes")
    with pytest.raises(RaylthError, match=r"^RAYLTH_FAST_PATH='yes': use 1"):
        _trainer(digits_data)
