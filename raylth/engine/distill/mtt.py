"""Matching training trajectories (MTT; Cazenavette et al., CVPR 2022).

``train_experts`` records expert trajectories on the real data: flattened
parameter vectors (in ``model.parameters()`` order) at the start and after
each epoch, on the CPU. ``distill_mtt`` then repeatedly starts a student at
an expert's epoch s ~ U[0, max_start_epoch), unrolls ``syn_steps`` plain SGD
steps on synthetic batches with a learnable lr, and moves the images and the
lr to bring the student's end point to the expert's epoch s + expert_epochs:

    loss = ||theta_student_end - theta*_{s+E}||^2 / ||theta*_s - theta*_{s+E}||^2

backpropagated through the whole unroll. The student lr is learned RAW (as
MTT's ``syn_lr``, SGD with momentum 0.5 at ``lr_lr``), not as a logarithm.

Memory. The unroll keeps, per student step, the forward activations of the
synthetic batch plus the graph of its parameter gradient (create_graph) and
one parameter vector: O(syn_steps x (activations(batch_syn) + num_params)),
which is what limits MTT to small syn_steps and batch_syn on large sets.
``low_memory=True`` wraps each student step in torch.utils.checkpoint
(non-reentrant): only each step's inputs (the parameter vector, the batch
and the lr) are kept, and one step's activations and gradient graph are
recomputed at a time during the backward pass, so memory becomes
O(syn_steps x (num_params + batch_syn images) + activations(one step)) at
the cost of recomputing every step's forward and gradient once more. The
result is the same up to float rounding (the DSA draws are explicit
parameters, so the recomputation sees the same augmentation). Measured on
CPU (ConvNet-3 width 32, 3x32x32, batch_syn 20; bytes handed to autograd
to save, summed): 32 MiB per student step plain vs 0.34 MiB per step with
low_memory (5/10/20 steps: 161/323/647 MiB vs 1.7/3.4/6.7 MiB), for 1.1-2x
the wall time.

BatchNorm models: only parameters are matched (running statistics are not
part of a trajectory); students run in train mode on batch statistics.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from raylth.engine.data.dsa import DEFAULT_STRATEGY, apply_dsa, sample_dsa
from .common import ModelFn, build, check_real, sgd_epoch
from .init import init_images


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def train_experts(real_x: torch.Tensor, real_y: torch.Tensor, model_fn: ModelFn, n_experts: int,
                  epochs: int, lr: float = 0.01, batch_size: int = 256, *,
                  generator: torch.Generator, dsa: bool = True, max_epochs_kept: int | None = None,
                  momentum: float = 0.0, weight_decay: float = 0.0,
                  dsa_strategy: str = DEFAULT_STRATEGY) -> list[list[torch.Tensor]]:
    """Train n_experts fresh networks on the real (normalised) data with SGD
    (MTT's buffer.py: lr 0.01, no momentum, no weight decay, batch 256, DSA per
    example, every batch of a shuffled epoch including the last partial one).
    Each trajectory is [theta_0, theta_1, ..., theta_E], flat CPU float32
    vectors. ``max_epochs_kept`` (e.g. max_start_epoch + expert_epochs) stops
    training after that many epochs: later epochs cannot change the kept
    snapshots, so they are neither trained nor stored."""
    device = real_x.device
    len(real_y)
    stop = epochs if max_epochs_kept is None else min(epochs, max_epochs_kept)
    experts = []
    for _ in range(n_experts):
        net = build(model_fn, generator, device)
        net.train()
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum,
                                    weight_decay=weight_decay)
        trajectory = [flat_params(net).cpu()]
        for _ in range(stop):
            sgd_epoch(net, optimizer, real_x, real_y, batch_size, generator, dsa, dsa_strategy)
            trajectory.append(flat_params(net).cpu())
        experts.append(trajectory)
    return experts


class _Functional:
    """A module run on a flat parameter vector (MTT's ReparamModule)."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.names = [name for name, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]
        self.sizes = [p.numel() for _, p in module.named_parameters()]
        self.numel = sum(self.sizes)

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, self.sizes)
        params = {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes)}
        return functional_call(self.module, params, (x,))


def _student_step(fn: _Functional, draw, flat, x, y, lr):
    """One SGD step of the student: flat - lr * grad CE(fn(flat, aug(x)), y),
    keeping the graph of the gradient (create_graph) for the outer backward."""
    with torch.enable_grad():
        if draw is not None:
            x = apply_dsa(x, draw)
        loss = F.cross_entropy(fn(flat, x), y)
        grad, = torch.autograd.grad(loss, flat, create_graph=True)
    return flat - lr * grad


def _check_experts(experts, max_start_epoch: int, expert_epochs: int, syn_steps: int) -> None:
    if not experts:
        raise ValueError("no expert trajectories; train some with train_experts")
    if max_start_epoch < 1 or expert_epochs < 1 or syn_steps < 1:
        raise ValueError("max_start_epoch, expert_epochs and syn_steps must be at least 1")
    shortest = min(len(t) for t in experts) - 1
    if max_start_epoch - 1 + expert_epochs > shortest:
        raise ValueError(f"expert trajectories hold {shortest} epochs but start epochs up to "
                         f"{max_start_epoch - 1} plus expert_epochs {expert_epochs} need "
                         f"{max_start_epoch - 1 + expert_epochs}; train longer experts (max_epochs_kept "
                         f">= max_start_epoch + expert_epochs)")


def _unroll(fn: _Functional, images, labels, syn_lr, theta0, syn_steps: int, batch: int, generator,
            dsa: bool, dsa_strategy: str, low_memory: bool) -> torch.Tensor:
    """The student's end point after ``syn_steps`` SGD steps from theta0 on the
    synthetic set, keeping the graph back to the images and the lr."""
    n_syn, device = len(labels), images.device
    flat = theta0.clone().requires_grad_(True)
    chunks: list[torch.Tensor] = []
    for _ in range(syn_steps):
        if not chunks:  # MTT: a fresh permutation, split into batches, popped from the end
            perm = torch.randperm(n_syn, generator=generator, device=generator.device)
            chunks = list(torch.split(perm.to(device), batch))
        idx = chunks.pop()
        draw = sample_dsa(len(idx), generator, dsa_strategy) if dsa else None
        step = functools.partial(_student_step, fn, draw)
        x, y = images[idx], labels[idx]
        if low_memory:
            flat = checkpoint(step, flat, x, y, syn_lr, use_reentrant=False)
        else:
            flat = step(flat, x, y, syn_lr)
    return flat


def distill_mtt(real_x: torch.Tensor, real_y: torch.Tensor, num_classes: int,
                experts: list[list[torch.Tensor]], model_fn: ModelFn, ipc: int, iterations: int,
                syn_steps: int, expert_epochs: int, max_start_epoch: int, lr_img: float = 100.0,
                lr_lr: float = 1e-5, lr_init: float = 0.01, batch_syn: int | None = None,
                dsa: bool = True, init: str = "real", *, generator: torch.Generator,
                low_memory: bool = False, return_lr: bool = False,
                dsa_strategy: str = DEFAULT_STRATEGY,
                callback: Callable[[int, float, torch.Tensor], None] | None = None):
    """Returns (images, labels) (class-major, on real_x's device), or
    (images, labels, lr) with ``return_lr``: the learned student lr, which
    MTT also uses to train its evaluation networks.

    lr_img: the loss is a ratio of squared distances of order 1 whose
    gradient is spread over every synthetic pixel, so per-pixel gradients are
    small and MTT uses a large image lr (1000 for its ZCA-whitened CIFAR
    runs). For plain normalised pixels (unit variance per channel) the default
    is 100: on digits/LeNet the first iterations' mean |grad| per pixel was
    1e-3..4e-3, so a step of 0.1-0.4 per pixel, already large next to a pixel
    std of 1; lr_img 1000 diverged there (NaN). Use ~1000 with ZCA, as MTT.
    lr_lr 1e-5 and lr_init 0.01 are MTT's (lr_init = the experts' lr).
    batch_syn None: the whole synthetic set each student step (MTT's default).
    ``callback(iteration, loss, images, lr)``: after each iteration (syncs the device)."""
    check_real(real_x, real_y, num_classes)
    _check_experts(experts, max_start_epoch, expert_epochs, syn_steps)
    device = real_x.device
    images, labels = init_images(real_x, real_y, ipc, num_classes, init, generator=generator)
    images.requires_grad_(True)
    syn_lr = torch.tensor(float(lr_init), device=device, requires_grad=True)
    optimizer_img = torch.optim.SGD([images], lr=lr_img, momentum=0.5)
    optimizer_lr = torch.optim.SGD([syn_lr], lr=lr_lr, momentum=0.5)
    fn = _Functional(build(model_fn, generator, device))  # the structure; weights come from experts
    fn.module.train()
    fn.module.requires_grad_(False)
    if fn.numel != experts[0][0].numel():
        raise ValueError(f"the experts have {experts[0][0].numel()} parameters but model_fn's "
                         f"network has {fn.numel}; train the experts with the same model_fn")
    n_syn = len(labels)
    batch = n_syn if batch_syn is None else min(batch_syn, n_syn)
    for it in range(iterations):
        trajectory = experts[int(torch.randint(len(experts), (1,), generator=generator,
                                               device=generator.device))]
        start = int(torch.randint(max_start_epoch, (1,), generator=generator, device=generator.device))
        theta0 = trajectory[start].to(device)
        target = trajectory[start + expert_epochs].to(device)
        flat = _unroll(fn, images, labels, syn_lr, theta0, syn_steps, batch, generator, dsa, dsa_strategy,
                       low_memory)
        loss = ((flat - target) ** 2).sum() / ((theta0 - target) ** 2).sum()
        optimizer_img.zero_grad(set_to_none=True)
        optimizer_lr.zero_grad(set_to_none=True)
        loss.backward()
        optimizer_img.step()
        optimizer_lr.step()
        if callback is not None:  # the learned lr too: an evaluation mid-way trains with it
            callback(it, float(loss.detach()), images.detach(), float(syn_lr.detach()))
        del flat, loss
    images = images.detach()
    if return_lr:
        return images, labels, float(syn_lr.detach())
    return images, labels
