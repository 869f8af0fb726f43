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


def test_the_paper_sweep_measures_each_trained_network_once_and_its_stability_beside_controls():
    """The paper's curvature: each trained network's own Hessian (one job per
    distinct network, on one real batch of 64), over its own weights; its
    instability: dense at k = 0 and 2,000 iterations, distilled tickets and
    their random control at k = 0, IMP-rewind and random pruning at 2,000, at
    the same levels; IDC's condensation and protocol."""
    from raylth.api import load_sweep
    from raylth.plugins.analyses.sharpness import SharpnessSpec
    from raylth.stages.registry import level_of
    from raylth.sweep.jobs import sweep_jobs

    sweep = load_sweep("sweeps/paper_resnet18_cifar10.yaml")
    jobs = sweep_jobs(sweep.trials)
    specs = [s for j in jobs for s in j.specs]
    sharp = [s for s in specs if isinstance(s, SharpnessSpec)]
    hessians = [s for s in specs if s.kind == "hessian"]
    assert len(hessians) == len({s.network for s in hessians}) == len(sharp)
    for s in sharp:
        network = s.network.split(":")[0]
        assert s.network.endswith(":final") and (s.masks == (network,) or not s.masks)
        assert (s.batches, s.batch_size, s.bn) == (1, 64, "batch") and s.weights == ("existing" if s.masks else "all")
    lmcs = [s for s in specs if s.kind == "lmc"]
    by_id = {s.id: s for s in specs}
    kinds = {(by_id[s.parent].kind if s.parent in by_id else "?", getattr(by_id.get(s.parent), "mask", None),
              str(s.spawn)) for s in lmcs}
    assert {("train", None, "0it"), ("train", None, "2000it"), ("imp", None, "2000it"), ("branch", None, "2000it"),
            ("ticket", "trunk", "0it"), ("ticket", "random", "0it")} <= kinds
    assert all(s.alphas == 11 and s.children == 2 for s in lmcs)
    assert {level_of(by_id[s.parent]) for s in lmcs if s.parent in by_id} == {0, 4, 8}
    distill = next(s for s in specs if s.kind == "distill")
    assert (distill.method, distill.factor, distill.iterations, distill.outer_loop, distill.n_data) == \
        ("idc", 2, 2000, 100, 2000) and distill.data.norm == "dc"
    assert {s.protocol for s in specs if s.kind == "distill_eval"} == {"idc"} and sweep.precision == "float32"
    # one dense training per seed: the runs differing only in what they keep train together
    dense = {s.replace(save_at=()).id for s in specs if s.kind == "train" and s.data.name != "distilled"}
    assert len(dense) == len({t.spec.seeds for t in sweep.trials}) == 2


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


def test_the_signed_split_is_the_direct_sum_over_kept_and_pruned_weights():
    """Guards the split against a direct computation (a swap of kept and pruned
    once passed every test): integer diagonals, so every float64 sum is exact."""
    model, _ = _small()
    names = prunable_weight_names(model)
    weights = {n: p.detach() for n, p in model.named_parameters()}
    mask = prune("global_magnitude", weights, full_mask(model), 0.7)
    g = torch.Generator().manual_seed(0)
    diag = {n: torch.randint(-50, 50, weights[n].shape, generator=g).float() for n in names}
    groups = {n: torch.randint(-50, 50, (4, *weights[n].shape), generator=g).float() for n in names}
    split = signed_by_mask(diag, groups, mask)
    for side, pick in (("kept", lambda m: m), ("pruned", lambda m: ~m)):
        for n in names:
            row = split["layers"][n][side]
            assert row["sum"] == float(diag[n][pick(mask[n])].double().sum())
            assert row["count"] == int(pick(mask[n]).sum())
            assert row["groups"] == [float(gr[pick(mask[n])].double().sum()) for gr in groups[n]]
        assert split["total"][side]["sum"] == sum(float(diag[n][pick(mask[n])].double().sum()) for n in names)
    assert split["total"]["pruned"]["count"] > split["total"]["kept"]["count"]  # 70% pruned: sides told apart


def test_a_sparse_networks_hessian_counts_only_the_weights_it_has():
    """The Hessian of a pruned network is over its existing weights (P H P): its
    exact diagonal is H's on them and 0 on pruned ones; Hutchinson's estimate
    is exactly 0 there and within 3 standard errors of the exact sums on them."""
    model, batches = _small()
    names = prunable_weight_names(model)
    weights = {n: p.detach() for n, p in model.named_parameters()}
    mask = prune("global_magnitude", weights, full_mask(model), 0.6)
    full, sparse = exact_diagonal(model, batches, names), exact_diagonal(model, batches, names, mask=mask)
    for n in names:
        assert torch.equal(sparse[n][mask[n]], full[n][mask[n]]) and bool((sparse[n][~mask[n]] == 0).all())
    mean, groups = hutchinson(model, batches, probes=60, seed=0, names=names, mask=mask)
    estimated, truth = signed_by_mask(mean, groups, mask)["total"], signed_by_mask(sparse, None, mask)["total"]
    assert all(bool((mean[n][~mask[n]] == 0).all()) for n in names)
    assert abs(estimated["kept"]["sum"] - truth["kept"]["sum"]) <= 3 * estimated["kept"]["se"]
    assert estimated["pruned"]["sum"] == 0.0
    unrestricted, _ = hutchinson(model, batches, probes=60, seed=0, names=names)
    assert not torch.allclose(unrestricted[names[0]][mask[names[0]]], mean[names[0]][mask[names[0]]])


def test_methods_differ_only_beyond_the_spread_over_seeds():
    """The verdict is Student's paired t over seeds (scipy's ttest_rel), not
    the probe noise of one seed's Hessian."""
    from scipy import stats

    from raylth.plugins.analyses.sharpness.report import paired_t

    a, b = [1.0, 1.4, 0.9, 1.3], [0.5, 1.2, 0.2, 1.1]
    test = paired_t([x - y for x, y in zip(a, b)])
    reference = stats.ttest_rel(a, b)
    assert test["t"] == pytest.approx(reference.statistic) and test["p"] == pytest.approx(reference.pvalue)
    assert test["df"] == 3 and test["differ"] == (reference.pvalue < 0.05)
    # two seeds that disagree in sign: no difference, however small one Hessian's probe error
    assert paired_t([0.3, -0.2])["differ"] is False
    assert paired_t([0.3])["differ"] is None  # one seed: no verdict


def test_a_trained_tickets_own_hessian_and_a_dense_split_read_back_as_direct_sums(tmp_path):
    """Through the stages: an IMP level's own Hessian (network: own) is over
    its weights only (pruned sums 0, weights = those it keeps) and a dense
    network's diagonal split by that mask equals the direct sums of the stored
    diagonal over the mask's kept and pruned weights."""
    from raylth.specs import ImpLevelSpec, PruneSpec, Step, TrainSpec
    from raylth.plugins.analyses.sharpness import SharpnessSpec
    from raylth.stages import StageContext, run_stage
    from raylth.store import Store

    ctx = StageContext(store=Store(tmp_path), device=torch.device("cpu"))
    level = ImpLevelSpec(data=DataSpec("digits"), model=ModelSpec("lenet", width=12), level=1,
                         train=TrainSpec(lr=0.05, batch_size=128, duration=Step(1, "ep")), prune=PruneSpec(fraction=0.6))
    ticket = run_stage(level, ctx)
    mask = ticket.mask()
    settings = dict(probes=10, batches=1, batch_size=64, iterations=3)
    own = run_stage(SharpnessSpec(network=f"{level.id}:final", masks=(level.id,), weights="existing", **settings), ctx)
    diag = ctx.store.get(own.metrics["hessian"]).load("hessian_diagonal.pt")
    total = own.metrics["signed"][level.id]["total"]
    assert total["pruned"]["sum"] == 0.0 and total["kept"]["count"] == own.metrics["weights"] == sum(
        int(m.sum()) for m in mask.values())
    assert total["kept"]["sum"] == pytest.approx(sum(float(d.double().sum()) for d in diag.values()), rel=1e-9)
    dense = level.trunk_root().id
    split = run_stage(SharpnessSpec(network=f"{dense}:init", masks=(level.id,), **settings), ctx)
    diag = ctx.store.get(split.metrics["hessian"]).load("hessian_diagonal.pt")
    total = split.metrics["signed"][level.id]["total"]
    assert total["kept"]["sum"] == pytest.approx(sum(float(diag[n][m].double().sum()) for n, m in mask.items()))
    assert total["pruned"]["sum"] == pytest.approx(sum(float(diag[n][~m].double().sum()) for n, m in mask.items()))
    assert split.metrics["weights"] is None  # a split of another network's Hessian is no network's own
