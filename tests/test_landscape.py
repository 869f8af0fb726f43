"""The plane through three networks: basis, coordinates, grid evaluation, plot."""

import pytest
import torch

from raylth.engine.landscape import evaluate_plane, plane, plot_plane
from raylth.engine.models import build_model
from raylth.engine.train import Trainer, evaluate
from raylth.specs import ModelSpec, Seeds, Step, TrainSpec

CPU = torch.device("cpu")


def _trained(data, name, width, seed, duration="6ep"):
    model = build_model(ModelSpec(name, width), data.input_shape, data.num_classes, seed=seed)
    trainer = Trainer(model, data, TrainSpec(lr=0.05, batch_size=64, duration=Step.parse(duration)),
                      Seeds.all(seed), augment=False, device=CPU)
    trainer.run()
    return trainer.model, trainer.weights()


@pytest.fixture(scope="module")
def three(digits_data):
    nets = [_trained(digits_data, "lenet", 32, seed) for seed in range(3)]
    return nets[0][0], [w for _, w in nets]


def test_plane_basis_and_coordinates(three):
    _, (w0, w1, w2) = three
    p = plane(w0, w1, w2)
    assert abs(float(p.e1 @ p.e1) - 1) < 1e-12 and abs(float(p.e2 @ p.e2) - 1) < 1e-12
    assert abs(float(p.e1 @ p.e2)) < 1e-12
    assert p.points[0] == (0.0, 0.0) and p.points[1][1] == 0.0 and p.points[2][1] > 0
    for w, (x, y) in zip((w0, w1, w2), p.points):
        rebuilt = p.state_at(x, y)
        assert list(rebuilt) == list(w0)
        assert all(torch.allclose(rebuilt[k], w[k], rtol=0, atol=1e-6) for k in w)
        cx, cy = p.coordinates(w)
        assert cx == pytest.approx(x, abs=1e-9) and cy == pytest.approx(y, abs=1e-9)
    assert torch.equal(p.state_at(0.0, 0.0)["1.weight"], w0["1.weight"])
    # the distances are those between the networks
    flat = [torch.cat([w[k].double().flatten() for k in w]) for w in (w0, w1, w2)]
    assert p.points[1][0] == pytest.approx(float((flat[1] - flat[0]).norm()), rel=1e-12)
    x2, y2 = p.points[2]
    assert (x2 ** 2 + y2 ** 2) ** 0.5 == pytest.approx(float((flat[2] - flat[0]).norm()), rel=1e-12)


def test_plane_rejects_collinear(three):
    _, (w0, w1, _) = three
    mid = {k: (v + w1[k]) / 2 for k, v in w0.items()}
    with pytest.raises(ValueError, match="collinear"):
        plane(w0, w1, mid)
    with pytest.raises(ValueError):
        plane(w0, w0, w1)


def test_evaluate_plane_matches_evaluate(digits_data, three, tmp_path):
    model, (w0, w1, w2) = three
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = evaluate_plane(model, w0, w1, w2, digits_data, resolution=5, margin=0.2)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    xs, ys = result["xs"], result["ys"]
    assert len(xs) == len(ys) == 5
    assert len(result["err"]) == len(result["loss"]) == len(ys)
    assert all(len(row) == len(xs) for row in result["err"] + result["loss"])
    assert all(0.0 <= e <= 1.0 for row in result["err"] for e in row)
    span = max(max(x for x, _ in result["points"]) - min(x for x, _ in result["points"]),
               max(y for _, y in result["points"]) - min(y for _, y in result["points"]))
    for x, y in result["points"]:
        assert xs[0] + 0.2 * span - 1e-9 <= x <= xs[-1] - 0.2 * span + 1e-9
        assert ys[0] + 0.2 * span - 1e-9 <= y <= ys[-1] - 0.2 * span + 1e-9

    for i, w in enumerate((w0, w1, w2)):
        model.load_state_dict(w)
        direct = evaluate(model, digits_data, "test")
        assert result["point_loss"][i] == pytest.approx(direct["loss"], abs=1e-5)
        assert result["point_err"][i] == pytest.approx(1 - direct["acc"], abs=1.5 / len(digits_data.test_y))
    assert max(result["point_err"]) < 0.2  # trained networks

    out = plot_plane(result, tmp_path / "plots" / "plane.png", "digits, lenet-32", labels=("s0", "s1", "s2"))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_plane(result, tmp_path / "loss.png", "loss", metric="loss")
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_evaluate_plane_with_batch_norm(digits_data):
    nets = [_trained(digits_data, "resnet20", 4, seed, duration="5it") for seed in range(3)]
    model, (w0, w1, w2) = nets[0][0], [w for _, w in nets]
    p = plane(w0, w1, w2)
    assert "bn1.running_var" in p.names and "bn1.num_batches_tracked" not in p.names
    assert torch.equal(p.state_at(1.0, 2.0)["bn1.num_batches_tracked"], w0["bn1.num_batches_tracked"])
    result = evaluate_plane(model, w0, w1, w2, digits_data, resolution=2, margin=0.0, split="train",
                            limit=200)
    # no margin: the grid's corners are the extremes of the three points
    assert result["xs"][0] == pytest.approx(min(x for x, _ in result["points"]))
    assert result["ys"][-1] == pytest.approx(max(y for _, y in result["points"]))
    model.load_state_dict(w2)
    direct = evaluate(model, digits_data, "train", limit=200)
    assert result["point_loss"][2] == pytest.approx(direct["loss"], abs=1e-4)
