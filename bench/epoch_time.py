"""Seconds per training epoch of ResNet-18 on CIFAR-10: raylth's Trainer
(dense, and masked at 90% sparsity) against a reference loop written the way
the reference codebases train (a DataLoader over per-image CPU transforms,
float32, no channels_last).

    python bench/epoch_time.py [--small|--full] [--num-workers N]

GPU target (full size, batch 512, H100): raylth dense <= 2.5 s/epoch, >= 3x
faster than the reference, masked <= 10% slower than dense.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import common
from raylth.engine.data import load_dataset
from raylth.engine.masks import full_mask, prune, sparsity
from raylth.engine.models import build_model
from raylth.engine.train import Trainer
from raylth.specs import DataSpec, ModelSpec, Seeds, Step, TrainSpec

SIZES = {"full": {"width": 64, "train_size": None, "batch_size": 512},
         "small": {"width": 16, "train_size": 1000, "batch_size": 100}}
SPARSITY = 0.9
SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}


class PerImageCifar(torch.utils.data.Dataset):
    """torchvision's RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
    Normalize, one image at a time, in plain torch ops (no torchvision here)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean, std):
        self.x, self.y = x, y  # uint8 (N, 3, 32, 32) on the CPU
        self.mean = torch.tensor(mean).view(3, 1, 1) / 255
        self.std = torch.tensor(std).view(3, 1, 1) / 255

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = F.pad(self.x[i], (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,)).tolist()
        img = img[:, top:top + 32, left:left + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(2)
        return (img.float() / 255 - self.mean) / self.std, self.y[i]


def reference_epochs(model, loader, device, epochs: int) -> list[float]:
    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), **SGD)
    times = []
    for _ in range(epochs):
        common.sync(device)
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        common.sync(device)
        times.append(time.perf_counter() - start)
    return times


def trainer_epochs(model, data, batch_size, device, epochs: int, mask=None, compile=False) -> list[float]:
    """Per-epoch times of one Trainer.run over ``epochs`` epochs (on_epoch stamps);
    with ``compile`` the first (warm-up) epochs hold the compilation."""
    spec = TrainSpec(batch_size=batch_size, duration=Step(epochs, "ep"), **SGD)
    trainer = Trainer(model, common.without_test(data), spec, Seeds(), augment=True, mask=mask,
                      device=device, compile=compile)
    stamps = []

    def on_epoch(_):
        common.sync(device)
        stamps.append(time.perf_counter())

    common.sync(device)
    stamps.append(time.perf_counter())
    trainer.run(on_epoch=on_epoch)
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main():
    args = common.parse_args(__doc__.splitlines()[0], configure=lambda p: p.add_argument(
        "--compile", action="store_true", help="also time a torch.compile'd Trainer (warm-up epochs hold the compile)"))
    size = SIZES[common.size_name(args)]
    device = torch.device(args.device)
    workers = args.num_workers
    data = load_dataset(DataSpec(name="cifar10", train_size=size["train_size"]), common.cifar_root(args))
    n, bs = len(data.train_y), size["batch_size"]
    model = lambda: build_model(ModelSpec(name="resnet18", width=size["width"]), data.input_shape,
                                data.num_classes, seed=0)
    epochs = args.warmup + args.repeats

    loader = DataLoader(PerImageCifar(data.train_x, data.train_y, data.mean, data.std), batch_size=bs,
                        shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda")
    ref = reference_epochs(model(), loader, device, epochs)[args.warmup:]
    dense = trainer_epochs(model(), data, bs, device, epochs)[args.warmup:]
    net = model()
    mask = prune("global_magnitude", net.state_dict(), full_mask(net), SPARSITY)
    masked = trainer_epochs(net, data, bs, device, epochs, mask=mask)[args.warmup:]

    compiled = (trainer_epochs(model(), data, bs, device, epochs, compile=True)[args.warmup:]
                if args.compile else None)

    r, d, m = common.median(ref), common.median(dense), common.median(masked)
    images = (n // bs) * bs
    figures = {"reference_s_per_epoch": r, "raylth_dense_s_per_epoch": d, "raylth_masked_s_per_epoch": m,
               "speedup_reference_over_dense": r / d, "speedup_reference_over_masked": r / m,
               "masked_overhead_pct": 100 * (m / d - 1), "raylth_dense_images_per_s": images / d}
    if compiled:
        figures["raylth_compiled_s_per_epoch"] = common.median(compiled)
    details = {"sizes": size, "train_images": n, "images_per_epoch": images, "num_workers": workers,
               "mask_sparsity": sparsity(mask), "times_s": {"reference": ref, "dense": dense, "masked": masked},
               "targets_full_gpu": {"raylth_dense_s_per_epoch": "<= 2.5 (H100)",
                                    "speedup_reference_over_dense": ">= 3", "masked_overhead_pct": "<= 10"}}
    notes = ["Training epochs only: the Trainer gets an empty test split so its per-epoch test "
             "evaluation costs nothing, and the reference loop does not evaluate.",
             "Reference: DataLoader(shuffle, drop_last, per-image pad/crop/flip/normalise on the CPU; "
             "workers start again each epoch, the default), "
             "float32, NCHW, torch.optim.SGD defaults; raylth: data on the device, batched crop+flip, "
             "bf16 autocast and channels_last on CUDA, fused SGD on CUDA / foreach on CPU."]
    common.publish("epoch_time", args, f"{common.size_name(args)}, {common.device_name(device)}, "
                   f"resnet18 w{size['width']}, {n} images, batch {bs}", figures, details, notes)


if __name__ == "__main__":
    main()
