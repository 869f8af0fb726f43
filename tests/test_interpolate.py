"""Linear interpolation, BatchNorm re-estimation, instability and the loss
barrier (CPU, digits): a network is stable against a copy of itself and
unstable against a permuted copy of itself."""

import pytest
import torch
from torch import nn

from raylth.engine.data import fixed_batches
from raylth.engine.interpolate import (alpha_grid, evaluate_path, instability, interpolate_state,
                                       loss_barrier, reset_bn_statistics)
from raylth.engine.models import build_model
from raylth.engine.train import Trainer, evaluate
from raylth.specs import ModelSpec, Seeds, Step, TrainSpec

CPU = torch.device("cpu")


def _train(data, name, width, duration, seed=0):
    model = build_model(ModelSpec(name, width), data.input_shape, data.num_classes, seed=seed)
    trainer = Trainer(model, data, TrainSpec(lr=0.05, batch_size=64, duration=Step.parse(duration)),
                      Seeds.all(seed), augment=False, device=CPU)
    trainer.run()
    return trainer.model, trainer.weights()


def _copy(state):
    return {k: v.clone() for k, v in state.items()}


@pytest.fixture(scope="module")
def resnet(digits_data):
    return _train(digits_data, "resnet20", 4, "20it")


# -- pure functions -------------------------------------------------------------

def test_alpha_grid():
    assert alpha_grid(2) == [0.0, 1.0]
    assert alpha_grid(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    grid = alpha_grid(30)
    assert len(grid) == 30 and grid[0] == 0.0 and grid[-1] == 1.0
    for bad in (0, 1, 2.5):
        with pytest.raises(ValueError):
            alpha_grid(bad)


def test_instability_and_loss_barrier_by_hand():
    assert instability([0.1, 0.3, 0.2]) == pytest.approx(0.3 - 0.15)
    assert instability([0.1, 0.05, 0.3]) == pytest.approx(0.3 - 0.2)   # the max is an endpoint
    assert instability([0.2, 0.2]) == 0.0
    # the line from L(0) = 1 to L(1) = 3 is 2 at alpha 0.5: the barrier is 4 - 2
    assert loss_barrier([0.0, 0.5, 1.0], [1.0, 4.0, 3.0]) == pytest.approx(2.0)
    assert loss_barrier([0.0, 0.25, 1.0], [1.0, 1.0, 3.0]) == 0.0  # below the line: endpoints win
    with pytest.raises(ValueError):
        loss_barrier([0.1, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        loss_barrier([0.0, 1.0], [1.0])
    with pytest.raises(ValueError):
        instability([])


def test_interpolate_state(resnet):
    a = _copy(resnet[1])
    g = torch.Generator().manual_seed(0)
    b = {k: (v + torch.randn(v.shape, generator=g) if v.is_floating_point() else v + 7)
         for k, v in a.items()}
    conv = "conv1.weight"
    a[conv][0], b[conv][0] = 0.0, 0.0  # a pruned filter
    for alpha in (0.0, 0.3, 0.5, 1.0):
        mid = interpolate_state(a, b, alpha)
        assert mid.keys() == a.keys()
        for k, v in a.items():
            if v.is_floating_point():
                assert torch.allclose(mid[k], (1 - alpha) * v + alpha * b[k], atol=1e-6), k
            else:
                assert torch.equal(mid[k], v), k  # num_batches_tracked from a
        assert bool((mid[conv][0] == 0).all())
    assert all(torch.equal(interpolate_state(a, b, 0.0)[k], a[k]) for k in a)
    assert all(torch.equal(interpolate_state(a, b, 1.0)[k], b[k]) for k in a if a[k].is_floating_point())
    mid = interpolate_state(a, b, 0.5)
    assert torch.allclose(mid["bn1.running_var"], (a["bn1.running_var"] + b["bn1.running_var"]) / 2)
    assert all(torch.equal(interpolate_state(a, a, alpha)[k], a[k]) for alpha in (0.1, 0.7) for k in a)
    with pytest.raises(ValueError):
        interpolate_state(a, {k: v for k, v in b.items() if k != conv}, 0.5)


# -- BatchNorm re-estimation ----------------------------------------------------

def test_reset_bn_statistics_is_the_plain_average(digits_data):
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64, momentum=0.3))
    model.eval()
    batches = fixed_batches(digits_data, 3, 100, seed=5)
    rng = torch.get_rng_state()
    reset_bn_statistics(model, digits_data, batches=3, batch_size=100, seed=5)
    assert torch.equal(torch.get_rng_state(), rng)
    bn = model[1]
    x = torch.stack([b[0].flatten(1) for b in batches])            # (3, 100, 64)
    assert torch.allclose(bn.running_mean, x.mean(1).mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, x.var(1, unbiased=True).mean(0), atol=1e-4)
    assert bn.momentum == 0.3 and not model.training and int(bn.num_batches_tracked) == 3


def test_reset_bn_statistics_without_batch_norm(digits_data):
    model = build_model(ModelSpec("lenet", 32), digits_data.input_shape, 10, seed=0)
    before = _copy(model.state_dict())
    reset_bn_statistics(model, digits_data, batches=2, batch_size=64, seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- a network against itself ------------------------------------------------------

def _check_self_path(model, state, data, bn):
    model.load_state_dict(state)
    model.train()
    rng = torch.get_rng_state()
    path = evaluate_path(model, state, _copy(state), data, alpha_grid(5), bn=bn, train_limit=300,
                         bn_batches=3, batch_size=256)
    assert torch.equal(torch.get_rng_state(), rng)
    assert path["alpha"] == alpha_grid(5)
    assert all(len(v) == 5 for v in path.values())
    for split in ("test", "train"):
        assert instability(path[f"{split}_err"]) == 0.0
        assert abs(loss_barrier(path["alpha"], path[f"{split}_loss"])) < 1e-6
        assert all(0.0 <= e <= 1.0 for e in path[f"{split}_err"])
    if bn == "interpolate":  # the endpoints are the network itself
        assert path["test_err"][0] == pytest.approx(1 - evaluate(model, data, "test")["acc"])
        assert path["train_loss"][0] == pytest.approx(evaluate(model, data, "train", limit=300)["loss"])
    # the model gets its state and mode back
    assert model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    return path


def test_lenet_is_stable_against_itself(digits_data):
    model, state = _train(digits_data, "lenet", 64, "3ep")
    path = _check_self_path(model, state, digits_data, "interpolate")
    assert path["test_err"][0] < 0.3  # it learned something


@pytest.mark.parametrize("bn", ["interpolate", "reset"])
def test_resnet_is_stable_against_itself(digits_data, resnet, bn):
    model, state = resnet
    _check_self_path(model, state, digits_data, bn)


def test_bn_reset_changes_the_statistics_used(digits_data, resnet):
    model, state = resnet
    interp = evaluate_path(model, state, state, digits_data, [0.0], bn="interpolate")
    reset = evaluate_path(model, state, state, digits_data, [0.0], bn="reset", bn_batches=2,
                          batch_size=256)
    assert interp["test_loss"] != reset["test_loss"]
    with pytest.raises(ValueError):
        evaluate_path(model, state, state, digits_data, [0.0], bn="recompute")


# -- a network against a permuted copy of itself ----------------------------------

def _permute_hidden(state, perm):
    """LeNet's first hidden layer (Sequential indices 1 and 3) with its units
    reordered: rows of layer 1's weight and bias, columns of layer 2's weight."""
    out = dict(state)
    out["1.weight"], out["1.bias"] = state["1.weight"][perm], state["1.bias"][perm]
    out["3.weight"] = state["3.weight"][:, perm]
    return out


def test_permuted_copy_has_a_barrier(digits_data):
    # A narrow LeNet (16-5-10): on digits, LeNet-300-100 averaged with its own
    # permutation still gets ~5% error, so the barrier is tiny there.
    width = 16
    model, state = _train(digits_data, "lenet", width, "15ep", seed=1)
    perm = torch.roll(torch.arange(width), width // 2)  # no unit stays in place
    permuted = _permute_hidden(state, perm)

    x = digits_data.normalize(digits_data.test_x.float())
    with torch.no_grad():
        model.load_state_dict(state)
        original_out = model(x)
        model.load_state_dict(permuted)
        permuted_out = model(x)
    assert torch.allclose(original_out, permuted_out, atol=1e-5)

    rng = torch.get_rng_state()
    path = evaluate_path(model, state, permuted, digits_data, alpha_grid(11))
    assert path["test_err"][0] == pytest.approx(path["test_err"][-1], abs=1 / len(digits_data.test_y))
    assert path["test_err"][0] < 0.1
    # measured 0.365 (test) and 0.411 (train); random permutations and other
    # seeds gave 0.2 to 0.53 at width 16
    assert instability(path["test_err"]) > 0.2
    assert instability(path["train_err"]) > 0.2
    assert loss_barrier(path["alpha"], path["test_loss"]) > 0.5

    back = _permute_hidden(permuted, torch.argsort(perm))
    assert all(torch.equal(back[k], state[k]) for k in state)
    path = evaluate_path(model, state, back, digits_data, alpha_grid(11))
    assert instability(path["test_err"]) < 1e-6 and instability(path["train_err"]) < 1e-6
    assert abs(loss_barrier(path["alpha"], path["test_loss"])) < 1e-6
    assert torch.equal(torch.get_rng_state(), rng)
