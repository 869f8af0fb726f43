"""Linear mode connectivity (Frankle et al. 2020): error along the straight
line between two networks, and the instability and loss barrier it shows."""

from __future__ import annotations

import torch
from torch import nn

from raylth.engine.data import Dataset, fixed_batches
from raylth.engine.fastpath import FastPath
from raylth.engine.train import evaluate

State = dict[str, torch.Tensor]
BN_MODES = ("interpolate", "reset")


def interpolate_state(a: State, b: State, alpha: float) -> State:
    """(1 - alpha) * a + alpha * b for every floating tensor (weights, biases,
    BatchNorm affine parameters and running statistics); non-floating buffers
    (num_batches_tracked) come from ``a``. Computed as torch.lerp, which is
    exact where a == b: pruned weights (0 in both) stay 0 and a network
    interpolated with an exact copy of itself is that network, bit for bit."""
    if a.keys() != b.keys():
        raise ValueError(f"state dicts differ in keys: {sorted(a.keys() ^ b.keys())}")
    out = {}
    for name, va in a.items():
        vb = b[name]
        if va.shape != vb.shape:
            raise ValueError(f"{name}: shapes {tuple(va.shape)} and {tuple(vb.shape)} differ")
        if va.is_floating_point():
            out[name] = torch.lerp(va, vb.to(va.device, va.dtype), float(alpha))
        else:
            out[name] = va.clone()
    return out


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reset_bn_statistics(model: nn.Module, data: Dataset, batches: int, batch_size: int,
                        seed: int, fast: FastPath | None = None) -> None:
    """Re-estimate every BatchNorm's running mean and variance as the plain
    average over ``batches`` fixed training batches (no augmentation; see
    data.fixed_batches), then restore each layer's momentum and the
    model's mode. A no-op for models without BatchNorm. The data must be on
    the model's device."""
    norms = _batch_norms(model)
    if not norms:
        return
    momenta = [bn.momentum for bn in norms]
    was_training = model.training
    fast = fast or FastPath.for_device(data.train_x.device)
    try:
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average: every batch weighs the same
        model.train()
        for x, _ in fixed_batches(data, batches, batch_size, seed):
            with fast.autocast():  # as in training
                model(fast.layout(x))
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        model.train(was_training)


def alpha_grid(points: int) -> list[float]:
    """``points`` evenly spaced values in [0, 1], both ends included exactly."""
    if int(points) != points or points < 2:
        raise ValueError(f"points ({points}) must be an integer >= 2")
    points = int(points)
    return [i / (points - 1) for i in range(points)]


def evaluate_path(model: nn.Module, state_a: State, state_b: State, data: Dataset, alphas,
                  bn: str = "interpolate", train_limit: int | None = None, bn_batches: int = 10,
                  batch_size: int = 1024, bn_seed: int = 0,
                  fast: FastPath | None = None) -> dict[str, list[float]]:
    """Loss and error (1 - accuracy, a fraction) on the test set and on the
    first ``train_limit`` training images (all if None) at each alpha of the
    path (1 - alpha) * state_a + alpha * state_b.

    bn='interpolate' uses the interpolated BatchNorm running statistics;
    bn='reset' re-estimates them at every alpha on the same ``bn_batches``
    training batches of ``batch_size`` (seed ``bn_seed``). The data must be on
    the model's device. The model gets its own state and mode back afterwards.
    ``fast``: how the model runs (default: its device's default, as in training).
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn={bn!r}: use one of {BN_MODES}")
    device = next(iter(model.state_dict().values())).device
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    a = {k: v.to(device) for k, v in state_a.items()}
    b = {k: v.to(device) for k, v in state_b.items()}
    out = {key: [] for key in ("alpha", "test_loss", "test_err", "train_loss", "train_err")}
    try:
        for alpha in alphas:
            model.load_state_dict(interpolate_state(a, b, alpha))
            if bn == "reset":
                reset_bn_statistics(model, data, bn_batches, batch_size, bn_seed, fast)
            test = evaluate(model, data, "test", batch_size, fast=fast)
            train = evaluate(model, data, "train", batch_size, limit=train_limit, fast=fast)
            out["alpha"].append(float(alpha))
            out["test_loss"].append(test["loss"])
            out["test_err"].append(1.0 - test["acc"])
            out["train_loss"].append(train["loss"])
            out["train_err"].append(1.0 - train["acc"])
    finally:
        model.load_state_dict(original)
        model.train(was_training)
    return out


def instability(errors) -> float:
    """Frankle et al. (2020): the largest error on the path minus the mean of
    the two endpoint errors. Never negative: the endpoints are on the path."""
    errors = list(errors)
    if not errors:
        raise ValueError("instability of an empty path")
    return max(errors) - (errors[0] + errors[-1]) / 2


def loss_barrier(alphas, losses) -> float:
    """The loss barrier of Entezari et al. (2022): the largest gap between the
    loss on the path and the straight line between the endpoint losses,
    max_alpha L(alpha) - ((1 - alpha) L(0) + alpha L(1)). alphas must start at
    0 and end at 1; the result is >= 0 (the gap is exactly 0 at both ends)."""
    alphas, losses = [float(a) for a in alphas], list(losses)
    if len(alphas) != len(losses) or len(alphas) < 2:
        raise ValueError(f"need >= 2 alphas and as many losses (got {len(alphas)} and {len(losses)})")
    if alphas[0] != 0.0 or alphas[-1] != 1.0:
        raise ValueError(f"alphas must run from 0 to 1 (got {alphas[0]} to {alphas[-1]})")
    first, last = losses[0], losses[-1]
    return max(loss - ((1 - a) * first + a * last) for a, loss in zip(alphas, losses))
