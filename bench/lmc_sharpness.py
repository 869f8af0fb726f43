"""Time of the instability and sharpness analyses: raylth's evaluate_path
(30 alpha points, test set + a train subset), hessian_diagonal (Hutchinson)
and top_eigenvalue (power iteration), each against a plain-PyTorch reference
in the same run (DataLoader evaluation; PyHessian-style loops).

    python bench/lmc_sharpness.py [--small|--full] [--num-workers N]
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import common
from raylth.engine.data import load_dataset
from raylth.engine.interpolate import alpha_grid, evaluate_path
from raylth.engine.models import build_model, prunable_weight_names
from raylth.engine.data import fixed_batches
from raylth.engine.sharpness import hessian_diagonal, top_eigenvalue
from raylth.engine.fastpath import FastPath
from raylth.specs import DataSpec, ModelSpec

# test_images None: the whole test set. eval_batch is also the BN-reset batch.
SIZES = {"full": {"model": "resnet18", "width": 64, "test_images": None, "train_limit": 1000,
                  "alphas": 30, "eval_batch": 1024, "bn_batches": 10,
                  "probes": 10, "batches": 4, "batch_size": 128, "iterations": 10},
         "small": {"model": "resnet20", "width": 8, "test_images": 200, "train_limit": 200,
                   "alphas": 30, "eval_batch": 200, "bn_batches": 2,
                   "probes": 10, "batches": 4, "batch_size": 32, "iterations": 10}}


# -- references ------------------------------------------------------------------
class Normalised(torch.utils.data.Dataset):
    """One image at a time: to float and normalise, as ToTensor + Normalize."""

    def __init__(self, x, y, mean, std):
        self.x, self.y = x, y
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return (self.x[i].float() - self.mean) / self.std, self.y[i]


@torch.no_grad()
def reference_path(model, a, b, loaders, alphas, device) -> list:
    """For each alpha: interpolate the state dict, load it, evaluate float32
    through DataLoaders (test, train subset)."""
    model.eval()
    out = []
    for alpha in alphas:
        model.load_state_dict({k: (1 - alpha) * a[k] + alpha * b[k] if a[k].is_floating_point() else a[k]
                               for k in a})
        row = []
        for loader in loaders:
            loss, correct, n = 0.0, 0, 0
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = model(x)
                loss += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
                n += len(y)
            row.append((loss / n, 1 - correct / n))
        out.append(row)
    return out


def reference_hutchinson(model, batches, params, probes: int) -> list[torch.Tensor]:
    """PyHessian-style: probes outside, batches inside, a fresh graph per HVP."""
    total = sum(len(y) for _, y in batches)
    acc = [torch.zeros_like(p) for p in params]
    model.eval()
    for _ in range(probes):
        z = [torch.randint_like(p, 0, 2) * 2 - 1 for p in params]
        for x, y in batches:
            loss = F.cross_entropy(model(x), y, reduction="sum") / total
            grads = torch.autograd.grad(loss, params, create_graph=True)
            hz = torch.autograd.grad(grads, params, grad_outputs=z)
            for a_, zi, h in zip(acc, z, hz):
                a_.add_(zi * h)
    return [a_ / probes for a_ in acc]


def reference_top_eigenvalue(model, batches, iterations: int) -> float:
    """PyHessian-style power iteration over all parameters."""
    total = sum(len(y) for _, y in batches)
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    v = [torch.randn_like(p) for p in params]
    eig = 0.0
    for _ in range(iterations):
        norm = torch.sqrt(sum((t * t).sum() for t in v))
        v = [t / norm for t in v]
        hv = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            loss = F.cross_entropy(model(x), y, reduction="sum") / total
            grads = torch.autograd.grad(loss, params, create_graph=True)
            for acc, h in zip(hv, torch.autograd.grad(grads, params, grad_outputs=v)):
                acc.add_(h)
        eig = float(sum((h * t).sum() for h, t in zip(hv, v)))
        v = hv
    return eig


# -- benchmark ---------------------------------------------------------------------
def main():
    args = common.parse_args(__doc__.splitlines()[0])
    size = SIZES[common.size_name(args)]
    device = torch.device(args.device)
    workers = args.num_workers
    data = load_dataset(DataSpec(name="cifar10"), common.cifar_root(args))
    if size["test_images"]:
        data = dataclasses.replace(data, test_x=data.test_x[:size["test_images"]],
                                   test_y=data.test_y[:size["test_images"]])
    on_device = data.to(device)
    spec = ModelSpec(name=size["model"], width=size["width"])
    # Two untrained networks (seeds 0 and 1): the cost does not depend on the weights.
    fast = FastPath.for_device(device)
    state_a, state_b = (fast.prepare(build_model(spec, data.input_shape, data.num_classes, seed=s)).state_dict()
                        for s in (0, 1))
    model = fast.prepare(build_model(spec, data.input_shape, data.num_classes, seed=0))
    ref_model = build_model(spec, data.input_shape, data.num_classes, seed=0).to(device)  # NCHW, fp32
    alphas = alpha_grid(size["alphas"])
    eb = size["eval_batch"]
    r, w = common.repeat, args.warmup

    timings = {}
    timings["path"] = r(lambda: evaluate_path(model, state_a, state_b, on_device, alphas,
                                              train_limit=size["train_limit"], batch_size=eb),
                        device, args.repeats, w)
    timings["path_bn_reset"] = r(lambda: evaluate_path(model, state_a, state_b, on_device, alphas, bn="reset",
                                                       train_limit=size["train_limit"], batch_size=eb,
                                                       bn_batches=size["bn_batches"]),
                                 device, args.repeats, w)
    n_train = size["train_limit"]
    loaders = [DataLoader(Normalised(x, y, data.mean, data.std), batch_size=eb, num_workers=workers,
                          pin_memory=device.type == "cuda")
               for x, y in ((data.test_x, data.test_y), (data.train_x[:n_train], data.train_y[:n_train]))]
    timings["reference_path"] = r(lambda: reference_path(ref_model, state_a, state_b, loaders, alphas, device),
                                  device, args.repeats, w)

    model.load_state_dict(state_a)
    ref_model.load_state_dict(state_a)
    batches = fixed_batches(on_device, size["batches"], size["batch_size"], seed=0)
    named = dict(ref_model.named_parameters())
    ref_params = [named[n] for n in prunable_weight_names(ref_model)]
    timings["hessian_diagonal"] = r(lambda: hessian_diagonal(model, batches, size["probes"], seed=0),
                                    device, args.repeats, w)
    timings["reference_hutchinson"] = r(lambda: reference_hutchinson(ref_model, batches, ref_params,
                                                                     size["probes"]), device, args.repeats, w)
    eig = {}
    timings["top_eigenvalue"] = r(lambda: eig.__setitem__("raylth", top_eigenvalue(
        model, batches, size["iterations"], seed=0)), device, args.repeats, w)
    timings["reference_top_eigenvalue"] = r(lambda: eig.__setitem__("reference", reference_top_eigenvalue(
        ref_model, batches, size["iterations"])), device, args.repeats, w)

    t = {k: v["median_s"] for k, v in timings.items()}
    figures = {"evaluate_path_s": t["path"], "reference_path_s": t["reference_path"],
               "path_speedup": t["reference_path"] / t["path"], "evaluate_path_bn_reset_s": t["path_bn_reset"],
               "hessian_diagonal_s": t["hessian_diagonal"], "reference_hutchinson_s": t["reference_hutchinson"],
               "hutchinson_speedup": t["reference_hutchinson"] / t["hessian_diagonal"],
               "top_eigenvalue_s": t["top_eigenvalue"], "reference_top_eigenvalue_s": t["reference_top_eigenvalue"],
               "eigenvalue_speedup": t["reference_top_eigenvalue"] / t["top_eigenvalue"]}
    images = len(data.test_y) + min(n_train, len(data.train_y))
    details = {"sizes": size, "images_per_alpha": images, "num_workers": workers, "timings": timings,
               "top_eigenvalue": eig}
    notes = ["Networks are untrained (seeds 0 and 1); timing does not depend on the weights.",
             "evaluate_path: bf16 autocast and channels_last on CUDA, data resident on the device; "
             "reference: float32 NCHW, DataLoader over per-image normalisation, one .item() per batch.",
             "Sharpness: raylth reuses one gradient graph per batch for every probe; the reference "
             "(PyHessian style) rebuilds it per probe and batch. Power iteration is the same algorithm "
             "in both (one HVP per batch per iteration), so its ratio should be near 1.",
             "The two power iterations start from different random vectors; on an untrained network "
             "10 iterations need not converge, so their eigenvalues (details.top_eigenvalue) can differ."]
    common.publish("lmc_sharpness", args, f"{common.size_name(args)}, {common.device_name(device)}, "
                   f"{spec.name} w{spec.width}, {len(alphas)} alphas x {images} images", figures, details, notes)


if __name__ == "__main__":
    main()
