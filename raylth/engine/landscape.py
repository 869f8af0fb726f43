"""The loss landscape on the plane through three networks (Garipov et al.
2018; Frankle et al. 2020, fig. 1): an orthonormal basis, the loss and error
on a grid of that plane, and a contour plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from raylth.engine.data import Dataset
from raylth.engine.fastpath import FastPath
from raylth.engine.train import evaluate

State = dict[str, torch.Tensor]


@dataclass(eq=False)
class Plane:
    """origin + x * e1 + y * e2 over the floating tensors ``names`` (flattened
    in that order, float64); ``points`` are the (x, y) of the three networks:
    (0, 0), (|w1 - w0|, 0) and (x2, y2) with y2 > 0."""

    names: list[str]
    shapes: list[torch.Size]
    origin: torch.Tensor
    e1: torch.Tensor
    e2: torch.Tensor
    points: list[tuple[float, float]]
    template: State  # w0: dtypes, devices and the non-floating buffers

    def state_at(self, x: float, y: float) -> State:
        flat = self.origin + x * self.e1 + y * self.e2
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = shape.numel()
            ref = self.template[name]
            out[name] = flat[start:start + size].view(shape).to(ref.device, ref.dtype)
            start += size
        for name, value in self.template.items():
            if name not in out:
                out[name] = value.clone()
        return {name: out[name] for name in self.template}  # w0's key order

    def coordinates(self, state: State) -> tuple[float, float]:
        """Orthogonal projection of ``state`` onto the plane."""
        d = _flatten(state, self.names, self.origin.device) - self.origin
        return float(d @ self.e1), float(d @ self.e2)


def _flatten(state: State, names: list[str], device) -> torch.Tensor:
    return torch.cat([state[n].detach().to(device, torch.float64).flatten() for n in names])


def plane(w0: State, w1: State, w2: State, device=None) -> Plane:
    """Gram-Schmidt on w1 - w0 and w2 - w0 over every floating tensor (BatchNorm
    running statistics included), in float64 on ``device`` (default: w0's).
    Raises ValueError if the three are collinear to float32 precision (the
    part of w2 - w0 off the line is under 1e-6 of the larger difference)."""
    if not (w0.keys() == w1.keys() == w2.keys()):
        raise ValueError("the three state dicts differ in keys")
    names = [n for n, v in w0.items() if v.is_floating_point()]
    device = device if device is not None else next(iter(w0.values())).device
    origin, f1, f2 = (_flatten(w, names, device) for w in (w0, w1, w2))
    u, v = f1 - origin, f2 - origin
    norm_u = torch.linalg.vector_norm(u)
    if float(norm_u) == 0.0:
        raise ValueError("w1 equals w0: no plane")
    e1 = u / norm_u
    x2 = v @ e1
    r = v - x2 * e1
    y2 = torch.linalg.vector_norm(r)
    if float(y2) <= 1e-6 * max(float(norm_u), float(torch.linalg.vector_norm(v))):
        raise ValueError("the three networks are collinear: no plane")
    e2 = r / y2
    points = [(0.0, 0.0), (float(norm_u), 0.0), (float(x2), float(y2))]
    return Plane(names, [w0[n].shape for n in names], origin, e1, e2, points, dict(w0))


def _axis(values: list[float], pad: float, resolution: int) -> list[float]:
    return torch.linspace(min(values) - pad, max(values) + pad, resolution, dtype=torch.float64).tolist()


def evaluate_plane(model: nn.Module, w0: State, w1: State, w2: State, data: Dataset,
                   resolution: int, margin: float, split: str = "test",
                   limit: int | None = None, batch_size: int = 1024, fast: FastPath | None = None) -> dict:
    """Loss and error (1 - accuracy) on a resolution x resolution grid of the
    plane through w0, w1, w2 (running statistics taken from the plane too,
    non-floating buffers from w0). The grid covers the three networks plus
    ``margin`` times the larger of the two extents on every side, so the
    picture keeps its aspect. Returns xs, ys, loss and err as [len(ys)][len(xs)]
    lists, points [[x, y]] x3, and point_loss / point_err at the three networks
    themselves (rebuilt from the plane). The model gets its state and mode back."""
    if resolution < 2:
        raise ValueError(f"resolution ({resolution}) must be at least 2")
    if margin < 0:
        raise ValueError(f"margin ({margin}) must be >= 0")
    device = next(iter(model.state_dict().values())).device
    p = plane(w0, w1, w2, device=device)
    px, py = [q[0] for q in p.points], [q[1] for q in p.points]
    pad = margin * max(max(px) - min(px), max(py) - min(py))
    xs, ys = _axis(px, pad, resolution), _axis(py, pad, resolution)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training

    def run(x, y):
        model.load_state_dict(p.state_at(x, y))
        return evaluate(model, data, split, batch_size, limit=limit, fast=fast)

    try:
        grid = [[run(x, y) for x in xs] for y in ys]
        at_points = [run(x, y) for x, y in p.points]
    finally:
        model.load_state_dict(original)
        model.train(was_training)
    return {"xs": xs, "ys": ys, "split": split,
            "loss": [[r["loss"] for r in row] for row in grid],
            "err": [[1.0 - r["acc"] for r in row] for row in grid],
            "points": [[x, y] for x, y in p.points],
            "point_loss": [r["loss"] for r in at_points],
            "point_err": [1.0 - r["acc"] for r in at_points]}


def plot_plane(result: dict, path, title: str, labels=("a", "b", "c"), metric: str = "err") -> Path:
    """A filled contour PNG of ``metric`` ('err' or 'loss') over the plane, the
    three networks marked and labelled. Uses the Agg canvas directly, so the
    global pyplot backend and state are left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if metric not in ("err", "loss"):
        raise ValueError(f"metric={metric!r}: use 'err' or 'loss'")
    fig = Figure(figsize=(5.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    filled = ax.contourf(result["xs"], result["ys"], result[metric], levels=20, cmap="viridis")
    name = "error" if metric == "err" else "loss"
    fig.colorbar(filled, ax=ax, label=f"{result.get('split', 'test')} {name}")
    middle = (result["xs"][0] + result["xs"][-1]) / 2
    for (x, y), label in zip(result["points"], labels):
        ax.plot(x, y, "o", color="white", markeredgecolor="black", markersize=7)
        right = x > middle  # label toward the centre, so it stays inside the axes
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(-6 if right else 6, 6),
                    ha="right" if right else "left", color="white", fontweight="bold")
    ax.set_aspect("equal")
    ax.set_xlabel(f"distance from {labels[0]} toward {labels[1]}")
    ax.set_ylabel(f"orthogonal distance toward {labels[2]}")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, format="png")
    return path
