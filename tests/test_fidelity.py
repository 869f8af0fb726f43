"""The references' protocols, checked where a loose accuracy margin cannot:
DSA's siamese draw in DM and gradient matching, MTT's normalised loss, the
training augmentations (DSA modes, CutMix) and DataLoader-style partial batches."""

import numpy as np
import pytest
import torch

from raylth.engine import distill as D
from raylth.engine.data import Dataset, epoch_batches, points_seen, steps_per_epoch
from raylth.engine.data import batches
from raylth.engine.data.dsa import apply_dsa, sample_dsa
from raylth.engine.models import build_model
from raylth.engine.train import Trainer
from raylth.errors import SpecError
from raylth.specs import AugmentSpec, ModelSpec, Seeds, Step, TrainSpec, TrialSpec

pytestmark = pytest.mark.usefixtures("one_thread")
LENET = ModelSpec("lenet", width=16)


def _lenet(seed):
    return build_model(LENET, (1, 8, 8), 10, seed=seed)


def _real(digits_data):
    return digits_data.normalize(digits_data.train_x.float()), digits_data.train_y


# -- DSA is siamese in DM and GM: the real and synthetic batch of a class share one draw --------
def _record_draws(monkeypatch, module):
    calls = []
    original = module.apply_dsa

    def recording(x, params):
        calls.append((len(x), params))
        return original(x, params)

    monkeypatch.setattr(module, "apply_dsa", recording)
    return calls


def _assert_siamese(calls, batch_real, ipc, classes):
    pairs = [(calls[i], calls[i + 1]) for i in range(0, len(calls), 2)]
    assert len(pairs) == classes
    probe = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    applied = set()
    for (n_real, p_real), (n_syn, p_syn) in pairs:
        assert (n_real, n_syn) == (batch_real, ipc)  # the real batch, then the synthetic one
        same = apply_dsa(probe, p_real)
        assert torch.equal(same, apply_dsa(probe, p_syn)), "the synthetic batch got its own draw"
        applied.add(tuple(same.flatten().tolist()))
    assert len(applied) > 1  # and classes do get different draws


def test_dm_applies_one_dsa_draw_to_real_and_synthetic(monkeypatch, digits_data):
    calls = _record_draws(monkeypatch, D.dm)
    x, y = _real(digits_data)
    D.distill_dm(x, y, 10, _lenet, ipc=2, iterations=1, batch_real=5, generator=torch.Generator().manual_seed(1))
    _assert_siamese(calls, batch_real=5, ipc=2, classes=10)


def test_gm_applies_one_dsa_draw_to_real_and_synthetic(monkeypatch, digits_data):
    calls = _record_draws(monkeypatch, D.gm)  # the matching step only: the inner training goes through common
    x, y = _real(digits_data)
    D.distill_gm(x, y, 10, _lenet, ipc=2, iterations=1, outer_loop=1, inner_loop=0, batch_real=5,
                 generator=torch.Generator().manual_seed(1))
    _assert_siamese(calls, batch_real=5, ipc=2, classes=10)


# -- MTT: the loss is normalised by the expert's start-to-target distance ----------------------
@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_mtt_loss_is_normalised_by_the_experts_own_distance(digits_data, scale):
    """A student that barely moves (lr_init ~ 0) ends where it started, so
    ||end - target||^2 / ||start - target||^2 = 1 whatever the distance;
    an unnormalised loss would be scale^2 x ||direction||^2."""
    x, y = _real(digits_data)
    start = torch.cat([p.detach().flatten() for p in _lenet(0).parameters()])
    direction = torch.randn(start.shape, generator=torch.Generator().manual_seed(2)) * 1e-2
    experts = [[start, start + scale * direction]]
    losses = []
    D.distill_mtt(x, y, 10, experts, _lenet, ipc=1, iterations=1, syn_steps=2, expert_epochs=1,
                  max_start_epoch=1, lr_init=1e-12, dsa=False, generator=torch.Generator().manual_seed(0),
                  callback=lambda it, loss, images, lr: losses.append(loss))
    assert losses[0] == pytest.approx(1.0, abs=1e-4)


# -- training augmentation --------------------------------------------------------------------
def _indexed(n=100, size=8):
    x = torch.arange(n).view(n, 1, 1, 1).expand(n, 3, size, size).to(torch.uint8).clone()
    return Dataset("t", x, torch.arange(n) % 10, x[:5], torch.arange(5), (0.0,) * 3, (1.0,) * 3, 10)


def test_a_partial_batch_is_kept_as_a_dataloader_keeps_it():
    data = _indexed(100)
    kept = list(epoch_batches(data, 64, 0, Seeds(), augment=False))
    assert [len(b.y) for b in kept] == [64, 36]
    assert sorted(torch.cat([b.y for b in kept]).tolist()) == sorted(data.train_y.tolist())
    assert [len(b.y) for b in epoch_batches(data, 64, 0, Seeds(), augment=False, drop_last=True)] == [64]
    assert steps_per_epoch(100, 64) == 2 and points_seen(100, 64, 2) == 100 and points_seen(100, 64, 5) == 264
    assert points_seen(100, 64, 2, drop_last=True) == 128


def test_trainer_counts_two_steps_and_100_points_per_epoch_of_100_images():
    data = _indexed(100)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 10))
    trainer = Trainer(model, data, TrainSpec(lr=0.01, batch_size=64, duration=Step(3, "ep")), Seeds(),
                      device=torch.device("cpu"))
    trainer.run()
    assert trainer.steps_per_epoch == 2 and trainer.step == 6 and trainer.points_seen() == 300


def test_dsa_modes_pick_families_as_the_references():
    g = torch.Generator().manual_seed(0)
    ops = "color_crop_flip_scale_rotate"
    singles = {sample_dsa(4, g, ops, mode="single").ops for _ in range(60)}
    assert singles == {(op,) for op in ops.split("_")}  # DSA 'S': one family per batch
    assert sample_dsa(4, g, ops, mode="multi").ops == tuple(ops.split("_"))
    idc = {sample_dsa(4, g, ops, mode="idc").ops for _ in range(60)}
    assert idc == {("flip", "color", op) for op in ("crop", "scale", "rotate")}  # IDC's DiffAug
    assert not sample_dsa(4, g, ops, mode="idc").align_corners


def test_cutmix_pastes_one_box_from_the_partners_and_mixes_the_loss_by_its_area():
    x = torch.arange(4).float().view(4, 1, 1, 1).expand(4, 3, 32, 32).clone()
    y = torch.arange(4)
    mixed = batches.cutmix(x, y, np.random.default_rng(3), beta=1.0)
    changed = (mixed.x != x).any(1)  # (B, H, W): the pasted box where partner != self
    box = changed[[i for i in range(4) if mixed.y_mix[i] != y[i]][0]]
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert int(box.sum()) == int(area)  # a rectangle
    assert mixed.lam == pytest.approx(1 - float(area) / (32 * 32))
    for i in range(4):  # the box holds the partner's pixels: its label is the mixed one
        assert torch.all(mixed.x[i][:, box] == float(mixed.y_mix[i]))
    logits = torch.randn(4, 10)
    expected = (torch.nn.functional.cross_entropy(logits, y) * mixed.lam
                + torch.nn.functional.cross_entropy(logits, mixed.y_mix) * (1 - mixed.lam))
    assert torch.allclose(mixed.loss(logits), expected)


def test_cutmix_probability_is_per_batch():
    data = _indexed(640, size=16)
    spec = AugmentSpec(name="none", cutmix=0.5)
    mixed = [b.y_mix is not None for e in range(4) for b in epoch_batches(data, 64, e, Seeds(), spec)]
    assert 10 <= sum(mixed) <= 30 and len(mixed) == 40


def test_dsa_and_cutmix_shards_partition_the_global_batch(digits_data):
    spec = AugmentSpec(name="dsa", ops="color_crop_flip_scale_rotate", mode="idc", cutmix=1.0)
    whole = list(epoch_batches(digits_data, 64, 0, Seeds(1, 2, 3), spec))
    halves = [list(epoch_batches(digits_data, 64, 0, Seeds(1, 2, 3), spec, rank=r, world=2)) for r in (0, 1)]
    for b, b0, b1 in zip(whole, *halves):
        assert torch.equal(b.x[0::2], b0.x) and torch.equal(b.x[1::2], b1.x)
        assert torch.equal(b.y_mix[1::2], b1.y_mix) and b.lam == b0.lam


# -- bad input: one line naming the field ---------------------------------------------------
@pytest.mark.parametrize("augment, needles", [
    ({"name": "dsa", "ops": "color_blur"}, ["train.augment.ops", "blur", "color_crop_flip_scale_rotate"]),
    ({"name": "crop_flip", "cutmix": 1.5}, ["train.augment.cutmix", "1.5", "[0, 1]"]),
    ({"name": "crop_flip", "cutmix": float("nan")}, ["train.augment.cutmix", "nan"]),
    ({"name": "mixup"}, ["augment.name", "mixup", "none, crop_flip, dsa"]),
])
def test_bad_augmentation_fails_with_one_line(augment, needles):
    with pytest.raises(SpecError) as caught:
        TrialSpec.from_dict({"train": {"augment": augment}})
    message = str(caught.value)
    assert "\n" not in message and all(n in message for n in needles), message
