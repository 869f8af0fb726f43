"""Curvature of the training loss: Hessian-vector products, Hutchinson's
Hessian diagonal, the top eigenvalue, and Hessian mass on kept vs pruned weights.

The loss is the mean cross-entropy over a fixed list of training batches,
computed in float32 without autocast (bf16 is too coarse for second
derivatives). ``bn`` says which network that is:

- "batch" (the default): the network the optimiser sees, in training mode:
  BatchNorm normalises each fixed batch by its own statistics, so the loss is
  still a fixed function of the weights (each batch's term depends on that
  batch only) and does not depend on the running statistics the network holds;
  those are restored after every pass.
- "running": eval mode, BatchNorm on its running statistics (raylth before;
  at init those are mean 0 / variance 1, a network without normalisation).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from raylth.engine.data import seed_for
from raylth.engine.models import prunable_weight_names

Batches = list[tuple[torch.Tensor, torch.Tensor]]
BN_MODES = ("batch", "running")


@contextlib.contextmanager
def loss_mode(model: nn.Module, bn: str):
    """The model as the loss sees it (``bn``: BN_MODES); its mode and its
    buffers (BatchNorm's running statistics) are as before afterwards."""
    if bn not in BN_MODES:
        raise ValueError(f"bn={bn!r}: use one of {BN_MODES}")
    was_training = model.training
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()} if bn == "batch" else {}
    model.train(bn == "batch")
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in buffers:
                    buffer.copy_(buffers[name])
        model.train(was_training)


def hessian_vector_product(model: nn.Module, batches: Batches, params: list[torch.Tensor],
                           vector: list[torch.Tensor], bn: str = "batch") -> list[torch.Tensor]:
    """H v, H the Hessian of the mean loss over ``batches`` with respect to
    ``params`` (a list of the model's parameters), ``vector`` shaped like them.
    One double backward per batch; the loss is linear in the batches, so their
    HVPs add up without keeping every batch's graph at once."""
    total = sum(len(y) for _, y in batches)
    out = [torch.zeros_like(p) for p in params]
    with loss_mode(model, bn), torch.enable_grad():
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
    return out


def _named_params(model: nn.Module, names) -> tuple[list[str], list[torch.Tensor]]:
    named = dict(model.named_parameters())
    names = list(prunable_weight_names(model) if names is None else names)
    missing = [n for n in names if n not in named]
    if missing:
        raise KeyError(f"not parameters of the model: {missing}")
    return names, [named[n] for n in names]


def probe_groups(probes: int, most: int = 10) -> int:
    """How many equal groups the probes split into for standard errors: the
    largest divisor of ``probes`` that is at most ``most``."""
    return max(d for d in range(1, min(probes, most) + 1) if probes % d == 0)


def _restrict(vectors: list[torch.Tensor], names: list[str], mask: dict | None) -> list[torch.Tensor]:
    """``vectors`` (shaped like the parameters ``names``) with the coordinates
    ``mask`` prunes set to 0: the Hessian of a sparse network is that of the
    weights that exist, P H P with P the projection onto them."""
    if not mask:
        return vectors
    return [v * mask[n].to(v.device, v.dtype) if n in mask else v for v, n in zip(vectors, names)]


def hutchinson(model: nn.Module, batches: Batches, probes: int, seed: int, names: list[str] | None = None,
               bn: str = "batch", groups: int | None = None, mask: dict | None = None) -> tuple[dict, dict]:
    """Hutchinson's estimate of diag(H): the mean over ``probes`` Rademacher
    vectors z of z * (H z), for the parameters ``names`` (default: every conv
    and linear weight), and the means of ``groups`` equal consecutive groups
    of probes (default probe_groups(probes)), from which a sum of the estimate
    over any set of coordinates gets its standard error (the spread of that
    sum over the groups / sqrt(groups)). z is drawn on a CPU generator seeded
    from ``seed`` (the same probes on any device). Returns ({name: mean},
    {name: [groups, *shape]}), float32 on the CPU. The estimate of H_ii has
    variance sum_{j != i} H_ij^2 / probes (j over ``names``)."""
    if probes < 1:
        raise ValueError(f"probes ({probes}) must be at least 1")
    groups = probe_groups(probes) if groups is None else groups
    if probes % groups:
        raise ValueError(f"groups ({groups}) must divide probes ({probes})")
    names, params = _named_params(model, names)
    total = sum(len(y) for _, y in batches)
    acc = [torch.zeros((groups, *p.shape), dtype=p.dtype, device=p.device) for p in params]
    # ``mask``: only the weights that exist (probes 0 on pruned ones, so their estimate is exactly 0)
    with loss_mode(model, bn), torch.enable_grad():
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
            for k in range(probes):
                z = [(torch.randint(0, 2, p.shape, generator=g) * 2 - 1).to(p.device, p.dtype) for p in params]
                z = _restrict(z, names, mask)
                dot = sum((grad * z[i]).sum() for i, grad in pairs)
                hz = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
                for a, zi, h in zip(acc, z, hz):
                    if h is not None:
                        a[k * groups // probes].add_(zi * h)
    per_group = probes // groups
    means = {n: (a.sum(0) / probes).detach().float().cpu() for n, a in zip(names, acc)}
    return means, {n: (a / per_group).detach().float().cpu() for n, a in zip(names, acc)}


def hessian_diagonal(model: nn.Module, batches: Batches, probes: int, seed: int,
                     names: list[str] | None = None, bn: str = "batch") -> dict[str, torch.Tensor]:
    """Hutchinson's estimate of diag(H) (see ``hutchinson``), by name."""
    return hutchinson(model, batches, probes, seed, names, bn)[0]


def exact_diagonal(model: nn.Module, batches: Batches, names: list[str] | None = None, bn: str = "batch",
                   most: int = 50_000, mask: dict | None = None) -> dict[str, torch.Tensor]:
    """diag(H) exactly, one Hessian-vector product per coordinate (for
    networks of at most ``most`` such coordinates): the check of the
    estimator. ``mask``: pruned coordinates do not exist (0, not computed)."""
    names, params = _named_params(model, names)
    n = sum(p.numel() for p in params)
    if n > most:
        raise ValueError(f"the exact diagonal of {n} weights is {n} Hessian-vector products; "
                         f"it is offered up to {most} (use probes)")
    out = {}
    for k, (name, p) in enumerate(zip(names, params)):
        diag = torch.zeros(p.numel(), dtype=torch.float64)
        exists = mask[name].reshape(-1) if mask and name in mask else torch.ones(p.numel(), dtype=torch.bool)
        for i in range(p.numel()):
            if not exists[i]:
                continue
            e = [torch.zeros_like(q) for q in params]
            e[k].view(-1)[i] = 1.0
            diag[i] = hessian_vector_product(model, batches, params, e, bn)[k].reshape(-1)[i]
        out[name] = diag.view(p.shape).float()
    return out


def top_eigenvalue(model: nn.Module, batches: Batches, iterations: int, seed: int,
                   tol: float | None = None, bn: str = "batch", mask: dict | None = None) -> float:
    """Power iteration on H over all trainable parameters: v <- Hv / |Hv| from
    a seeded Gaussian start; returns the last Rayleigh quotient v.Hv. This is
    the eigenvalue of largest magnitude (the top one whenever the largest
    positive curvature exceeds the most negative one in size, as in trained
    networks). Stops early once the estimate changes by less than ``tol``
    (relative), if given."""
    if iterations < 1:
        raise ValueError(f"iterations ({iterations}) must be at least 1")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names, params = [n for n, _ in named], [p for _, p in named]
    g = torch.Generator().manual_seed(seed_for(seed, 0, "power-iteration"))
    v = _restrict([torch.randn(p.shape, generator=g).to(p.device, p.dtype) for p in params], names, mask)
    estimate = None
    for _ in range(iterations):
        norm = torch.sqrt(sum((t.double() ** 2).sum() for t in v))
        if float(norm) == 0.0:
            return 0.0  # H v = 0: v is in the null space (or H = 0)
        v = [t / norm.to(t.dtype) for t in v]
        hv = _restrict(hessian_vector_product(model, batches, params, v, bn), names, mask)
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


def signed_by_mask(diag: dict[str, torch.Tensor], groups: dict[str, torch.Tensor] | None,
                   mask: dict[str, torch.Tensor]) -> dict:
    """Signed sums of the Hessian diagonal over the kept (mask True) and the
    pruned weights, per layer and in total, each with its standard error: the
    spread of the same sum over the probe groups / sqrt(groups) (``groups``
    None, or one group: an exact diagonal, error 0), and the per-group sums
    (masks of one Hessian share its probes: their difference's error is that
    of the group-by-group differences, much smaller than the two errors
    combined). A difference between two masks means something only beyond its error."""
    def side(total: float, group_sums: torch.Tensor | None, count: int) -> dict:
        se = 0.0
        if group_sums is not None and len(group_sums) > 1:
            se = float(group_sums.std(unbiased=True)) / math.sqrt(len(group_sums))
        # the per-group sums too: two masks split by the same probes compare group by group (paired)
        groups_out = [] if group_sums is None else [float(v) for v in group_sums]
        return {"sum": total, "se": se, "count": count, "groups": groups_out}

    layers, total = {}, None
    for name, m in mask.items():
        d, m = diag[name].detach().cpu().double(), m.cpu().bool()
        if d.shape != m.shape:
            raise ValueError(f"{name}: diagonal shape {tuple(d.shape)} != mask shape {tuple(m.shape)}")
        g = groups[name].cpu().double().reshape(-1, m.numel()) if groups is not None else None
        flat = m.reshape(-1)
        parts = {}
        for key, where in (("kept", flat), ("pruned", ~flat)):
            gs = g[:, where].sum(1) if g is not None else None
            parts[key] = (float(d.reshape(-1)[where].sum()), gs, int(where.sum()))
        layers[name] = {k: side(*v) for k, v in parts.items()}
        total = parts if total is None else {k: (total[k][0] + parts[k][0],
                                                  None if g is None else total[k][1] + parts[k][1],
                                                  total[k][2] + parts[k][2]) for k in parts}
    return {"layers": layers, "total": {k: side(*v) for k, v in (total or {}).items()}}
