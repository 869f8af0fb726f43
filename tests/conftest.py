"""Shared pytest fixtures."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"

# Save the resume state at every epoch end (the default is at most every 30 s),
# so tests that interrupt short runs find one; inherited by Ray workers.
os.environ.setdefault("RAYLTH_RESUME_EVERY_S", "0")


@pytest.fixture(scope="session")
def cifar10_subset_root(tmp_path_factory):
    """A folder holding cifar-10-batches-py with 20 images per class in each
    split, rebuilt from ../shared/data; skipped when that is not there."""
    script = SHARED / "data" / "cifar10_from_jpg.py"
    if not script.is_file() or not (script.parent / "cifar10-jpg.tar.xz").is_file():
        pytest.skip(f"no {script} (or its archive) beside the repository")
    root = tmp_path_factory.mktemp("cifar10_subset")
    subprocess.run([sys.executable, str(script), str(root), "--limit-per-class", "20"],
                   check=True, capture_output=True, timeout=120)
    return root


@pytest.fixture(scope="session")
def digits_data():
    """scikit-learn's digits as a raylth Dataset on the CPU (bundled: offline)."""
    from raylth.engine.data import load_dataset
    from raylth.specs import DataSpec

    return load_dataset(DataSpec("digits"))
