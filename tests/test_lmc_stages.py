"""Stages child, lmc, sharpness, landscape on digits: measurement checks and bad inputs."""

import pytest
import torch
import torch.nn.functional as F

from raylth.errors import SpecError, StoreError
from raylth.specs import DataSpec, ImpLevelSpec, ModelSpec, Step, TrainSpec
from raylth.plugins.analyses.lmc import ChildSpec, LmcSpec
from raylth.plugins.analyses.landscape import LandscapeSpec
from raylth.plugins.analyses.sharpness import SharpnessSpec
from raylth.stages import StageContext, run_stage
from raylth.store import Store


TRAIN = TrainSpec(lr=0.05, batch_size=64, duration=Step.parse("4ep"))


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, fast_path):  # the tests on it run in both modes (conftest)
    return StageContext(store=Store(tmp_path_factory.mktemp("lmc")), device=torch.device("cpu"))


@pytest.fixture(scope="module")
def ticket(ctx):
    spec = ImpLevelSpec(data=DataSpec("digits"), model=ModelSpec("lenet"), train=TRAIN, level=2)
    return run_stage(spec, ctx)


def tree(store: Store) -> dict:
    return {p: p.stat().st_mtime_ns for p in store.root.rglob("*")}


def test_children_with_identical_seeds_are_identical_and_stable(ctx, ticket):
    lmc = run_stage(LmcSpec(parent=ticket.id, noise="none", alphas=5, train_eval=300), ctx)
    a, b = (ctx.store.get(i).weights("final") for i in lmc.metrics["children"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert lmc.metrics["instability_test"] == 0.0 and lmc.metrics["instability_train"] == 0.0
    assert lmc.metrics["loss_barrier"] == pytest.approx(0.0, abs=1e-9)
    assert lmc.metrics["stable"] is True


def test_children_differ_only_in_the_noise_named(ctx, ticket):
    lmc = run_stage(LmcSpec(parent=ticket.id, noise="order", alphas=5, train_eval=300), ctx)
    children = [ctx.store.get(i) for i in lmc.metrics["children"]]
    a, b = (c.weights("final") for c in children)
    assert not all(torch.equal(a[k], b[k]) for k in a)
    seeds = [ChildSpec.from_dict(c.spec) for c in children]
    assert seeds[0].parent == seeds[1].parent == ticket.id
    # children start exactly at the parent's step-k weights and keep its mask
    start = children[0].weights("init")
    assert all(torch.equal(start[k], v) for k, v in ticket.weights("init").items())
    mask = ticket.mask()
    assert all(torch.equal(children[1].mask()[k], mask[k]) for k in mask)
    assert all(bool((b[k][~mask[k]] == 0).all()) for k in mask)


def _independent_errors(model, wa, wb, x, y, alphas, bf16=False):
    errors = []
    for alpha in alphas:
        state = {k: (1 - alpha) * wa[k] + alpha * wb[k] if wa[k].is_floating_point() else wa[k] for k in wa}
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            errors.append(1.0 - (model(x).argmax(1) == y).double().mean().item())
    return errors


def test_reported_instability_equals_an_independent_recomputation(ctx, ticket, fast_path):
    spec = LmcSpec(parent=ticket.id, noise="both", alphas=9, train_eval=400)
    lmc = run_stage(spec, ctx)
    data = ctx.dataset(DataSpec("digits"))
    model = ctx.model(ModelSpec("lenet"), data, seed=0)
    wa, wb = (ctx.store.get(i).weights("final") for i in lmc.metrics["children"])
    alphas = [i / 8 for i in range(9)]
    x_test, y_test = data.normalize(data.test_x.float()), data.test_y
    x_train, y_train = data.normalize(data.train_x[:400].float()), data.train_y[:400]
    test = _independent_errors(model, wa, wb, x_test, y_test, alphas, fast_path)
    train = _independent_errors(model, wa, wb, x_train, y_train, alphas, fast_path)
    expected_test = max(test) - (test[0] + test[-1]) / 2
    expected_train = max(train) - (train[0] + train[-1]) / 2
    assert lmc.metrics["instability_test"] == pytest.approx(expected_test, abs=1e-6)
    assert lmc.metrics["instability_train"] == pytest.approx(expected_train, abs=1e-6)
    assert lmc.metrics["pairs"][0]["test_err"] == pytest.approx(test, abs=1e-6)
    # and the loss at the midpoint
    model.load_state_dict({k: 0.5 * wa[k] + 0.5 * wb[k] for k in wa})
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast_path):
        mid_loss = F.cross_entropy(model(x_test).float(), y_test).item()
    # bf16 logits (8-bit mantissa) round differently in the stage's batches of 1,024
    assert lmc.metrics["pairs"][0]["test_loss"][4] == pytest.approx(mid_loss, rel=2e-3 if fast_path else 1e-5)


def test_children_are_shared_between_analyses(ctx, ticket):
    first = run_stage(LmcSpec(parent=ticket.id, noise="both", alphas=3, train_eval=100), ctx)
    second = run_stage(LmcSpec(parent=ticket.id, noise="both", alphas=9, train_eval=400), ctx)
    assert first.id != second.id and first.metrics["children"] == second.metrics["children"]


def test_bad_inputs_fail_clearly_and_change_nothing(ctx, ticket):
    before = tree(ctx.store)
    with pytest.raises(StoreError, match="imp_0000000000000000: no such network"):
        run_stage(LmcSpec(parent="imp_0000000000000000"), ctx)
    with pytest.raises(StoreError, match="spawn: 400it is not before the end"):
        run_stage(LmcSpec(parent=ticket.id, spawn=Step.parse("400it")), ctx)
    with pytest.raises(StoreError, match="kept no checkpoint at 10it"):
        run_stage(ChildSpec(parent=ticket.id, spawn=Step.parse("10it")), ctx)
    assert tree(ctx.store) == before
    with pytest.raises(SpecError, match="lmc.alphas: 1 points"):
        LmcSpec(parent=ticket.id, alphas=1)
    with pytest.raises(SpecError, match="lmc.children: 1 is too few"):
        LmcSpec(parent=ticket.id, children=1)
    with pytest.raises(SpecError, match="parent: 'train_xyz'"):
        LmcSpec(parent="train_xyz")


def test_sharpness_splits_the_hessian_diagonal_by_masks(ctx, ticket):
    dense = ctx.store.get(ImpLevelSpec(data=DataSpec("digits"), model=ModelSpec("lenet"), train=TRAIN).trunk_root().id)
    spec = SharpnessSpec(network=f"{dense.id}:final", masks=(ticket.id,), probes=8, iterations=5, batches=2,
                         batch_size=64)
    result = run_stage(spec, ctx)
    m = result.metrics
    assert m["top_eigenvalue"] > 0
    total = m["masks"][ticket.id]["total"]
    assert total["kept_count"] + total["pruned_count"] == sum(v.numel() for v in ticket.mask().values())
    assert total["pruned_count"] == sum(int((~v).sum()) for v in ticket.mask().values())
    hessian = ctx.store.get(result.metrics["hessian"])  # computed once per network, split by any mask
    diag, groups = hessian.load("hessian_diagonal.pt"), hessian.load("probe_groups.pt")
    assert total["total_mass"] == pytest.approx(sum(float(diag[k].abs().double().sum()) for k in ticket.mask()))
    signed = m["signed"][ticket.id]["total"]
    assert signed["pruned"]["sum"] + signed["kept"]["sum"] == pytest.approx(
        sum(float(diag[k].double().sum()) for k in ticket.mask()))
    assert signed["pruned"]["se"] > 0 and groups["1.weight"].shape == (8, *diag["1.weight"].shape)
    other = run_stage(spec.replace(masks=()), ctx)  # another split of the same network: no second Hessian
    assert other.metrics["hessian"] == hessian.id and hessian.metrics["groups"] == 8
    with pytest.raises(StoreError, match="dense network and has no mask"):
        run_stage(SharpnessSpec(network=dense.id, masks=(dense.id,)), ctx)


def test_a_random_mask_prunes_its_share_of_curvature(ctx, ticket):
    """Random pruning takes weights regardless of curvature: in each layer the share
    of |diag| it prunes is close to the share of weights it prunes there (a wrong
    split would not be)."""
    from raylth.plugins.methods.controls import BranchSpec

    dense = ImpLevelSpec(data=DataSpec("digits"), model=ModelSpec("lenet"), train=TRAIN).trunk_root()
    control = run_stage(BranchSpec(trunk=ImpLevelSpec.from_dict(ticket.spec), method="random_prune"), ctx)
    result = run_stage(SharpnessSpec(network=f"{dense.id}:init", masks=(control.id,), probes=16, iterations=5,
                                     batches=2, batch_size=64), ctx)
    split = result.metrics["masks"][control.id]
    for name, layer in split["layers"].items():
        share = layer["pruned_count"] / (layer["pruned_count"] + layer["kept_count"])
        assert layer["pruned_mass"] / layer["total_mass"] == pytest.approx(share, abs=0.05), name
    total = split["total"]
    expected = sum(layer["pruned_count"] / (layer["pruned_count"] + layer["kept_count"]) * layer["total_mass"]
                   for layer in split["layers"].values()) / total["total_mass"]
    assert total["pruned_mass"] / total["total_mass"] == pytest.approx(expected, abs=0.03)


def test_landscape_through_two_children_and_their_parent(ctx, ticket):
    lmc = run_stage(LmcSpec(parent=ticket.id, noise="both", alphas=3, train_eval=100), ctx)
    a, b = lmc.metrics["children"]
    spec = LandscapeSpec(networks=(f"{a}:final", f"{b}:final", f"{ticket.id}:init"), resolution=5, limit=200)
    result = run_stage(spec, ctx)
    assert result.has_file("landscape.png")
    assert len(result.metrics["err"]) == 5 and len(result.metrics["err"][0]) == 5
    assert len(result.metrics["points"]) == 3


def test_instability_quickstart_shows_a_dense_network_unstable_at_init_and_stable_later(tmp_path):
    """The shipped instability quickstart's claim, for seed 0's dense network: children
    spawned at init end in different basins (> 5 points of test error above the
    endpoints), children spawned at k = 100it in one (< 2 points)."""
    from pathlib import Path

    from raylth.sweep.config import load_sweep
    from raylth.sweep.jobs import trial_jobs

    sweep = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "instability_quickstart.yaml")
    ctx = StageContext(store=Store(tmp_path), device=torch.device("cpu"))
    instability = {}
    for trial in sweep.trials:
        if trial.label in ("seed=0,rewind=0it,method=dense", "seed=0,rewind=100it,method=dense"):
            specs = [s for job in trial_jobs(trial) for s in job.specs if s.kind != "landscape"]
            lmc = [run_stage(spec, ctx) for spec in specs][-1]
            assert lmc.kind == "lmc"
            instability[str(trial.spec.prune.rewind)] = lmc.metrics["instability_test"]
    assert instability["0it"] > 0.05 and instability["100it"] < 0.02, instability
