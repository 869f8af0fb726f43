"""The device the device-portable tests run on: RAYLTH_TEST_DEVICE (default
cpu). bench/gpu_check.sh runs them with cuda under deterministic algorithms
(so the bitwise assertions apply there unchanged)."""

import os

import torch

TEST_DEVICE = torch.device(os.environ.get("RAYLTH_TEST_DEVICE", "cpu"))

if TEST_DEVICE.type == "cuda":
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
