"""Results: one row per finished artifact of every sweep recorded in a store.

Reads only the store. Artifacts computed outside any sweep (from Python)
appear with an empty ``sweep`` and the method their kind implies.
"""

from __future__ import annotations

from raylth.reporting import distill as distill_report
from raylth.specs import STAGE_SPECS
from raylth.store import Artifact, Store
from raylth.sweep.jobs import trial_jobs
from raylth.sweep.plan import read_record, sweep_names

COLUMNS = ["sweep", "stage", "method", "dataset", "model", "seed", "level", "sparsity",
           "test_acc", "rewind", "noise", "instability_test", "instability_train", "loss_barrier",
           "stable", "points_seen", "wall_s", "trial", "id"]
NETWORK_STAGES = ("train", "imp", "branch") + distill_report.NETWORK_KINDS


def _origin(artifacts: dict[str, Artifact], artifact: Artifact) -> dict:
    """Data set, model, seed and rewind step of the network an artifact is about."""
    spec = STAGE_SPECS[artifact.kind].from_stored(artifact.spec)
    if artifact.kind in distill_report.IMPLIED_METHODS:
        return distill_report.origin(spec)
    if artifact.kind in ("child", "lmc"):
        parent = artifacts.get(spec.parent)
        info = _origin(artifacts, parent) if parent else {}
        return info | {"rewind": str(spec.spawn), "noise": spec.noise}
    if artifact.kind in ("sharpness", "landscape"):
        ref = spec.network if artifact.kind == "sharpness" else spec.networks[0]
        other = artifacts.get(ref.split(":")[0])
        return _origin(artifacts, other) if other else {}
    core = spec.trunk if artifact.kind == "branch" else spec
    rewind = str(core.prune.rewind) if artifact.kind != "train" else ""
    return {"dataset": core.data.name, "model": core.model.name, "seed": core.seeds.init, "rewind": rewind}


def _row(artifacts, sweep: str, method: str, trial: str, artifact: Artifact) -> dict:
    m = artifact.metrics
    row = {"sweep": sweep, "stage": artifact.kind, "method": method, **_origin(artifacts, artifact),
           "level": m.get("level", 0), "sparsity": round(float(m.get("sparsity", 0.0)), 6),
           "test_acc": m.get("test_acc"), "points_seen": m.get("points_seen"),
           "wall_s": round(float(m.get("wall_s", 0.0)), 3), "trial": trial, "id": artifact.id}
    for key in ("instability_test", "instability_train", "loss_barrier", "stable"):
        if key in m:
            row[key] = m[key]
    return row


def _implied_method(artifacts, artifact: Artifact) -> str:
    if artifact.kind == "branch":
        return artifact.spec["method"]
    if artifact.kind in ("child", "lmc") and artifact.spec.get("parent") in artifacts:
        return _implied_method(artifacts, artifacts[artifact.spec["parent"]])
    return ({"train": "dense", "imp": "imp"} | distill_report.IMPLIED_METHODS).get(artifact.kind, artifact.kind)


def result_rows(storage, sweep: str | None = None) -> list[dict]:
    store = Store(storage)
    artifacts = {a.id: a for a in store.artifacts()}
    rows, claimed = [], set()
    for name in sweep_names(store):
        if sweep is not None and name != sweep:
            continue
        for trial in read_record(store, name):
            for job in trial_jobs(trial):
                for artifact_id in job.ids:
                    if artifact_id in artifacts:
                        if job.rows:  # a method's preparation (e.g. a distilled trunk) is no result
                            rows.append(_row(artifacts, name, trial.spec.method, trial.label, artifacts[artifact_id]))
                        claimed.add(artifact_id)
    if sweep is None:
        rows += [_row(artifacts, "", _implied_method(artifacts, a), "", a)
                 for i, a in artifacts.items() if i not in claimed]
    return rows


def results_frame(storage, sweep: str | None = None):
    import pandas as pd

    return pd.DataFrame(result_rows(storage, sweep), columns=COLUMNS)
