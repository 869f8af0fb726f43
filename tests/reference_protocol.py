"""An independent implementation of the field's distilled-set evaluation
protocol (DC / DSA / DM / MTT), written from the papers and their public
code conventions, without raylth's engine: used by test_reference_protocol.py
to check raylth's DistillEvalSpec evaluation (issue #4: within 3 points of an
independent implementation of the same protocol).

The protocol, for each seed: a fresh ConvNet-3 (3 x [conv 3x3, width w ->
instance norm (GroupNorm(w, w), affine) -> ReLU -> avg-pool 2x2], then one
linear layer; PyTorch's default initialisation) is trained on the distilled
images with cross-entropy, SGD momentum 0.9, weight decay 5e-4, batch 256
(shuffled), the lr x 0.1 at half the epochs; every training batch goes
through DSA 'color_crop_cutout_flip_scale_rotate' in the DSA code's default
"single" mode (one of the six parts drawn per batch, its random parameters
drawn per image) with the DSA parameters: brightness +-0.5, saturation x
U(0, 2), contrast x U(0.5, 1.5), crop by translation of up to 1/8 of the side
with zero fill, cutout of a half-side square, horizontal flip with p 0.5,
scale x U(1/1.2, 1.2) per axis, rotation U(-15, 15) degrees. Then the
accuracy on the real test split (normalised like the training images, no
augmentation). Every random draw of a seed (initialisation, shuffling,
augmentation) comes from one fresh ``torch.Generator`` seeded with it.

Schedules: ``schedule="half"`` trains ``epochs`` epochs and decays the lr
after ``epochs // 2`` of them (the papers' wording, and raylth's "epochs");
``schedule="dc_code"`` follows the DC/DSA/DM/MTT ``evaluate_synset`` literally:
``epochs + 1`` epochs, the optimizer re-created (momentum reset) with lr x 0.1
after epoch index ``epochs // 2 + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass(frozen=True)
class DsaParams:
    """The DSA paper's augmentation strengths (its ParamDiffAug defaults)."""
    brightness: float = 1.0      # x + (u - 0.5) * 1.0
    saturation: float = 2.0      # (x - gray) * (u * 2) + gray
    contrast: float = 0.5        # (x - mean) * (u + 0.5) + mean
    crop_pad: float = 0.125      # translation of up to 1/8 of the side
    cutout: float = 0.5          # a square of half the side
    flip: float = 0.5            # probability
    scale: float = 1.2           # per-axis factor in [1/1.2, 1.2]
    rotate: float = 15.0         # degrees either way


# -- DSA ------------------------------------------------------------------------------------------
def _u(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g)


def _color(x, p, g):
    n = x.shape[0]
    x = x + (_u(n, g).view(n, 1, 1, 1) - 0.5) * p.brightness
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * (_u(n, g).view(n, 1, 1, 1) * p.saturation) + gray
    avg = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - avg) * (_u(n, g).view(n, 1, 1, 1) + p.contrast) + avg


def _crop(x, p, g):
    """Translate each image by (dy, dx) in [-s, s]^2, s = round(side / 8); zeros
    come in at the edges: out[i, j] = x[i + dy, j + dx]."""
    n, _, h, w = x.shape
    sy, sx = int(h * p.crop_pad + 0.5), int(w * p.crop_pad + 0.5)
    dy = torch.randint(-sy, sy + 1, (n,), generator=g)
    dx = torch.randint(-sx, sx + 1, (n,), generator=g)
    padded = F.pad(x, (sx, sx, sy, sy))
    rows = (torch.arange(h).view(1, h) + dy.view(n, 1) + sy)            # (n, h)
    cols = (torch.arange(w).view(1, w) + dx.view(n, 1) + sx)            # (n, w)
    b = torch.arange(n).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[b, rows.view(n, h, 1), cols.view(n, 1, w)]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2)


def _cutout(x, p, g):
    """Zero a (k x k) square, k = round(side / 2), centred at a uniform position
    (the square may hang over the edge)."""
    n, _, h, w = x.shape
    kh, kw = int(h * p.cutout + 0.5), int(w * p.cutout + 0.5)
    cy = torch.randint(0, h + (1 - kh % 2), (n,), generator=g)
    cx = torch.randint(0, w + (1 - kw % 2), (n,), generator=g)
    r = torch.arange(h).view(1, h)
    q = torch.arange(w).view(1, w)
    in_r = (r >= (cy - kh // 2).view(n, 1)) & (r < (cy - kh // 2 + kh).view(n, 1))   # (n, h)
    in_q = (q >= (cx - kw // 2).view(n, 1)) & (q < (cx - kw // 2 + kw).view(n, 1))   # (n, w)
    hole = in_r.view(n, 1, h, 1) & in_q.view(n, 1, 1, w)
    return x * (~hole).to(x.dtype)


def _flip(x, p, g):
    n = x.shape[0]
    do = (_u(n, g) < p.flip).view(n, 1, 1, 1)
    return torch.where(do, x.flip(3), x)


def _warp(x, theta):
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def _scale(x, p, g):
    n = x.shape[0]
    lo = 1.0 / p.scale
    sx = _u(n, g) * (p.scale - lo) + lo
    sy = _u(n, g) * (p.scale - lo) + lo
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    return _warp(x, theta.to(x.dtype))


def _rotate(x, p, g):
    n = x.shape[0]
    a = (_u(n, g) - 0.5) * 2 * p.rotate * math.pi / 180
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = a.cos(), -a.sin()
    theta[:, 1, 0], theta[:, 1, 1] = a.sin(), a.cos()
    return _warp(x, theta.to(x.dtype))


PARTS = {"color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip, "scale": _scale, "rotate": _rotate}


def dsa(x: torch.Tensor, g: torch.Generator, strategy: str = STRATEGY, params: DsaParams = DsaParams()):
    """DSA in its "single" mode: one part of the strategy per call (per batch),
    independent parameters per image."""
    parts = strategy.split("_")
    part = parts[int(torch.randint(0, len(parts), (1,), generator=g))]
    return PARTS[part](x, params, g)


# -- ConvNet-3 ------------------------------------------------------------------------------------
class ConvNet(torch.nn.Module):
    def __init__(self, channels: int, side: int, classes: int, width: int = 128, depth: int = 3):
        super().__init__()
        layers, c = [], channels
        for _ in range(depth):
            layers += [torch.nn.Conv2d(c, width, 3, padding=1), torch.nn.GroupNorm(width, width, affine=True),
                       torch.nn.ReLU(), torch.nn.AvgPool2d(2, 2)]
            c, side = width, side // 2
        self.features = torch.nn.Sequential(*layers)
        self.classifier = torch.nn.Linear(width * side * side, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def init_default(net: torch.nn.Module, g: torch.Generator) -> None:
    """PyTorch's default initialisation of Conv2d/Linear (kaiming_uniform with
    a = sqrt(5): U(+-1/sqrt(fan_in)) for weights and biases) and GroupNorm
    (1, 0), drawn from ``g``."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                m.weight.uniform_(-bound, bound, generator=g)
                m.bias.uniform_(-bound, bound, generator=g)
            elif isinstance(m, torch.nn.GroupNorm):
                m.weight.fill_(1.0)
                m.bias.fill_(0.0)


# -- the protocol ---------------------------------------------------------------------------------
def train_and_test(images, labels, test_x, test_y, seed: int, *, width: int, epochs: int, lr: float,
                   batch: int = 256, momentum: float = 0.9, weight_decay: float = 5e-4, dsa_on: bool = True,
                   strategy: str = STRATEGY, schedule: str = "half", classes: int | None = None) -> float:
    g = torch.Generator().manual_seed(seed)
    classes = classes or int(max(labels.max(), test_y.max())) + 1
    net = ConvNet(images.shape[1], images.shape[2], classes, width=width)
    init_default(net, g)
    images, labels = images.float(), labels.long()

    def sgd(rate):
        return torch.optim.SGD(net.parameters(), lr=rate, momentum=momentum, weight_decay=weight_decay)

    if schedule == "half":
        total, decay_after, reset = epochs, epochs // 2, False
    elif schedule == "dc_code":
        total, decay_after, reset = epochs + 1, epochs // 2 + 2, True  # decays after epoch index E//2 + 1
    else:
        raise ValueError(f"schedule: {schedule!r}; 'half' or 'dc_code'")
    opt = sgd(lr)
    net.train()
    for ep in range(total):
        if ep == decay_after:
            if reset:
                opt = sgd(lr * 0.1)
            else:
                for group in opt.param_groups:
                    group["lr"] = lr * 0.1
        order = torch.randperm(len(labels), generator=g)
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            x = images[idx]
            if dsa_on:
                x = dsa(x, g, strategy)
            loss = F.cross_entropy(net(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test_y), 1024):
            correct += int((net(test_x[start:start + 1024].float()).argmax(1) == test_y[start:start + 1024]).sum())
    return correct / len(test_y)


def evaluate(images: torch.Tensor, labels: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
             width: int, epochs: int, lr: float, batch: int = 256, seeds=(0, 1, 2), **options) -> list[float]:
    """Per-seed test accuracies of networks trained on (images, labels), both
    already normalised (as a distilled record stores them), tested on the
    normalised real test split (test_x, test_y)."""
    return [train_and_test(images, labels, test_x, test_y, s, width=width, epochs=epochs, lr=lr, batch=batch,
                           **options) for s in seeds]


def normalise(x_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel, in the units of x.float() (0..255 for uint8)."""
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x_uint8.float() - m) / s
