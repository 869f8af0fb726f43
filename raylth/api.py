"""The Python API: the same operations as the CLI.

    import raylth
    outcome = raylth.run("sweeps/quickstart.yaml", storage="raylth-results")
    frame = raylth.results("raylth-results")          # a pandas DataFrame
    raylth.report("raylth-results", out="report")
"""

from __future__ import annotations

import os
from pathlib import Path

from raylth.errors import RaylthError


def _as_sweep(sweep):
    from raylth.sweep.config import Sweep, load_sweep, parse_sweep

    if isinstance(sweep, Sweep):
        return sweep
    if isinstance(sweep, dict):
        return parse_sweep(sweep, default_name=sweep.get("name", "sweep"))
    if isinstance(sweep, (str, os.PathLike)):
        return load_sweep(sweep)
    raise RaylthError(f"sweep: expected a YAML path, a dict or a Sweep, got {type(sweep).__name__}")


def run(sweep, storage=None, data_root=None, address=None):
    """Run a sweep (a YAML path, a dict in the same format, or a Sweep) on Ray
    Tune; finished artifacts are reused. Returns a SweepOutcome."""
    from raylth.sweep.runner import run_sweep

    return run_sweep(_as_sweep(sweep), storage=storage, data_root=data_root, address=address)


def results(storage="raylth-results", sweep=None):
    """Finished results as a pandas DataFrame, one row per artifact."""
    from raylth.report import results_frame

    _require_store(storage)
    return results_frame(storage, sweep)


def status(storage="raylth-results"):
    """Per sweep: the state of each job (finished / running / missing)."""
    from raylth.store import Store
    from raylth.sweep.plan import job_states, read_record, sweep_names

    store = Store(_require_store(storage))
    return {name: job_states(store, read_record(store, name)) for name in sweep_names(store)}


def report(storage="raylth-results", out="raylth-report", sweep=None):
    """Write results.csv, summary.md and accuracy-vs-sparsity PNGs into ``out``."""
    from raylth.report import write_report

    _require_store(storage)
    return write_report(storage, out, sweep)


def _require_store(storage) -> Path:
    path = Path(storage).expanduser()
    if not path.is_dir():
        raise RaylthError(f"{path}: no such storage root; pass the folder a sweep wrote to "
                          "(its `storage:` or --storage)")
    return path
