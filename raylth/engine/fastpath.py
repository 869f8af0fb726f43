"""How a network runs: the fast path (bf16 autocast, channels_last, fused
optimizer kernels) or exact float32, and the float32 matmul precision.

The fast path is CUDA's default. CPU can take it too (``RAYLTH_FAST_PATH=1``,
or ``StageContext(fast=True)``): autocast to bf16, channels_last and the fused
SGD/Adam kernels all exist on CPU, so CI runs every line of the fast path.
What stays CUDA-only is listed in the README (NCCL, SyncBatchNorm's kernel,
``cuda.synchronize``, the TF32 switches' effect).

Precision. cuDNN's default on Ampere/Hopper is TF32 for float32 convolutions;
each stage states its own (``precision``): "float32" turns TF32 off for
convolutions and matmuls (the Hessian, the MTT unroll), "tf32" allows it
(training under bf16 autocast, whose float32 remainder gains speed and loses
nothing that bf16 kept).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from raylth.errors import RaylthError

PRECISIONS = ("float32", "tf32")


@dataclass(frozen=True)
class FastPath:
    device: torch.device
    on: bool

    @classmethod
    def for_device(cls, device: torch.device, fast: bool | None = None) -> "FastPath":
        """``fast`` as given, else RAYLTH_FAST_PATH (0/1), else on for CUDA."""
        device = torch.device(device)
        if fast is None:
            env = os.environ.get("RAYLTH_FAST_PATH", "")
            if env not in ("", "0", "1"):
                raise RaylthError(f"RAYLTH_FAST_PATH={env!r}: use 1 (bf16, channels_last, fused optimizer) "
                                  "or 0 (float32)")
            fast = device.type == "cuda" if env == "" else env == "1"
        return cls(device, bool(fast))

    def autocast(self):
        """bf16 autocast on the fast path; float32 (no autocast) otherwise."""
        if self.on:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """channels_last for image batches on the fast path."""
        if self.on and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.on else model

    def optimizer_options(self) -> dict:
        """Fused kernels on the fast path; else foreach (the fast unfused one)."""
        return {"fused": True} if self.on else {"foreach": True}

    @property
    def name(self) -> str:
        return "bf16" if self.on else "float32"


@contextlib.contextmanager
def precision(mode: str):
    """float32 matmuls and convolutions in ``mode`` ("float32": no TF32;
    "tf32": TF32 allowed), restored afterwards."""
    if mode not in PRECISIONS:
        raise ValueError(f"precision {mode!r}: use one of {PRECISIONS}")
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    allow = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
