"""Gradient matching: DC (Zhao, Mopuri & Bilen, ICLR 2021) with DSA (Zhao &
Bilen, ICML 2021), and IDC's multi-formation (Kim et al., ICML 2022).

Each iteration draws a fresh network. For ``outer_loop`` steps: per class,
the gradient of the cross-entropy of the network on a real class batch and
on the synthetic class images (same siamese DSA draw) are compared with
DC's layer-wise distance, the images take one SGD step (momentum 0.5) on the
summed distance, and then (except after the last outer step) the network
trains ``inner_loop`` epochs on the synthetic set (SGD lr_net, batches of
``batch_train``, DSA per example), as DC's ``epoch('train', ...)``: one step
each while the decoded set fits one batch (<= 256 images).

factor > 1 (IDC): each stored image is a factor x factor mosaic; it is
decoded into factor^2 full-size images (``decode_multi``) wherever it is
used, so ``ipc`` stored images give ipc * factor^2 training images.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from raylth.engine.data.dsa import DEFAULT_STRATEGY, apply_dsa, sample_dsa
from .common import ClassSampler, ModelFn, build, check_real, has_batchnorm, sgd_epoch
from .init import decode_labels, decode_multi, init_images

BN_PER_CLASS = 16  # DC's BNSizePC: real images per class that set the BatchNorm statistics


def layer_distance(gr: torch.Tensor, gs: torch.Tensor) -> torch.Tensor:
    """DC's distance_wb: per output channel (row), 1 - cosine, summed.
    Vectors (biases, norm parameters) count 0, as in DC."""
    if gr.dim() == 1:
        return gr.new_zeros(())
    gr, gs = gr.reshape(gr.shape[0], -1), gs.reshape(gs.shape[0], -1)
    cos = (gr * gs).sum(-1) / (gr.norm(dim=-1) * gs.norm(dim=-1) + 1e-6)
    return (1 - cos).sum()


def match_distance(grads_real, grads_syn) -> torch.Tensor:
    """DC's match_loss ('ours'): layer_distance summed over parameters."""
    return sum(layer_distance(r, s) for r, s in zip(grads_real, grads_syn))


def _bn_modules(net: nn.Module):
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _freeze_bn_on_real(net: nn.Module, sampler: ClassSampler, num_classes: int) -> None:
    """DC: BatchNorm statistics from a mixed real batch, then frozen."""
    net.train()
    with torch.no_grad():
        net(torch.cat([sampler.get(c, BN_PER_CLASS) for c in range(num_classes)]))
    for m in _bn_modules(net):
        m.eval()


def _matching_loss(net, params, decoded, sampler: ClassSampler, num_classes: int, per_class: int,
                   batch_real: int, dsa: bool, generator, dsa_strategy: str) -> torch.Tensor:
    """Sum over classes of the distance between the gradients of a real batch
    and of the class's synthetic images (the latter keeping its graph)."""
    device = decoded.device
    loss = torch.zeros((), device=device)
    for c in range(num_classes):
        real = sampler.get(c, batch_real)
        syn = decoded[c * per_class:(c + 1) * per_class]
        if dsa:
            draw = sample_dsa(1, generator, dsa_strategy)  # siamese
            real, syn = apply_dsa(real, draw), apply_dsa(syn, draw)
        y_real = torch.full((len(real),), c, device=device, dtype=torch.long)
        y_syn = torch.full((len(syn),), c, device=device, dtype=torch.long)
        g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), y_real), params)]
        g_syn = torch.autograd.grad(F.cross_entropy(net(syn), y_syn), params, create_graph=True)
        loss = loss + match_distance(g_real, g_syn)
    return loss


def distill_gm(real_x: torch.Tensor, real_y: torch.Tensor, num_classes: int, model_fn: ModelFn,
               ipc: int, iterations: int, outer_loop: int, inner_loop: int, lr_img: float = 0.1,
               lr_net: float = 0.01, batch_real: int = 256, dsa: bool = True, factor: int = 1,
               init: str = "real", *, generator: torch.Generator, batch_train: int = 256,
               dsa_strategy: str = DEFAULT_STRATEGY,
               callback: Callable[[int, float, torch.Tensor], None] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the STORED (images (num_classes * ipc, C, H, W), labels),
    class-major, on real_x's device; with factor > 1 the training set is
    ``decode_multi(images, factor), decode_labels(labels, factor)``.
    DC's schedules: ipc 1 -> outer_loop 1, inner_loop 1; ipc 10 -> 10, 50;
    ipc 50 -> 50, 10. ``callback(iteration, loss, images)``: after each iteration,
    with the mean matching loss over its outer steps."""
    check_real(real_x, real_y, num_classes)
    if outer_loop < 1 or inner_loop < 0:
        raise ValueError(f"outer_loop {outer_loop} must be >= 1 and inner_loop {inner_loop} >= 0")
    device = real_x.device
    images, labels = init_images(real_x, real_y, ipc, num_classes, init, generator=generator,
                                 factor=factor)
    images.requires_grad_(True)
    optimizer_img = torch.optim.SGD([images], lr=lr_img, momentum=0.5)
    sampler = ClassSampler(real_x, real_y, num_classes, generator)
    train_labels = decode_labels(labels, factor)
    per_class = factor * factor * ipc  # decoded images per class
    for it in range(iterations):
        loss_sum = 0.0
        net = build(model_fn, generator, device)
        net.train()
        params = [p for p in net.parameters() if p.requires_grad]
        optimizer_net = torch.optim.SGD(params, lr=lr_net)  # DC: plain SGD
        with_bn = has_batchnorm(net)
        for ol in range(outer_loop):
            if with_bn:
                _freeze_bn_on_real(net, sampler, num_classes)
            loss = _matching_loss(net, params, decode_multi(images, factor), sampler, num_classes, per_class,
                                  batch_real, dsa, generator, dsa_strategy)
            optimizer_img.zero_grad(set_to_none=True)
            loss.backward(inputs=[images])  # not into the network's .grad
            optimizer_img.step()
            if callback is not None:
                loss_sum += float(loss.detach())
            if with_bn:
                net.train()
            if ol == outer_loop - 1:
                break
            train_x = decode_multi(images.detach(), factor)
            for _ in range(inner_loop):
                sgd_epoch(net, optimizer_net, train_x, train_labels, batch_train, generator, dsa, dsa_strategy)
        if callback is not None:
            callback(it, loss_sum / outer_loop, images.detach())
    return images.detach(), labels
