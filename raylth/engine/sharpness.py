"""Curvature of the training loss: Hessian-vector products, Hutchinson's
Hessian diagonal, the top eigenvalue, and Hessian mass on kept vs pruned weights.

The loss is the mean cross-entropy over a fixed list of training batches,
computed in float32 without autocast (bf16 is too coarse for second
derivatives), with the model in eval mode: BatchNorm then uses its running
statistics, so the loss is a fixed function of the weights, each example's
loss does not depend on the rest of its batch, and the running statistics are
not updated by the extra forward passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raylth.engine.data import seed_for
from raylth.engine.models import prunable_weight_names

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def hessian_vector_product(model: nn.Module, batches: Batches, params: list[torch.Tensor],
                           vector: list[torch.Tensor]) -> list[torch.Tensor]:
    """H v, H the Hessian of the mean loss over ``batches`` with respect to
    ``params`` (a list of the model's parameters), ``vector`` shaped like them.
    One double backward per batch; the loss is linear in the batches, so their
    HVPs add up without keeping every batch's graph at once."""
    total = sum(len(y) for _, y in batches)
    was_training = model.training
    model.eval()
    out = [torch.zeros_like(p) for p in params]
    try:
        with torch.enable_grad():
            for x, y in batches:
                loss = F.cross_entropy(model(x), y, reduction="sum") / total
                grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
                dot = sum((g * v).sum() for g, v in zip(grads, vector) if g is not None)
                if not torch.is_tensor(dot) or not dot.requires_grad:
                    continue  # the loss is linear in these parameters: H v = 0
                hv = torch.autograd.grad(dot, params, allow_unused=True)
                for acc, h in zip(out, hv):
                    if h is not None:
                        acc.add_(h)
    finally:
        model.train(was_training)
    return out


def _named_params(model: nn.Module, names) -> tuple[list[str], list[torch.Tensor]]:
    named = dict(model.named_parameters())
    names = list(prunable_weight_names(model) if names is None else names)
    missing = [n for n in names if n not in named]
    if missing:
        raise KeyError(f"not parameters of the model: {missing}")
    return names, [named[n] for n in names]


def hessian_diagonal(model: nn.Module, batches: Batches, probes: int, seed: int,
                     names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Hutchinson's estimate of diag(H): the mean over ``probes`` Rademacher
    vectors z of z * (H z), for the parameters ``names`` (default: every conv
    and linear weight). z is drawn on a CPU generator seeded from ``seed`` (the
    same probes on any device). Returns float32 CPU tensors by name. The
    estimate of H_ii has variance sum_{j != i} H_ij^2 / probes (j over ``names``)."""
    if probes < 1:
        raise ValueError(f"probes ({probes}) must be at least 1")
    names, params = _named_params(model, names)
    total = sum(len(y) for _, y in batches)
    acc = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            # Batches outside, probes inside: one gradient graph per batch,
            # reused by every probe; the generator restarts per batch so
            # probe k is the same vector in every batch.
            for x, y in batches:
                loss = F.cross_entropy(model(x), y, reduction="sum") / total
                grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
                pairs = [(i, g) for i, g in enumerate(grads) if g is not None and g.requires_grad]
                if not pairs:
                    continue  # the loss is linear in these parameters
                g = torch.Generator().manual_seed(seed_for(seed, 0, "hutchinson"))
                for _ in range(probes):
                    z = [(torch.randint(0, 2, p.shape, generator=g) * 2 - 1).to(p.device, p.dtype)
                         for p in params]
                    dot = sum((grad * z[i]).sum() for i, grad in pairs)
                    hz = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
                    for a, zi, h in zip(acc, z, hz):
                        if h is not None:
                            a.add_(zi * h)
    finally:
        model.train(was_training)
    return {n: (a / probes).detach().float().cpu() for n, a in zip(names, acc)}


def top_eigenvalue(model: nn.Module, batches: Batches, iterations: int, seed: int,
                   tol: float | None = None) -> float:
    """Power iteration on H over all trainable parameters: v <- Hv / |Hv| from
    a seeded Gaussian start; returns the last Rayleigh quotient v.Hv. This is
    the eigenvalue of largest magnitude (the top one whenever the largest
    positive curvature exceeds the most negative one in size, as in trained
    networks). Stops early once the estimate changes by less than ``tol``
    (relative), if given."""
    if iterations < 1:
        raise ValueError(f"iterations ({iterations}) must be at least 1")
    params = [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(seed_for(seed, 0, "power-iteration"))
    v = [torch.randn(p.shape, generator=g).to(p.device, p.dtype) for p in params]
    estimate = None
    for _ in range(iterations):
        norm = torch.sqrt(sum((t.double() ** 2).sum() for t in v))
        if float(norm) == 0.0:
            return 0.0  # H v = 0: v is in the null space (or H = 0)
        v = [t / norm.to(t.dtype) for t in v]
        hv = hessian_vector_product(model, batches, params, v)
        previous, estimate = estimate, float(sum((a.double() * b.double()).sum() for a, b in zip(v, hv)))
        if tol is not None and previous is not None and abs(estimate - previous) <= tol * abs(estimate):
            break
        v = hv
    return estimate


def mass_by_mask(diag: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]) -> dict:
    """Hessian-diagonal mass on the kept (mask True) and pruned weights, per
    layer (every name in ``mask``) and in total: sums of |diag| in float64,
    counts, and means (None for an empty side).

    Magnitudes, not signed values: the question is how much curvature the
    pruned coordinates carry, and Hutchinson estimates (and the true diagonal
    of a non-convex loss) can be negative, which would cancel in a signed sum.
    """
    def summary(kept_mass, pruned_mass, kept_count, pruned_count):
        return {"kept_mass": kept_mass, "pruned_mass": pruned_mass,
                "total_mass": kept_mass + pruned_mass,
                "kept_count": kept_count, "pruned_count": pruned_count,
                "kept_mean": kept_mass / kept_count if kept_count else None,
                "pruned_mean": pruned_mass / pruned_count if pruned_count else None}

    layers, totals = {}, [0.0, 0.0, 0, 0]
    for name, m in mask.items():
        d, m = diag[name].detach().cpu().double().abs(), m.cpu().bool()
        if d.shape != m.shape:
            raise ValueError(f"{name}: diagonal shape {tuple(d.shape)} != mask shape {tuple(m.shape)}")
        row = (float(d[m].sum()), float(d[~m].sum()), int(m.sum()), int((~m).sum()))
        layers[name] = summary(*row)
        totals = [t + r for t, r in zip(totals, row)]
    return {"layers": layers, "total": summary(*totals)}
