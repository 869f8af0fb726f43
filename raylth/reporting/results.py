"""Results: one row per finished artifact of every sweep recorded in a store.

Reads only the store. Artifacts computed outside any sweep (from Python)
appear with an empty ``sweep`` and the method their kind implies.
"""

from __future__ import annotations

from raylth.stages.registry import method_network_kinds, stage_of, stored_spec
from raylth.stages.trials import trial_plan
from raylth.store import Artifact, Store
from raylth.store.records import read_record, sweep_names

COLUMNS = ["sweep", "stage", "method", "dataset", "model", "seed", "level", "sparsity",
           "test_acc", "rewind", "noise", "instability_test", "instability_train", "loss_barrier",
           "stable", "points_seen", "wall_s", "trial", "id"]


def _origin(artifacts: dict[str, Artifact], artifact: Artifact | None) -> dict:
    """Data set, model, seed and rewind step of the network an artifact is about."""
    if artifact is None:
        return {}
    return stage_of(artifact.kind).origin(stored_spec(artifact), lambda i: _origin(artifacts, artifacts.get(i)))


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


def _implied_method(artifacts, artifact: Artifact | None) -> str | None:
    if artifact is None:
        return None
    return stage_of(artifact.kind).implied_method(stored_spec(artifact),
                                                  lambda i: _implied_method(artifacts, artifacts.get(i)))


def network_rows(frame):
    """The rows of networks a method gave as its result (with a test accuracy)."""
    return frame[frame.stage.isin(method_network_kinds())]


def result_rows(storage, sweep: str | None = None) -> list[dict]:
    store = Store(storage)
    artifacts = {a.id: a for a in store.artifacts()}
    rows, claimed = [], set()
    for name in sweep_names(store):
        if sweep is not None and name != sweep:
            continue
        for label, trial in read_record(store, name):
            for job in trial_plan(label, trial):
                for artifact_id in (spec.id for spec in job.specs):
                    if artifact_id in artifacts:
                        # a method's preparation (e.g. a distilled trunk) and intermediates are no results
                        if job.rows and stage_of(artifacts[artifact_id].kind).results_row:
                            rows.append(_row(artifacts, name, trial.method, label, artifacts[artifact_id]))
                        claimed.add(artifact_id)
    if sweep is None:
        rows += [_row(artifacts, "", _implied_method(artifacts, a), "", a)
                 for i, a in artifacts.items() if i not in claimed and stage_of(a.kind).results_row]
    return rows


def results_frame(storage, sweep: str | None = None):
    import pandas as pd

    return pd.DataFrame(result_rows(storage, sweep), columns=COLUMNS)
