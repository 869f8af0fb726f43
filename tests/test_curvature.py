"""Curvature that means what it says (issue: the Hessian of the network the
optimiser sees, signed sums with standard errors, the exact diagonal as the
estimator's check, one Hessian per distinct network)."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp

from raylth.engine.data import fixed_batches, load_dataset, seed_for
from raylth.engine.masks import full_mask, prune
from raylth.engine.models import build_model, prunable_weight_names
from raylth.engine.sharpness import exact_diagonal, hutchinson, signed_by_mask
from raylth.specs import DataSpec, ModelSpec

pytestmark = pytest.mark.usefixtures("one_thread")


def _direct_hutchinson(model, batches, names, probes, seed):
    """z * (H z) averaged over the same Rademacher probes, H from torch.func
    (jvp of grad) of the loss of the model in training mode on the batches:
    a copy whose BatchNorms keep no running statistics at all."""
    import copy

    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked = False, None, None, None
    params = {n: p.detach() for n, p in model.named_parameters()}
    total = sum(len(y) for _, y in batches)
    model.train()

    def loss(chosen):
        full = params | chosen
        return sum(F.cross_entropy(functional_call(model, full, (x,)), y, reduction="sum") for x, y in batches) / total

    g = torch.Generator().manual_seed(seed_for(seed, 0, "hutchinson"))
    out = {n: torch.zeros_like(params[n]) for n in names}
    for _ in range(probes):
        z = {n: (torch.randint(0, 2, p.shape, generator=g) * 2 - 1).float()
             for n, p in model.named_parameters() if n in names}
        _, hz = jvp(grad(loss), ({n: params[n] for n in names},), (z,))
        for n in names:
            out[n] += z[n] * hz[n] / probes
    return out


def test_the_hessian_is_that_of_the_network_in_training_mode(cifar10_subset):
    """ResNet-18 width 8 at init on CIFAR-10: BatchNorm on the batch's own
    statistics, whatever running statistics the network holds, which are left
    as they were."""
    data = load_dataset(DataSpec("cifar10"), cifar10_subset(20))
    model = build_model(ModelSpec("resnet18", width=8), data.input_shape, 10, seed=0)
    batches = fixed_batches(data, 2, 16, seed=0)
    names = [n for n in prunable_weight_names(model) if n in ("conv1.weight", "fc.weight", "linear.weight")]
    names = names or prunable_weight_names(model)[:1]
    ours, _ = hutchinson(model, batches, probes=3, seed=1, names=names, bn="batch")
    direct = _direct_hutchinson(model, batches, names, probes=3, seed=1)
    for n in names:
        assert torch.allclose(ours[n], direct[n], rtol=1e-3, atol=1e-6 * float(direct[n].abs().max())), n
    # other running statistics: the same Hessian; they are restored afterwards
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    held = {n: b.clone() for n, b in model.named_buffers()}
    again, _ = hutchinson(model, batches, probes=3, seed=1, names=names, bn="batch")
    assert all(torch.allclose(ours[n], again[n], rtol=1e-4, atol=1e-8) for n in names)
    assert all(torch.equal(held[n], b) for n, b in model.named_buffers())
    eval_mode, _ = hutchinson(model, batches, probes=3, seed=1, names=names, bn="running")
    assert not all(torch.allclose(ours[n], eval_mode[n], rtol=1e-2) for n in names)  # a different network


def _small():
    data = load_dataset(DataSpec("digits"))
    model = build_model(ModelSpec("lenet", width=12), data.input_shape, 10, seed=0)
    return model, fixed_batches(data, 2, 64, seed=0)


def _exact_by_autograd(model, batches, names):
    """diag of torch.autograd.functional.hessian over the flattened weights ``names``."""
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    total = sum(len(y) for _, y in batches)
    model.eval()

    def loss(flat):
        chosen = {n: t.view(s) for n, t, s in zip(names, torch.split(flat, sizes), shapes)}
        full = {k: v.detach() for k, v in params.items()} | chosen
        return sum(F.cross_entropy(functional_call(model, full, (x,)), y, reduction="sum") for x, y in batches) / total

    flat = torch.cat([params[n].detach().flatten() for n in names]).double().float()
    diag = torch.autograd.functional.hessian(loss, flat).diagonal()
    return {n: t.view(s) for n, t, s in zip(names, torch.split(diag, sizes), shapes)}


def test_the_exact_diagonal_is_autograds():
    model, batches = _small()
    names = prunable_weight_names(model)
    assert sum(dict(model.named_parameters())[n].numel() for n in names) < 2000
    ours = exact_diagonal(model, batches, names)
    reference = _exact_by_autograd(model, batches, names)
    for n in names:
        assert torch.allclose(ours[n], reference[n], rtol=1e-4, atol=1e-7), n


def test_signed_sums_lie_within_three_standard_errors_of_the_exact_ones():
    """Over 5 probe seeds x 3 random masks x layers x kept/pruned, at least 95%
    of the estimated sums are within 3 of their stated standard errors of the
    exact sums (and the errors are not vacuous: the mean |error| is close to
    the stated one)."""
    model, batches = _small()
    names = prunable_weight_names(model)
    exact = exact_diagonal(model, batches, names)
    weights = {n: p.detach() for n, p in model.named_parameters()}
    masks = [prune("random_layerwise", weights, full_mask(model), 0.5, torch.Generator().manual_seed(k))
             for k in range(3)]
    inside, total, ratios = 0, 0, []
    for seed in range(5):
        mean, groups = hutchinson(model, batches, probes=60, seed=seed, names=names)
        for mask in masks:
            estimated, truth = signed_by_mask(mean, groups, mask), signed_by_mask(exact, None, mask)
            for name in names:
                for side in ("kept", "pruned"):
                    e, t = estimated["layers"][name][side], truth["layers"][name][side]
                    total += 1
                    inside += abs(e["sum"] - t["sum"]) <= 3 * e["se"]
                    ratios.append(abs(e["sum"] - t["sum"]) / e["se"])
    assert inside / total >= 0.95, f"{inside}/{total}"
    assert 0.3 < sum(ratios) / len(ratios) < 1.5  # |error| / stated se: about sqrt(2/pi) = 0.8


def test_one_hessian_job_per_distinct_network_in_the_paper_sweep():
    from raylth.api import load_sweep
    from raylth.sweep.jobs import sweep_jobs

    sweep = load_sweep("sweeps/paper_resnet18_cifar10.yaml")
    jobs = sweep_jobs(sweep.trials)
    hessians = [s for j in jobs for s in j.specs if s.kind == "hessian"]
    networks = {s.network for j in jobs for s in j.specs if s.kind == "sharpness"}
    seeds = {t.spec.seeds for t in sweep.trials}
    assert len(hessians) == len(networks) == len(seeds) == 2  # all methods and rewind points share them
    # and one dense training per seed: the runs differing only in what they keep train together
    dense = {s.replace(save_at=()).id for j in jobs for s in j.specs
             if s.kind == "train" and s.data.name != "distilled"}
    assert len(dense) == len(seeds)


def test_the_instability_sweep_trains_one_dense_network_per_seed():
    from raylth.api import load_sweep
    from raylth.sweep.jobs import sweep_jobs

    sweep = load_sweep("sweeps/instability_resnet18_cifar10.yaml")
    jobs = sweep_jobs(sweep.trials)
    holders = [j for j in jobs if sum(s.kind == "train" for s in j.specs) > 1]
    assert len(holders) == len({t.spec.seeds for t in sweep.trials}) == 3
    assert all(len([s for s in j.specs if s.kind == "train"]) == 4 for j in holders)  # k in {0, 100, 500, 2000}
    for job in jobs:  # every other job holding one of them waits for its seed's run
        for spec in job.specs:
            if spec.kind == "train" and job not in holders:
                maker = next(h for h in holders if spec.id in h.ids)
                assert maker.label in job.needs


def test_masks_of_one_hessian_are_compared_group_by_group():
    """Two masks split by the same probes: the error of their difference is
    that of the paired group differences, smaller than the two errors combined."""
    from types import SimpleNamespace

    from raylth.reporting.sharpness import _paired

    model, batches = _small()
    names = prunable_weight_names(model)
    mean, groups = hutchinson(model, batches, probes=40, seed=0, names=names)
    weights = {n: p.detach() for n, p in model.named_parameters()}
    rows = []
    for k in range(2):
        mask = prune("random_layerwise", weights, full_mask(model), 0.5, torch.Generator().manual_seed(k))
        t = signed_by_mask(mean, groups, mask)["total"]["pruned"]
        rows.append(SimpleNamespace(hessian="h", pruned=t["sum"] / t["count"], pruned_se=t["se"] / t["count"],
                                    pruned_groups=[v / t["count"] for v in t["groups"]]))
    diff, paired = _paired(*rows)
    assert diff == pytest.approx(rows[0].pruned - rows[1].pruned)
    assert 0 < paired < (rows[0].pruned_se ** 2 + rows[1].pruned_se ** 2) ** 0.5
