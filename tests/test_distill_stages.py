"""Stages distill / experts / distill_eval / ticket / maskimp and the methods
distill, distilled_imp and mask_then_imp on digits (CPU, LeNet; ConvNet-3 is
no good on 8x8 digits).

Measured here (2 busy cores; see the assertions' messages for a run's own numbers):
ipc-1 sets under 300 epochs x 3 seeds of evaluation: random subset 0.68, DM 0.875,
GM 0.882, MTT 0.866. distilled_imp (DM ipc 10, 4 epochs of batch 1 per level =
400 points) at level 8 (83.2% sparse): within 0.2-1.1 points of dense over 6 seeds
(mean 0.65), ordinary IMP uses 25,160 points per level (1,258 images x 20 epochs): 62.9x more.
"""

import math

import pytest
import torch

from raylth.engine import distill as D
from raylth.engine.data import load_dataset
from raylth.engine.models import build_model
from raylth.errors import DataError, RaylthError, SpecError
from raylth.specs import DataSpec, DistillEvalSpec, DistillSpec, ModelSpec, TrialSpec
from raylth.specs.distill import DISTILL_METHODS
from raylth.plugins.distillers.mtt.experts import ExpertOptions
from raylth.plugins.methods.distilled import TicketSpec
from raylth.stages import METHODS, StageContext, run_stage
from raylth.plugins.distillers import dm as dm_plugin
from raylth.plugins.distillers.mtt import experts as experts_stage
from raylth.plugins.methods.distilled.methods import distilled_prepare, mask_then_imp, ticket
from raylth.store import Store
from raylth.sweep.config import Trial, parse_sweep
from raylth.sweep.jobs import trial_jobs

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
DIGITS, LENET = DataSpec("digits"), ModelSpec("lenet")
EVAL = DistillEvalSpec(model=LENET, epochs=300, lr=0.01, batch_size=256, seeds=(0, 1, 2))
MARGIN = 0.05  # measured gaps are 0.18-0.20


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return StageContext(store=Store(tmp_path_factory.mktemp("distill")), device=CPU)


def tree(store: Store) -> dict:
    return {p: p.stat().st_mtime_ns for p in store.root.rglob("*")} if store.root.exists() else {}


def lenet(seed):
    return build_model(LENET, (1, 8, 8), 10, seed=seed)


# -- the distill stage -------------------------------------------------------------------
def test_distill_stage_is_stored_once_and_usable_as_training_data(ctx, monkeypatch, tmp_path):
    spec = DistillSpec(data=DIGITS, method="dm", ipc=2, iterations=10, model=LENET)
    art = run_stage(spec, ctx)
    assert art.id == spec.id and art.metrics["images"] == 20 and art.metrics["method"] == "dm"
    record = art.load("distilled.pt")
    assert record["images"].shape == (20, 1, 8, 8)
    assert record["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    assert torch.equal(record["mean"], torch.zeros(1, dtype=torch.float64)) and "zca_matrix" not in record

    def boom(*args, **kwargs):
        raise AssertionError("a stored distillation was computed again")

    monkeypatch.setattr(dm_plugin, "distill_dm", boom)
    again = run_stage(spec, StageContext(store=Store(ctx.store.root), device=CPU))
    assert again.path == art.path and again.metrics == art.metrics
    # a different spec is a different artifact; unused fields (syn_steps for DM) do not change the id
    assert DistillSpec(data=DIGITS, method="dm", ipc=2, iterations=10, model=LENET, syn_steps=7).id == spec.id

    # as training data: the stored images, the real test split normalised
    data = ctx.dataset(spec.dataset())
    digits = load_dataset(DIGITS)
    assert torch.equal(data.train_x, record["images"]) and data.num_classes == 10
    assert torch.allclose(data.test_x, digits.normalize(digits.test_x.float()))
    assert data.normalize(data.train_x).equal(data.train_x)  # already normalised: mean 0, std 1
    # and through the tensors data set, from the artifact's file
    tensors = load_dataset(DataSpec("tensors", path=str(art.path / "distilled.pt"), test="digits"))
    assert torch.allclose(tensors.normalize(tensors.train_x), record["images"], atol=1e-5)


@pytest.fixture(scope="module")
def random_baseline(ctx):
    art = run_stage(EVAL.of(DistillSpec(data=DIGITS, ipc=1), random=True), ctx)
    assert art.metrics["random"] is True and art.metrics["images"] == 10
    return art.metrics["test_acc"]


def example(method: str) -> DistillSpec:
    """The small digits distillation the method's plugin declares."""
    declared = DISTILL_METHODS[method].example
    if isinstance(declared, str):
        pytest.skip(f"{method}: {declared}")
    return DistillSpec.from_dict({"data": {"name": "digits"}, "ipc": 1, "iterations": 100,
                                  "model": {"name": "lenet"}, "method": method} | declared)


@pytest.mark.parametrize("method", sorted(name for name, m in DISTILL_METHODS.items() if m.synthesizes))
def test_every_method_beats_a_random_subset_of_the_same_size(method, ctx, random_baseline):
    spec = example(method)
    evaluation = run_stage(EVAL.of(spec), ctx)
    m = evaluation.metrics
    assert m["distill"] == spec.id and len(m["accs"]) == 3 and m["images"] == 10
    assert math.isclose(m["test_acc"], sum(m["accs"]) / 3) and m["test_acc_std"] >= 0
    assert m["test_acc"] >= random_baseline + MARGIN, (method, m["test_acc"], random_baseline)
    if method == "mtt":  # with lr left out, the learned lr trains the evaluation networks, as in MTT
        learned = run_stage(EVAL.replace(lr=None, epochs=20, seeds=(0,)).of(spec), ctx).metrics["lr"]
        assert learned == pytest.approx(float(ctx.store.get(spec.id).load("distilled.pt")["lr"])) != 0.01


def test_mtt_experts_are_one_shared_artifact(ctx, monkeypatch):
    base = example("mtt")
    first = run_stage(base, ctx)  # stored by the test above (or now)
    experts = ctx.store.get(first.metrics["experts"])
    assert experts.kind == "experts" and experts.metrics["n"] == 2
    assert experts.metrics["epochs"] == 5  # only max_start_epoch + expert_epochs of the 10 are trained
    monkeypatch.setattr(experts_stage, "train_experts", lambda *a, **k: pytest.fail("experts trained twice"))
    other = run_stage(base.replace(iterations=3, lr_img=50.0, seed=5), ctx)
    assert other.metrics["experts"] == experts.id
    assert sum(1 for a in ctx.store.artifacts() if a.kind == "experts") == 1
    trajectory = experts_stage.load_experts(experts)
    assert len(trajectory) == 2 and len(trajectory[0]) == 6  # theta_0 .. theta_5


# -- importing released sets ----------------------------------------------------------------
def _subset(ipc=2, seed=3):
    digits = load_dataset(DIGITS)
    x = digits.normalize(digits.train_x.float())
    return digits, x, *D.random_subset(x, digits.train_y, ipc, torch.Generator().manual_seed(seed))


def test_import_of_an_mtt_release_evaluates_as_is(ctx, tmp_path):
    digits, _, images, labels = _subset()
    path = tmp_path / "images_labels.pt"
    torch.save({"images": images, "labels": labels}, path)  # MTT: normalised images and labels
    spec = DistillSpec(data=DIGITS, method="import", path=str(path), ipc=2)
    evaluation = run_stage(DistillEvalSpec(model=LENET, epochs=60, seeds=(0,)).of(spec), ctx)
    expected = D.evaluate_images(images, labels, digits, lenet, epochs=60, lr=0.01, batch_size=256, seeds=[0])
    assert evaluation.metrics["test_acc"] == expected["mean"]
    stored = ctx.store.get(spec.id)
    assert torch.equal(stored.load("distilled.pt")["images"], images)
    assert len(stored.metrics["source_sha256"]) == 64
    # pixel space: the same images in the data set's units
    pixels = tmp_path / "pixels.pt"
    torch.save({"images": images * digits.std[0] + digits.mean[0], "labels": labels}, pixels)
    pixel_spec = DistillSpec(data=DIGITS, method="import", path=str(pixels), ipc=2, space="pixel")
    assert torch.allclose(run_stage(pixel_spec, ctx).load("distilled.pt")["images"], images, atol=1e-5)
    # unit: [0, 1] images, as IDC releases its sets (digits' pixel_max is 16)
    unit = tmp_path / "unit.pt"
    torch.save([(images * digits.std[0] + digits.mean[0]) / 16, labels], unit)
    unit_spec = DistillSpec(data=DIGITS, method="import", path=str(unit), ipc=2, space="unit")
    assert torch.allclose(run_stage(unit_spec, ctx).load("distilled.pt")["images"], images, atol=1e-5)


@pytest.mark.parametrize("zca_space", ["pixels", "normalized"])
def test_import_of_a_zca_whitened_release_in_two_files(ctx, tmp_path, zca_space):
    """MTT's release: images_best.pt (whitened from raw [0, 1] pixels, fitted
    on the whole training split) and labels_best.pt; ``normalized`` is the
    space raylth whitened in before, still importable as such."""
    digits, _, _, labels = _subset()
    zca = D.fit_zca_space(digits, zca_space, 0.1)
    raw = D.random_subset(digits.train_x, digits.train_y, 2, torch.Generator().manual_seed(3))[0]
    whitened = zca.apply(D.space_input(digits, raw, zca_space))
    torch.save(whitened, tmp_path / "images_best.pt")
    torch.save(labels, tmp_path / "labels_best.pt")
    spec = DistillSpec(data=DIGITS, method="import", path=str(tmp_path / "images_best.pt"),
                       labels=str(tmp_path / "labels_best.pt"), ipc=2, zca=True, zca_space=zca_space)
    evaluation = run_stage(DistillEvalSpec(model=LENET, epochs=60, seeds=(1,)).of(spec), ctx)
    expected = D.evaluate_images(whitened, labels, digits, lenet, epochs=60, lr=0.01, batch_size=256, seeds=[1],
                                 zca=zca)
    assert evaluation.metrics["test_acc"] == pytest.approx(expected["mean"], abs=1e-9)
    # as training data the real test split is whitened with the same ZCA, from the same space
    data = ctx.dataset(spec.dataset())
    assert torch.allclose(data.test_x, zca.apply(D.space_input(digits, digits.test_x, zca_space)), atol=1e-5)
    assert torch.equal(data.train_x, whitened)


def test_import_of_an_idc_release_in_one_file(ctx, tmp_path):
    digits, _, images, labels = _subset()
    path = tmp_path / "idc.pt"
    torch.save([images, labels], path)  # IDC: [images, labels]
    spec = DistillSpec(data=DIGITS, method="import", path=str(path), ipc=2)
    run_stage(spec, ctx)
    assert torch.equal(ctx.dataset(spec.dataset()).train_x, images)


def test_sets_stored_with_a_normalised_space_zca_load_as_they_were_made(ctx):
    """A record written before ZCA spaces (no zca_input_scale) keeps whitening
    normalised images; its spec (zca_space: normalized) keeps its old id."""
    old = DistillSpec(data=DIGITS, method="dm", ipc=1, iterations=2, model=LENET, zca=True, zca_space="normalized")
    assert "zca_space" not in old.canonical()
    new = old.replace(zca_space="pixels")
    assert '"zca_space":"pixels"' in new.canonical() and new.id != old.id
    assert DistillSpec(data=DIGITS, zca=False, zca_space="pixels").id == DistillSpec(data=DIGITS).id
    record = run_stage(old, ctx).load("distilled.pt")
    assert "zca_input_scale" not in record
    digits = load_dataset(DIGITS)
    zca = D.fit_zca(digits.normalize(digits.train_x.float()), 0.1)
    assert torch.allclose(ctx.dataset(old.dataset()).test_x, zca.apply(digits.normalize(digits.test_x.float())),
                          atol=1e-4)
    assert float(run_stage(new, ctx).load("distilled.pt")["zca_input_scale"]) == 16.0


# -- bad inputs --------------------------------------------------------------------------------
def _bad_file(tmp_path, name, images, labels):
    path = tmp_path / name
    torch.save({"images": images, "labels": labels}, path)
    return str(path)


def _tensor_file(tmp_path, name, tensor):
    path = tmp_path / name
    torch.save(tensor, path)
    return str(path)


BAD = {
    "ipc too large": (lambda tmp: DistillSpec(data=DIGITS, method="dm", ipc=200, model=LENET),
                      SpecError, ["distill.ipc", "200", "class"]),
    "unknown method": (lambda tmp: DistillSpec.from_dict({"data": {"name": "digits"}, "method": "kip"}),
                       SpecError, ["distill.method", "kip", "dm, gm, idc, import, mtt"]),
    "wrong shapes": (lambda tmp: DistillSpec(data=DIGITS, method="import", ipc=1, path=_bad_file(
        tmp, "shapes.pt", torch.zeros(10, 3, 32, 32), torch.arange(10))), DataError, ["shapes.pt", "shape"]),
    "label out of range": (lambda tmp: DistillSpec(data=DIGITS, method="import", ipc=1, path=_bad_file(
        tmp, "labels.pt", torch.zeros(10, 1, 8, 8), torch.arange(10) + 3)), DataError,
                           ["labels.pt", "outside 0..9"]),
    "labels count differs": (lambda tmp: DistillSpec(
        data=DIGITS, method="import", ipc=1, path=_tensor_file(tmp, "images_best.pt", torch.zeros(10, 1, 8, 8)),
        labels=_tensor_file(tmp, "labels_best.pt", torch.arange(9))), DataError,
        ["distill.labels", "labels_best.pt", "9 labels", "10 images"]),
    "mtt experts too short": (lambda tmp: DistillSpec(data=DIGITS, method="mtt", max_start_epoch=10,
                                                      experts=ExpertOptions(epochs=4)),
                              SpecError, ["distill.experts.epochs"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_fails_with_one_line_and_stores_nothing(case, ctx, tmp_path):
    build, error, needles = BAD[case]
    before = tree(ctx.store)
    with pytest.raises(error) as caught:
        spec = build(tmp_path)
        run_stage(EVAL.of(spec), ctx)  # the evaluation asks for the distillation first
    message = str(caught.value)
    assert "\n" not in message and all(n in message for n in needles), message
    assert tree(ctx.store) == before


def test_bad_trial_inputs_fail_when_the_sweep_is_read():
    base = {"method": "distilled_imp", "levels": 2, "inner": {"lr": 0.05}}
    with pytest.raises(SpecError, match=r"distill: method distilled_imp needs a distill: block"):
        parse_sweep({"base": base})
    with pytest.raises(SpecError, match=r"distill\.method: 'kip' is not one of"):
        parse_sweep({"base": base | {"distill": {"method": "kip"}}})
    with pytest.raises(SpecError, match=r"start_level: 5 must be"):
        parse_sweep({"base": base | {"method": "mask_then_imp", "distill": {}, "start_level": 5}})
    with pytest.raises(SpecError, match=r"inner: method distilled_imp trains"):
        parse_sweep({"base": {"method": "distilled_imp", "distill": {}}})


# -- distilled pruning ----------------------------------------------------------------------------
TRIAL = {"levels": 8, "data": {"name": "digits"}, "model": {"name": "lenet"},
         "train": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64, "duration": "20ep"},
         "prune": {"fraction": 0.2},
         "distill": {"method": "dm", "ipc": 10, "iterations": 200, "model": {"name": "lenet"}},
         "inner": {"lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 1, "duration": "4ep"}}
SEEDS = (0, 1)
LEVEL = 8  # 1 - 0.8^8 = 83.2% sparse


def trial(method="distilled_imp", seed=0, **changes):
    return TrialSpec.from_dict(TRIAL | {"method": method, "seeds": {"init": seed, "order": seed, "augment": seed}}
                               | changes)


@pytest.fixture(scope="module")
def pruned(ctx):
    """Level-8 distilled tickets and the dense networks for two seeds, and the
    real IMP trunk to level 8 for seed 0 (for its training points)."""
    out = {}
    for seed in SEEDS:
        t = trial(seed=seed)
        for spec in distilled_prepare(t, LEVEL):
            run_stage(spec, ctx)
        out[seed] = {"ticket": run_stage(ticket(t, LEVEL), ctx),
                     "dense": run_stage(METHODS["dense"].artifacts(t)[0], ctx)}
    out["imp"] = [run_stage(s, ctx) for s in METHODS["imp"].artifacts(trial("imp"))]
    return out


def test_distilled_tickets_match_dense_with_50x_fewer_points(pruned):
    gaps = [pruned[s]["dense"].metrics["test_acc"] - pruned[s]["ticket"].metrics["test_acc"] for s in SEEDS]
    tickets = [pruned[s]["ticket"].metrics for s in SEEDS]
    assert all(m["sparsity"] >= 0.80 for m in tickets)
    distilled_points = tickets[0]["points_seen"]
    imp_points = sum(a.metrics["points_seen"] for a in pruned["imp"])  # levels 0..8 on the real data
    assert distilled_points == 9 * 100 * 4  # 100 distilled images x 4 epochs, levels 0..8
    assert imp_points == 9 * 1258 * 20  # every image of every epoch: the partial batch counts
    assert tickets[0]["train_points_seen"] == 1258 * 20  # the ticket's own training, on the real data
    note = f"gaps {[round(100 * g, 2) for g in gaps]} points; {imp_points} vs {distilled_points} points"
    assert sum(gaps) / len(gaps) <= 0.015, note
    assert imp_points >= 50 * distilled_points, note
    # the ticket is the level's mask on the init weights, trained on the real data
    t = TicketSpec.from_dict(pruned[0]["ticket"].spec)
    assert t.trunk.data.name == "distilled" and t.data.name == "digits"
    init = build_model(LENET, (1, 8, 8), 10, seed=0).state_dict()
    start, mask = pruned[0]["ticket"].weights("init"), pruned[0]["ticket"].mask()
    assert all(torch.equal(start[k], init[k] * mask[k] if k in mask else init[k]) for k in init)


def test_distilled_imp_jobs_results_and_report(pruned, ctx, tmp_path):
    from raylth.reporting import results_frame, write_report
    from raylth.sweep.plan import write_record

    jobs = trial_jobs(Trial("seed=0,method=distilled_imp", trial()))
    assert [(j.rows, len(j.specs)) for j in jobs] == [(False, 2 + LEVEL)] + [(True, 1)] * LEVEL
    assert [j.label for j in jobs[1:3]] == ["seed=0,method=distilled_imp,level=1",
                                            "seed=0,method=distilled_imp,level=2"]
    evaluation = {"model": {"name": "lenet"}, "epochs": 50, "seeds": [0]}
    sweep = parse_sweep({"name": "dp", "base": TRIAL | {"distill_eval": evaluation},
                         "grid": {"seed": list(SEEDS), "method": ["dense", "distilled_imp", "distill"]}})
    for tr in sweep.trials:  # the fixture stored level 8's tickets; the distill method's rows now
        if tr.spec.method == "distill":
            METHODS["distill"].run(tr.spec, ctx)
    write_record(ctx.store, sweep)
    frame = results_frame(ctx.store.root, "dp")
    rows = frame[frame.method == "distilled_imp"]
    assert list(rows.level) == [LEVEL, LEVEL] and set(rows.stage) == {"ticket"}  # levels 1-7 were not run
    assert list(rows.search_points) == [400 * (LEVEL + 1)] * 2  # the distilled trunk's levels 0..8
    assert list(rows.points_seen) == [1258 * 20] * 2  # the ticket's own training, on the real data
    assert (rows.dataset == "digits").all() and (rows.model == "lenet").all()
    assert set(frame.stage) == {"train", "ticket", "distill", "distill_eval"}  # the distilled trunk is no row
    written = write_report(ctx.store.root, tmp_path / "report", "dp")
    table = (tmp_path / "report" / "distilled_pruning.md").read_text()
    assert "| distilled_imp | 8 | 83.2% |" in table and "| 3,600 | 25,160 | 2 |" in table
    assert "| dp | digits | dm | 10 | lenet | lenet |" in (tmp_path / "report" / "distillation.md").read_text()
    for png in (written["plot:distilled_pruning_dp-digits-lenet"], written["plot:distillation_dp-digits-ipc10"]):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| dp | digits | lenet | distilled_imp | 8 |" in (tmp_path / "report" / "summary.md").read_text()


def test_mask_then_imp_starts_from_the_ticket(pruned, ctx):
    t = trial("mask_then_imp", levels=6, start_level=4)
    specs = mask_then_imp(t)
    assert [s.kind for s in specs] == ["ticket", "maskimp", "maskimp"] and specs[0] == ticket(t, 4)
    start, level5, level6 = METHODS["mask_then_imp"].run(t, ctx)
    mask4, mask5, mask6 = start.mask(), level5.mask(), level6.mask()
    kept = lambda m: sum(int(v.sum()) for v in m.values())
    assert all(bool((mask5[k] <= mask4[k]).all()) and bool((mask6[k] <= mask5[k]).all()) for k in mask4)
    assert kept(mask5) == round(0.8 * kept(mask4)) and kept(mask6) == round(0.8 * kept(mask5))
    # every level starts (rewinds) at the ticket's start weights under its own mask
    ticket_init = start.weights("init")
    for art, mask in ((level5, mask5), (level6, mask6)):
        init = art.weights("init")
        assert all(torch.equal(init[k], ticket_init[k] * mask[k] if k in mask else ticket_init[k]) for k in init)
        assert art.metrics["start"] == start.id and art.metrics["steps"] == 20 * 20
    assert level6.metrics["sparsity"] > level5.metrics["sparsity"] > start.metrics["sparsity"]
    assert level6.metrics["test_acc"] > 0.9
    jobs = trial_jobs(Trial("mti", t))
    assert [(j.rows, len(j.specs)) for j in jobs] == [(False, 2 + 4), (True, 3)]


def test_a_ticket_needs_its_distilled_set_stored(tmp_path):
    fresh = StageContext(store=Store(tmp_path / "empty"), device=CPU)
    with pytest.raises(RaylthError, match=r"data\.path: distill_[0-9a-f]{16}: no such distilled set"):
        run_stage(ticket(trial(), 1), fresh)


def test_shorter_expert_needs_reuse_stored_longer_trajectories(ctx, monkeypatch):
    import raylth.plugins.distillers.mtt.experts as stage

    trained = []
    original = stage._compute_experts
    monkeypatch.setattr(stage, "_compute_experts", lambda spec, c: (trained.append(spec.epochs), original(spec, c))[1])
    base = dict(data=DIGITS, method="mtt", ipc=1, iterations=1, syn_steps=2, expert_epochs=1, model=LENET,
                experts=ExpertOptions(n=1, epochs=10))
    long, short = DistillSpec(max_start_epoch=4, **base), DistillSpec(max_start_epoch=2, **base)
    assert stage.experts_spec(long).epochs == 5 and stage.experts_spec(short).epochs == 3
    run_stage(long, ctx)
    run_stage(short, ctx)
    assert trained == [5]  # the 3-epoch need is served by the 5-epoch trajectories
    assert run_stage(short, ctx).metrics["experts"] == stage.experts_spec(long).id
    # and those are what a 3-epoch training would have stored: prefixes
    fresh = stage._compute_experts(stage.experts_spec(short), ctx)
    prefix = stage.load_experts(ctx.store.get(stage.experts_spec(long).id))[0][:4]
    assert all(torch.equal(a, b) for a, b in zip(prefix, stage.load_experts(fresh)[0]))


def test_tickets_can_train_on_real_data_whitened_like_the_distilled_set(ctx):
    """data.zca: the real data in the space of a ZCA-whitened distilled set (the
    2023 distilled-pruning code); the set itself is distilled from the raw data."""
    from raylth.specs import TrialSpec
    from raylth.stages.distill import trial_distill
    from raylth.plugins.methods.distilled.methods import ticket

    trial = TrialSpec.from_dict({
        "method": "distilled_imp", "levels": 1, "data": {"name": "digits", "zca": True},
        "model": {"name": "lenet"}, "train": {"lr": 0.05, "duration": "1ep"},
        "distill": {"method": "dm", "ipc": 1, "iterations": 1, "zca": True, "model": {"name": "lenet"}},
        "inner": {"lr": 0.02, "batch_size": 10, "duration": "1ep"}})
    distill = trial_distill(trial)
    assert not distill.data.zca and ticket(trial, 1).data.zca
    record = run_stage(distill, ctx).load("distilled.pt")
    real = ctx.dataset(ticket(trial, 1).data)
    digits = load_dataset(DIGITS)
    zca = D.fit_zca_space(digits, "pixels", 0.1)
    assert torch.allclose(record["zca_matrix"], zca.matrix) and float(record["zca_input_scale"]) == 16.0
    assert torch.allclose(real.train_x, zca.whiten(digits.train_x, digits), atol=1e-5)
    assert torch.allclose(real.test_x, zca.whiten(digits.test_x, digits), atol=1e-5)
    assert real.normalize(real.test_x[:3]).equal(real.test_x[:3])
    with pytest.raises(SpecError, match="data.zca"):
        trial.replace(distill=trial.distill.replace(zca_eps=0.2))
    with pytest.raises(SpecError, match="data.zca: the real data is ZCA-whitened but the distilled set is not"):
        trial.replace(distill=trial.distill.replace(zca=False))
    with pytest.raises(SpecError, match="distill.data.zca: distil the raw data set"):
        DistillSpec(data=DataSpec("digits", zca=True), method="dm")
