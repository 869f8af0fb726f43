"""Masks: pruning strategies, random masks, ignore patterns, rewinding, MaskKeeper."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from devices import TEST_DEVICE
from raylth.engine.masks import (PRUNING_STRATEGIES, MaskKeeper, apply_mask, counts, full_mask, prune,
                                 prunable_names, random_like, rewind_state, sparsity)
from raylth.engine.models import build_model
from raylth.engine.optim import make_optimizer
from raylth.errors import SpecError
from raylth.specs import ModelSpec, PruneSpec, Step, TrainSpec

STRATEGIES = sorted(PRUNING_STRATEGIES)  # every registered strategy passes these


def _lenet():
    # digits-shaped LeNet-300-100: 300*64 + 100*300 + 10*100 = 50200 prunable weights
    return build_model(ModelSpec("lenet"), (1, 8, 8), 10, seed=0)


def _odd_model():
    # layers whose sizes make 20% a non-integer: 91 and 65 weights
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(7, 13), nn.ReLU(), nn.Linear(13, 5))


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _kept(mask):
    return sum(int(m.sum()) for m in mask.values())


def _subset(new, old):
    return all(not bool((new[n] & ~old[n]).any()) for n in old)


def test_strategies_registered():
    # the default and the ones the docs name are there; every entry is a function under its own name
    assert {PruneSpec().strategy, "layerwise_magnitude", "random_global", "random_layerwise"} <= set(PRUNING_STRATEGIES)
    assert all(callable(fn) and fn.__name__ == name for name, fn in PRUNING_STRATEGIES.items())
    with pytest.raises(SpecError, match="prune.strategy"):
        prune("smallest_first", {}, {}, 0.2)


def test_full_mask_covers_conv_and_linear_weights_only():
    model = build_model(ModelSpec("resnet20", width=4), (3, 8, 8), 10, seed=0)
    mask = full_mask(model)
    params = dict(model.named_parameters())
    expected = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(mask) == {f"{n}.weight" for n in expected}
    assert not any("bn" in n or n.endswith(".bias") for n in mask)
    for n, m in mask.items():
        assert m.dtype == torch.bool and m.shape == params[n].shape and bool(m.all())
    assert sparsity(mask) == 0.0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_exact_counts_lenet(strategy):
    model = _lenet()
    weights = _weights(model)
    mask = full_mask(model)
    assert counts(mask) == {"1.weight": 19200, "3.weight": 30000, "5.weight": 1000}
    gen = torch.Generator().manual_seed(0)
    first = prune(strategy, weights, mask, 0.2, gen)
    second = prune(strategy, weights, first, 0.2, gen)
    if "layerwise" in strategy:
        assert counts(first) == {"1.weight": 15360, "3.weight": 24000, "5.weight": 800}
        assert counts(second) == {"1.weight": 12288, "3.weight": 19200, "5.weight": 640}
    else:
        assert _kept(first) == 40160        # 50200 - 10040
        assert _kept(second) == 32128       # 40160 - 8032
    assert sparsity(second) == pytest.approx(1 - 0.8 ** 2, abs=1e-12)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_exact_counts_with_rounding(strategy):
    model = _odd_model()
    weights = _weights(model)
    mask = full_mask(model)
    gen = torch.Generator().manual_seed(3)
    expected = {"0.weight": 91, "2.weight": 65}
    assert counts(mask) == expected
    for _ in range(6):
        new = prune(strategy, weights, mask, 0.2, gen)
        if "layerwise" in strategy:
            for n, remaining in counts(mask).items():
                assert counts(new)[n] == remaining - round(0.2 * remaining)
        else:
            remaining = _kept(mask)
            assert _kept(new) == remaining - round(0.2 * remaining)
        assert _subset(new, mask)
        mask = new
    # 91 -> 73 -> 58 -> 46 -> 37 -> 30 -> 24 and 65 -> 52 -> 42 -> 34 -> 27 -> 22 -> 18
    if "layerwise" in strategy:
        assert counts(mask) == {"0.weight": 24, "2.weight": 18}
    else:  # 156 -> 125 -> 100 -> 80 -> 64 -> 51 -> 41
        assert _kept(mask) == 41


def test_global_prunes_the_smallest_magnitudes():
    weights = {"a": torch.tensor([[1.0, -2.0, 3.0], [0.5, -0.1, 6.0]]),
               "b": torch.tensor([[-4.0, 0.2], [5.0, 0.3]])}
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    out = prune("global_magnitude", weights, mask, 0.2)  # 2 of 10: 0.1 and 0.2
    assert out["a"].tolist() == [[True, True, True], [True, False, True]]
    assert out["b"].tolist() == [[True, False], [True, True]]

    out = prune("global_magnitude", weights, mask, 0.5)  # 5 of 10: 0.1 0.2 0.3 0.5 1
    assert out["a"].tolist() == [[False, True, True], [False, False, True]]
    assert out["b"].tolist() == [[True, False], [True, False]]

    # already-pruned entries stay pruned however large, and are not counted
    prior = {"a": torch.tensor([[True, True, True], [True, True, False]]),
             "b": torch.ones(2, 2, dtype=torch.bool)}
    out = prune("global_magnitude", weights, prior, 0.2)  # 9 alive -> round(1.8) = 2 pruned
    assert out["a"].tolist() == [[True, True, True], [True, False, False]]
    assert out["b"].tolist() == [[True, False], [True, True]]


def test_layerwise_prunes_the_smallest_in_each_layer():
    weights = {"a": torch.tensor([0.9, -0.8, 0.7, 0.6, -0.5]),   # all larger than any b
               "b": torch.tensor([0.04, -0.01, 0.03, 0.02, 0.05])}
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    out = prune("layerwise_magnitude", weights, mask, 0.4)  # 2 per layer
    assert out["a"].tolist() == [True, True, True, False, False]
    assert out["b"].tolist() == [True, False, True, False, True]
    # global takes all four (of 10) from b, keeping only its largest
    glob = prune("global_magnitude", weights, mask, 0.4)
    assert glob["a"].all() and glob["b"].tolist() == [False, False, False, False, True]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_repeated_pruning_only_removes(strategy):
    model = _lenet()
    mask = full_mask(model)
    gen = torch.Generator().manual_seed(0)
    for level in range(4):
        # weights change between levels (training); pruned weights are 0 after masking
        weights = {n: torch.randn(m.shape, generator=gen) * m for n, m in mask.items()}
        new = prune(strategy, weights, mask, 0.2, gen)
        assert _subset(new, mask)
        assert _kept(new) < _kept(mask)
        mask = new


def test_magnitude_pruning_ignores_weights_of_pruned_entries():
    # a pruned entry with a huge (stale) weight must not come back
    weights = {"a": torch.tensor([100.0, 1.0, 2.0, 3.0, 4.0, 5.0])}
    mask = {"a": torch.tensor([False, True, True, True, True, True])}
    out = prune("global_magnitude", weights, mask, 0.2)  # 5 alive -> 1 pruned: 1.0
    assert out["a"].tolist() == [False, False, True, True, True, True]


def test_random_strategies_depend_on_generator():
    model = _lenet()
    weights, mask = _weights(model), full_mask(model)
    a = prune("random_global", weights, mask, 0.2, torch.Generator().manual_seed(1))
    b = prune("random_global", weights, mask, 0.2, torch.Generator().manual_seed(1))
    c = prune("random_global", weights, mask, 0.2, torch.Generator().manual_seed(2))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_random_like_keeps_per_layer_counts_and_differs():
    model = _lenet()
    weights = _weights(model)
    mask = full_mask(model)
    for _ in range(3):
        mask = prune("global_magnitude", weights, mask, 0.2)
    rand = random_like(mask, torch.Generator().manual_seed(0))
    assert set(rand) == set(mask)
    assert counts(rand) == counts(mask)
    for n in mask:
        assert rand[n].dtype == torch.bool and rand[n].shape == mask[n].shape
        assert not torch.equal(rand[n], mask[n])
    # deterministic given the generator, different across seeds
    again = random_like(mask, torch.Generator().manual_seed(0))
    other = random_like(mask, torch.Generator().manual_seed(1))
    assert all(torch.equal(rand[n], again[n]) for n in mask)
    assert all(not torch.equal(rand[n], other[n]) for n in mask)


def test_ignore_patterns_exclude_names():
    lenet = _lenet()
    assert prunable_names(lenet) == ["1.weight", "3.weight", "5.weight"]
    assert prunable_names(lenet, ("5.weight",)) == ["1.weight", "3.weight"]
    assert set(full_mask(lenet, ("5.*",))) == {"1.weight", "3.weight"}

    resnet = build_model(ModelSpec("resnet20", width=4), (3, 8, 8), 10, seed=0)
    names = prunable_names(resnet)
    assert "fc.weight" in names and "conv1.weight" in names
    assert any(".shortcut." in n for n in names)
    kept = prunable_names(resnet, ("fc.weight", "conv1.weight", "layers.*.shortcut.*"))
    assert "fc.weight" not in kept and "conv1.weight" not in kept
    assert not any(".shortcut." in n for n in kept)
    assert "layers.0.conv1.weight" in kept  # a pattern matches whole names only
    assert len(kept) == len(names) - 4      # fc, conv1 and 2 projection shortcuts

    # an ignored weight is never pruned
    mask = full_mask(resnet, ("fc.weight",))
    mask = prune("global_magnitude", _weights(resnet), mask, 0.5)
    assert "fc.weight" not in mask
    before = resnet.fc.weight.detach().clone()
    apply_mask(resnet, mask)
    assert torch.equal(resnet.fc.weight, before)


# -- rewinding ----------------------------------------------------------------------

def _train_some(model, steps, snapshot_at):
    """A few SGD steps on random data in train mode (BN statistics move too)."""
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    snap = None
    for step in range(steps):
        if step == snapshot_at:
            snap = copy.deepcopy(model.state_dict())
        x = torch.randn(16, 3, 8, 8, generator=g)
        y = torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return snap, copy.deepcopy(model.state_dict())


@pytest.mark.parametrize("rewind_bn", [True, False])
def test_rewind_state(rewind_bn):
    model = build_model(ModelSpec("resnet20", width=4), (3, 8, 8), 10, seed=0)
    model.train()
    at_k, trained = _train_some(model, steps=5, snapshot_at=2)
    mask = prune("global_magnitude", trained, full_mask(model), 0.5)
    out = rewind_state(trained, at_k, mask, rewind_bn)

    assert set(out) == set(trained)
    bn_like = [n for n in trained if n not in mask]
    assert any("running_mean" in n for n in bn_like) and any(n.endswith(".bias") for n in bn_like)
    for name in trained:
        assert out[name].dtype == trained[name].dtype
        if name in mask:
            m = mask[name]
            assert torch.equal(out[name][m], at_k[name][m])         # kept: step-k values
            assert bool((out[name][~m] == 0).all())                 # pruned: exactly 0
            assert bool((~m).any()) and bool((at_k[name][~m] != 0).all())
        else:
            source = at_k if rewind_bn else trained
            assert torch.equal(out[name], source[name]), name
    # the BN statistics really differ between the two points, so the above is a real check
    assert not torch.equal(at_k["bn1.running_mean"], trained["bn1.running_mean"])
    assert not torch.equal(at_k["fc.bias"], trained["fc.bias"])
    assert int(at_k["bn1.num_batches_tracked"]) == 2 and int(trained["bn1.num_batches_tracked"]) == 5

    # the result is a fresh copy and loads into the model
    out["bn1.weight"].add_(1.0)
    assert not torch.equal(out["bn1.weight"], at_k["bn1.weight"])
    assert not torch.equal(out["bn1.weight"], trained["bn1.weight"])
    model.load_state_dict(rewind_state(trained, at_k, mask, rewind_bn))


# -- MaskKeeper -----------------------------------------------------------------------

@pytest.mark.device_portable
@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mask_keeper_keeps_pruned_weights_zero(optimizer, fused):
    model = _lenet().to(TEST_DEVICE)
    before = {k: v.cpu() for k, v in _weights(model).items()}
    mask = prune("layerwise_magnitude", before, full_mask(model), 0.5)
    spec = TrainSpec(optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 0.01, momentum=0.9,
                     weight_decay=5e-4, duration=Step(5, "it"))
    keeper = MaskKeeper(model, mask)
    params = dict(model.named_parameters())
    for n, m in mask.items():  # applied on construction
        assert bool((params[n].cpu()[~m.cpu()] == 0).all())
    opt = make_optimizer(model.parameters(), spec, {"fused": True} if fused else {"foreach": True})
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(32, 1, 8, 8, generator=g).to(TEST_DEVICE)
        y = torch.randint(0, 10, (32,), generator=g).to(TEST_DEVICE)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for n, m in mask.items():  # gradients of pruned weights are masked
            assert bool((params[n].grad.cpu()[~m.cpu()] == 0).all())
        opt.step()  # no per-step re-masking: masked gradients alone keep pruned weights at 0

    for n, m in mask.items():
        p, m = params[n].detach().cpu(), m.cpu()
        assert bool((p[~m] == 0).all()), n
        assert bool((p[m] != before[n][m]).all()), n  # every kept weight moved
        state = opt.state[params[n]]
        buffers = ([state["momentum_buffer"]] if optimizer == "sgd"
                   else [state["exp_avg"], state["exp_avg_sq"]])
        for buf in buffers:  # no optimizer state builds up for pruned weights
            assert bool((buf.cpu()[~m] == 0).all())
    for n in ("1.bias", "3.bias"):  # not in the mask: trained freely
        assert not torch.equal(params[n].detach().cpu(), before[n])

    keeper.remove()
    x = torch.randn(8, 1, 8, 8, generator=g).to(TEST_DEVICE)
    F.cross_entropy(model(x), torch.zeros(8, dtype=torch.long, device=TEST_DEVICE)).backward()
    assert bool((params["1.weight"].grad.cpu()[~mask["1.weight"].cpu()] != 0).any())  # hooks gone


def test_mask_keeper_without_mask_is_a_no_op():
    model = _lenet()
    before = _weights(model)
    keeper = MaskKeeper(model, None)
    keeper.reapply()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert keeper.params == [] and keeper.handles == []
