"""The Python API: the same operations as the CLI.

    import raylth
    outcome = raylth.run("sweeps/quickstart.yaml", storage="raylth-results")
    frame = raylth.results("raylth-results")          # a pandas DataFrame
    raylth.report("raylth-results", out="report")
    job = raylth.submit("sweeps/x.yaml", address="http://head:8265", storage="/shared/raylth")
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from raylth.errors import RaylthError


def load_sweep(path: str | os.PathLike):
    """A sweep file as a Sweep, or a ``kind: search`` file as a Search."""
    from raylth.sweep.files import read_yaml

    return parse_any(read_yaml(path), default_name=Path(path).stem, where=str(path))


def parse_any(raw, default_name: str = "sweep", where: str = "sweep"):
    """A sweep, or an Optuna search for ``kind: search`` (raylth.search)."""
    if isinstance(raw, dict) and raw.get("kind") == "search":
        from raylth.search import parse_search

        return parse_search(raw, default_name=default_name, where=where)
    from raylth.sweep.config import parse_sweep

    return parse_sweep(raw, default_name=default_name, where=where)


def _as_sweep(sweep, overrides=None):
    """A Sweep, or a Search for ``kind: search`` files and dicts, with
    ``overrides`` (``KEY=VALUE`` strings, raylth.sweep.overrides) applied."""
    from raylth.sweep.config import Sweep
    from raylth.sweep.files import read_yaml
    from raylth.sweep.overrides import apply_overrides
    from raylth.search import Search

    if isinstance(sweep, (Sweep, Search)):
        if overrides:
            raise RaylthError("overrides apply to a sweep file or dict, not to a parsed Sweep; pass the path")
        return sweep
    if isinstance(sweep, dict):
        raw, name, where = sweep, sweep.get("name", "sweep"), "sweep"
    elif isinstance(sweep, (str, os.PathLike)):
        raw, name, where = read_yaml(sweep), Path(sweep).stem, str(sweep)
    else:
        raise RaylthError(f"sweep: expected a YAML path, a dict or a Sweep, got {type(sweep).__name__}")
    from raylth.search.spec import SEARCH_KEYS

    top_keys = SEARCH_KEYS if isinstance(raw, dict) and raw.get("kind") == "search" else None
    return apply_overrides(raw, overrides, lambda r: parse_any(r, default_name=name, where=where), where, top_keys)


def run(sweep, storage=None, data_root=None, address=None, overrides=None, dry_run=False, devices=1,
        device_kind=None):
    """Run a sweep (a YAML path, a dict in the same format, or a Sweep) on Ray
    Tune; finished artifacts are reused. Returns a SweepOutcome. A ``kind:
    search`` file or dict runs its Optuna study instead (trials as Ray tasks,
    resumed from the study's storage) and returns a SearchOutcome.

    ``overrides``: ``["train.lr=0.05", "grid.seed=[0,1,2]"]``, checked like the
    file's keys. ``dry_run``: start nothing, return a raylth.sweep.dry_run.DryRun
    (``.lines()``: jobs by stage, what is stored, resources, estimated cost and
    wall time on ``devices`` devices of ``device_kind``)."""
    from raylth.sweep.runner import run_sweep
    from raylth.search import Search, run_search

    spec = _as_sweep(sweep, overrides)
    if dry_run:
        if isinstance(spec, Search):
            raise RaylthError(f"{spec.name}: --dry-run prices sweeps; a search's trials are chosen as it runs")
        from raylth.sweep.dry_run import dry_run as plan_dry_run
        from raylth.sweep.plan import checked_store

        store, data = checked_store(spec, storage, data_root, read_only=True)
        return plan_dry_run(spec, store, data, device_kind=device_kind, devices=devices)
    if isinstance(spec, Search):
        return run_search(spec, storage=storage, data_root=data_root, address=address)
    return run_sweep(spec, storage=storage, data_root=data_root, address=address)


class SubmittedSweep:
    """A sweep running as a Ray job on a cluster: query it, wait for it, stop it."""

    def __init__(self, client, job_id: str):
        self.client, self.job_id = client, job_id

    def __repr__(self) -> str:
        return f"SubmittedSweep({self.job_id!r}, {self.status()})"

    def status(self) -> str:
        return str(self.client.get_job_status(self.job_id).value)

    def logs(self) -> str:
        return self.client.get_job_logs(self.job_id)

    def wait(self, timeout_s: float | None = None, poll_s: float = 2.0) -> str:
        """Block until the job ends (or timeout_s passes); its final status."""
        import time

        deadline = None if timeout_s is None else time.time() + timeout_s
        while (status := self.status()) not in ("SUCCEEDED", "FAILED", "STOPPED"):
            if deadline is not None and time.time() > deadline:
                break
            time.sleep(poll_s)
        return status

    def stop(self) -> bool:
        return self.client.stop_job(self.job_id)


# Anchored (a leading /): Ray reads excludes as .gitignore lines, where a bare "data" would also
# drop raylth/engine/data/ from the upload.
UPLOAD_EXCLUDES = ("/.git", "/raylth-results", "/data", "/.bench-data")
# Secrets never leave the machine, wherever they lie in the tree (unanchored .gitignore lines).
SECRET_EXCLUDES = (".env", ".env.*", "*.pem", "*.key", "*.p12", "id_rsa*", "id_ed25519*", "*credentials*",
                   ".netrc", ".aws/", ".ray/", "auth_token", "*.token")


def submit(sweep, address: str, storage=None, data_root=None, working_dir=".",
           runtime_env: dict | None = None, overrides=None) -> SubmittedSweep:
    """Launch ``raylth run SWEEP`` as a job on a running Ray cluster (its
    dashboard address, e.g. http://127.0.0.1:8265). ``sweep`` is a path
    relative to ``working_dir``, which is uploaded; the sweep is checked here
    first. ``storage`` must be a place every node sees: a shared mount or a
    bucket URI (s3://bucket/path)."""
    import shlex

    from ray.job_submission import JobSubmissionClient

    path = Path(working_dir) / sweep
    _as_sweep(path, overrides)  # a bad sweep or override fails here, not on the cluster
    # the interpreter's module entry point: no console script needs to be on the cluster's PATH
    command = ["python", "-m", "raylth.cli.main", "run", str(sweep), *(overrides or [])]
    command += ["--storage", str(storage)] if storage else []
    command += ["--data-root", str(data_root)] if data_root else []
    client = JobSubmissionClient(address)
    excludes = [*UPLOAD_EXCLUDES, *SECRET_EXCLUDES]
    print(f"raylth.submit: uploading {Path(working_dir).resolve()} to {address}, leaving out "
          f"{', '.join(excludes)}", file=sys.stderr)
    env = {"working_dir": str(working_dir), "excludes": excludes} | (runtime_env or {})
    return SubmittedSweep(client, client.submit_job(entrypoint=shlex.join(command), runtime_env=env))


def results(storage="raylth-results", sweep=None):
    """Finished results as a pandas DataFrame, one row per artifact."""
    from raylth.reporting import results_frame

    _require_store(storage)
    return results_frame(storage, sweep)


def history(storage="raylth-results", sweep=None):
    """Every evaluation of every stored training as a pandas DataFrame: one
    row per entry of an artifact's history (step, epoch, train_loss,
    test_loss, test_acc, ...), with its sweep, stage, method, seed, level,
    trial, id and the results' config/ columns."""
    from raylth.reporting.history import history_frame

    _require_store(storage)
    return history_frame(storage, sweep)


def status(storage="raylth-results"):
    """Per sweep: the state of each job (raylth.sweep.plan.JobState.STATES:
    finished, running, damaged, failed, interrupted, missing)."""
    from raylth.store.records import read_errors, sweep_names
    from raylth.sweep.drivers import drivers
    from raylth.sweep.plan import job_states, read_record

    store = _require_store(storage)
    sweeps = {}
    for name in sweep_names(store):
        alive, gone = drivers(store, name)
        sweeps[name] = job_states(store, read_record(store, name), read_errors(store, name),
                                  drivers_alive=bool(alive) if alive or gone else None)
    return sweeps


def report(storage="raylth-results", out="raylth-report", sweep=None):
    """Write results.csv, summary.md and accuracy-vs-sparsity PNGs into ``out``."""
    from raylth.reporting import write_report

    from raylth.store.files import check_folder_writable

    _require_store(storage)
    check_folder_writable(Path(out).expanduser().resolve(), "report folder", "--out")
    return write_report(storage, out, sweep)


def verify(storage="raylth-results", repair=False, progress=None):
    """Check every file of every artifact against its manifest's size and
    checksum; with ``repair``, move damaged artifacts to .broken/ (the next
    run computes them again). A list of raylth.store.verify.Finding."""
    from raylth.store.verify import verify_store

    return verify_store(_require_store(storage), repair=repair, progress=progress)


def export(storage, ticket_id, out, prune_form=False, force=False, data_root=None):
    """Write a stored ticket (an artifact holding a mask: an imp level, a
    random_prune/reinit branch) as a plain PyTorch file that
    ``torch.load(out, weights_only=True)`` reads without raylth: its mask, its
    rewind-point weights (``prune_form``: as torch.nn.utils.prune keeps them),
    model, training recipe and provenance (raylth.reporting.export). An
    existing ``out`` is replaced only with ``force``. Returns the file's Path."""
    from raylth.reporting.export import export_ticket
    from raylth.sweep.paths import resolve_data_root

    return export_ticket(_require_store(storage), ticket_id, out, prune_form=prune_form, force=force,
                         data_root=resolve_data_root(data_root))


def _require_store(storage):
    from raylth.store import Store
    from raylth.sweep.paths import resolve_storage

    store = Store(resolve_storage(storage))
    if not store.is_bucket and store.root.exists() and not store.root.is_dir():
        raise RaylthError(f"{store.location}: is a file, not a storage folder; pass the folder a sweep wrote to")
    if not store.exists():
        raise RaylthError(f"{store.location}: no such storage root; pass the folder or URI a sweep wrote to "
                          "(its `storage:` or --storage)")
    return store
