"""`raylth export` (issue #15, "Tickets out"): a ticket found here leaves as a
plain PyTorch file, and plain PyTorch retrains it to raylth's result.

A tiny IMP sweep (digits, lenet, 3 epochs, rewind to epoch 1, levels 2, plus
the reinit control) is computed in this process. Its level-2 ticket and its
reinit branch are exported, then trained here by a model written with plain
torch.nn, the data loaded with scikit-learn, and the optimizer, schedule and
batch order rebuilt from the exported recipe alone; the final weights and the
test accuracy must equal what raylth stored for that network.
"""

import hashlib
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

import raylth
from raylth.cli.main import main
from raylth.store import Store
from raylth.sweep.config import parse_sweep
from raylth.sweep.jobs import sweep_jobs
from raylth.sweep.runner import run_specs_here

SWEEP = {"name": "export", "base": {"levels": 2, "data": {"name": "digits"}, "model": {"name": "lenet"},
                                    "train": {"duration": "3ep", "batch_size": 64, "lr": 0.05},
                                    "prune": {"rewind": "1ep"}, "seed": 3},
         "grid": {"method": ["imp", "reinit"]}}


@pytest.fixture(scope="module")
def stored(tmp_path_factory, one_thread):
    """(storage root, {"imp": level-2 id, "reinit": its branch id, "train": the dense run's id})."""
    root = tmp_path_factory.mktemp("export") / "store"
    ids = {}
    for job in sweep_jobs(parse_sweep(SWEEP, "export").trials):
        run_specs_here(list(job.specs), root, data_root=tmp_path_factory.mktemp("data"))
        for spec in job.specs:
            level = getattr(spec, "level", None) or getattr(getattr(spec, "trunk", None), "level", 0)
            if spec.kind == "train" or level == 2:
                ids[{"imp": "imp", "branch": "reinit", "train": "train"}[spec.kind]] = spec.id
    return root, ids


# -- plain PyTorch, nothing of raylth -------------------------------------------------------
def plain_lenet(input_shape, num_classes, width):
    """LeNet-300-100 as torch.nn layers; parameter names 1.*, 3.*, 5.*."""
    c, h, w = input_shape
    second = max(1, round(width / 3))
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width), nn.ReLU(), nn.Linear(width, second),
                         nn.ReLU(), nn.Linear(second, num_classes))


def digits_split():
    """scikit-learn's digits, split per class by a RandomState(0) permutation (30 % test), as raylth documents."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    rng = np.random.RandomState(0)
    test = []
    for c in np.unique(raw.target):
        idx = np.flatnonzero(raw.target == c)
        test.append(idx[rng.permutation(len(idx))[: int(round(0.3 * len(idx)))]])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(raw.target)), test)
    x = torch.from_numpy(raw.images.astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(raw.target.astype(np.int64))
    return x[train], y[train], x[test], y[test]


def order_seed(seed: int, epoch: int) -> int:
    """The epoch's shuffle seed: the first 8 bytes of sha256("seed:epoch:order"), shifted to 63 bits."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}:order".encode()).digest()[:8], "big") >> 1


def module_of(model: nn.Module, weight_name: str) -> nn.Module:
    return model.get_submodule(weight_name.rsplit(".", 1)[0])


def plain_model(ticket, with_prune: bool) -> nn.Module:
    spec = ticket["model"]
    model = plain_lenet(spec["input_shape"], spec["num_classes"], spec["width"])
    if with_prune:
        for name, m in ticket["mask"].items():
            prune.custom_from_mask(module_of(model, name), "weight", m)
    model.load_state_dict(ticket["state_dict"])
    return model


def train_plain(ticket, data, with_prune: bool = False) -> nn.Module:
    """Train the exported ticket from its rewind point to the end of its recipe:
    SGD (foreach kernels, as raylth on a CPU), cosine learning rate set per
    iteration, each epoch's order a seeded randperm, the last partial batch
    kept; the mask applied after every step, or (with_prune) by torch.nn.utils.prune."""
    recipe, mask = ticket["recipe"], ticket["mask"]
    train, seeds = recipe["train"], recipe["seeds"]
    assert (train["optimizer"], train["schedule"], train["warmup"], train["last_batch"],
            recipe["augment"]["name"]) == ("sgd", "cosine", "0it", "keep", "none")
    train_x, train_y, _, _ = data
    mean = torch.tensor(recipe["data"]["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(recipe["data"]["std"], dtype=torch.float32).view(1, -1, 1, 1)
    model = plain_model(ticket, with_prune)
    optimizer = torch.optim.SGD(model.parameters(), lr=train["lr"], momentum=train["momentum"],
                                nesterov=train["nesterov"], weight_decay=train["weight_decay"], foreach=True)
    total, per_epoch, step = recipe["total_steps"], recipe["steps_per_epoch"], recipe["start_step"]
    n = len(train_y)
    size = min(train["batch_size"], n)
    assert per_epoch == -(-n // size)
    params = dict(model.named_parameters())
    model.train()
    while step < total:
        epoch, first = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(order_seed(seeds["order"], epoch)))
        for batch in range(first, per_epoch):
            idx = order[batch * size:(batch + 1) * size]
            for group in optimizer.param_groups:
                group["lr"] = train["lr"] * (0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
            loss = F.cross_entropy(model((train_x[idx] - mean) / std), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not with_prune:
                with torch.no_grad():
                    for name, m in mask.items():
                        params[name].mul_(m)
            step += 1
    if with_prune:
        for name in mask:
            prune.remove(module_of(model, name), "weight")
    model.recipe_norm = (mean, std)
    return model


@torch.no_grad()
def accuracy(model, data) -> float:
    _, _, test_x, test_y = data
    mean, std = model.recipe_norm
    model.eval()
    return int((model((test_x - mean) / std).argmax(1) == test_y).sum()) / len(test_y)


@pytest.fixture(scope="module")
def data():
    return digits_split()


# -- the tests ---------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["imp", "reinit"])
def test_plain_pytorch_retrains_the_exported_ticket_to_raylths_result(stored, data, tmp_path, which):
    root, ids = stored
    artifact = Store(root).get(ids[which])
    path = raylth.export(root, ids[which], tmp_path / "ticket.pt")
    ticket = torch.load(path, weights_only=True)

    assert ticket["provenance"]["artifact_id"] == ids[which] and ticket["provenance"]["level"] == 2
    assert ticket["provenance"]["test_acc"] == artifact.metrics["test_acc"]
    assert ticket["provenance"]["raylth_version"] == raylth.__version__
    assert ticket["model"] == {"name": "lenet", "width": 300, "input_shape": [1, 8, 8], "num_classes": 10}
    assert ticket["recipe"]["train"]["lr"] == 0.05 and ticket["recipe"]["seeds"] == {"init": 3, "order": 3, "augment": 3}
    # the rewind point: imp restarts at epoch 1 (its stored step_1ep), reinit from its fresh init
    start, checkpoint = {"imp": (20, "step_1ep"), "reinit": (0, "init")}[which]
    assert (ticket["recipe"]["start_step"], ticket["provenance"]["rewind_checkpoint"]) == (start, checkpoint)
    stored_start = artifact.weights(checkpoint)
    assert ticket["state_dict"].keys() == stored_start.keys()
    assert all(torch.equal(ticket["state_dict"][k], stored_start[k]) for k in stored_start)
    mask = ticket["mask"]
    assert mask.keys() == {"1.weight", "3.weight", "5.weight"} and all(m.dtype == torch.bool for m in mask.values())
    assert all(torch.equal(mask[k], artifact.mask()[k]) for k in mask)
    kept = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert abs((1 - kept) - ticket["provenance"]["sparsity"]) < 1e-9 and abs(kept - 0.64) < 1e-3
    # the data set raylth trained on is the one loaded here
    train_x = data[0].double()
    assert ticket["recipe"]["data"]["train_images"] == len(data[1]) and ticket["recipe"]["data"]["test_images"] == len(data[3])
    assert ticket["recipe"]["data"]["mean"][0] == pytest.approx(float(train_x.mean()), rel=1e-12)
    assert ticket["recipe"]["data"]["std"][0] == pytest.approx(float(train_x.std()), rel=1e-12)

    final = artifact.weights("final")
    pruned = torch.load(raylth.export(root, ids[which], tmp_path / "pruned.pt", prune_form=True), weights_only=True)
    for with_prune, exported in ((False, ticket), (True, pruned)):
        model = train_plain(exported, data, with_prune=with_prune)
        weights = model.state_dict()
        assert weights.keys() == final.keys()
        for name, value in final.items():
            assert torch.allclose(weights[name], value, rtol=1e-5, atol=1e-7), (with_prune, name)
            if name in mask:
                assert not weights[name][~mask[name]].any()  # pruned weights stayed exactly zero
        assert accuracy(model, data) == artifact.metrics["test_acc"]
    # training moved the weights: the comparison above is not of the start with itself
    assert not torch.allclose(final["1.weight"], stored_start["1.weight"], atol=1e-3)


def test_prune_form_loads_into_plain_pruned_models_and_gives_the_same_outputs(stored, data, tmp_path):
    root, ids = stored
    plain = torch.load(raylth.export(root, ids["imp"], tmp_path / "plain.pt"), weights_only=True)
    path = tmp_path / "pruned.pt"
    assert main(["export", ids["imp"], "--out", str(path), "--storage", str(root), "--prune-form"]) == 0
    pruned = torch.load(path, weights_only=True)
    assert pruned["prune_form"] and not plain["prune_form"]
    assert set(pruned["state_dict"]) == {"1.weight_orig", "1.weight_mask", "1.bias", "3.weight_orig",
                                         "3.weight_mask", "3.bias", "5.weight_orig", "5.weight_mask", "5.bias"}
    spec = plain["model"]
    x = (data[2][:64] - plain["recipe"]["data"]["mean"][0]) / plain["recipe"]["data"]["std"][0]
    reference = plain_lenet(spec["input_shape"], spec["num_classes"], spec["width"])
    reference.load_state_dict(plain["state_dict"])
    with torch.no_grad():
        expected = reference(x)
        for how in ("custom_from_mask", "identity"):
            model = plain_lenet(spec["input_shape"], spec["num_classes"], spec["width"])
            for name, m in pruned["mask"].items():
                if how == "identity":
                    prune.identity(module_of(model, name), "weight")
                else:
                    prune.custom_from_mask(module_of(model, name), "weight", m)
            model.load_state_dict(pruned["state_dict"])  # strict: every key matches
            assert torch.equal(model(x), expected), how
            for name, m in pruned["mask"].items():
                assert torch.equal(module_of(model, name).weight != 0, m & (plain["state_dict"][name] != 0))


def test_the_file_loads_without_raylth(stored, tmp_path):
    root, ids = stored
    files = [raylth.export(root, ids["imp"], tmp_path / "a.pt"),
             raylth.export(root, ids["reinit"], tmp_path / "b.pt", prune_form=True)]
    script = ("import sys; sys.modules['raylth'] = None\n"  # any import of raylth fails
              "import torch\n"
              "for path in sys.argv[1:]:\n"
              "    d = torch.load(path, weights_only=True)\n"
              "    assert {'state_dict', 'mask', 'model', 'recipe', 'provenance'} <= set(d)\n"
              "    print(d['provenance']['artifact_id'], d['model']['name'], len(d['state_dict']))\n")
    done = subprocess.run([sys.executable, "-c", script, *map(str, files)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [ids["imp"], "lenet", "6", ids["reinit"], "lenet", "9"]


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("raylth: error: "), err
    return err


def test_bad_inputs_are_one_line_with_exit_2(stored, tmp_path, capsys, monkeypatch):
    root, ids = stored
    out = tmp_path / "t.pt"
    base = ["--out", str(out), "--storage", str(root)]
    assert "no such artifact" in _one_line_error(capsys, ["export", "imp_0000000000000000", *base])
    assert "holds no mask" in _one_line_error(capsys, ["export", ids["train"], *base])
    assert not out.exists()
    assert "no such storage root" in _one_line_error(capsys, ["export", ids["imp"], "--out", str(out),
                                                              "--storage", str(tmp_path / "nowhere")])

    out.write_bytes(b"keep me")
    assert "already exists; pass --force" in _one_line_error(capsys, ["export", ids["imp"], *base])
    assert out.read_bytes() == b"keep me"
    assert main(["export", ids["imp"], *base, "--force"]) == 0
    assert torch.load(out, weights_only=True)["provenance"]["artifact_id"] == ids["imp"]

    assert "is a folder" in _one_line_error(capsys, ["export", ids["imp"], "--out", str(tmp_path),
                                                     "--storage", str(root)])
    assert "is a file, not a folder" in _one_line_error(
        capsys, ["export", ids["imp"], "--out", str(out / "x.pt"), "--storage", str(root)])

    import raylth.reporting.export as export

    def refused(path, payload):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(export, "atomic_write_bytes", refused)  # a folder that refuses the write
    err = _one_line_error(capsys, ["export", ids["imp"], "--out", str(tmp_path / "new.pt"), "--storage", str(root)])
    assert "cannot be written (Permission denied)" in err and not (tmp_path / "new.pt").exists()


@pytest.mark.skipif(not hasattr(sys, "getuid") or __import__("os").getuid() == 0,
                    reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line(stored, tmp_path, capsys):
    root, ids = stored
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "not writable" in _one_line_error(
            capsys, ["export", ids["imp"], "--out", str(locked / "t.pt"), "--storage", str(root)])
    finally:
        locked.chmod(0o700)
