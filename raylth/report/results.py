"""Results: one row per finished artifact of every sweep recorded in a store.

Reads only the store. Artifacts computed outside any sweep (from Python)
appear with an empty ``sweep`` and the method their kind implies.
"""

from __future__ import annotations

from raylth.specs import STAGE_SPECS
from raylth.store import Artifact, Store
from raylth.sweep.plan import artifact_ids, read_record, sweep_names

COLUMNS = ["sweep", "stage", "method", "dataset", "model", "seed", "level", "sparsity",
           "test_acc", "rewind", "points_seen", "wall_s", "trial", "id"]


def _row(sweep: str, method: str, trial: str, artifact: Artifact) -> dict:
    spec = STAGE_SPECS[artifact.kind].from_dict(artifact.spec)
    core = spec.trunk if artifact.kind == "branch" else spec
    rewind = str(core.prune.rewind) if hasattr(core, "prune") else ""
    m = artifact.metrics
    return {"sweep": sweep, "stage": artifact.kind, "method": method,
            "dataset": core.data.name, "model": core.model.name, "seed": core.seeds.init,
            "level": m.get("level", 0), "sparsity": round(float(m.get("sparsity", 0.0)), 6),
            "test_acc": m.get("test_acc"), "rewind": rewind, "points_seen": m.get("points_seen"),
            "wall_s": round(float(m.get("wall_s", 0.0)), 3), "trial": trial, "id": artifact.id}


def _implied_method(artifact: Artifact) -> str:
    if artifact.kind == "branch":
        return artifact.spec["method"]
    return {"train": "dense", "imp": "imp"}.get(artifact.kind, artifact.kind)


def result_rows(storage, sweep: str | None = None) -> list[dict]:
    store = Store(storage)
    artifacts = {a.id: a for a in store.artifacts()}
    rows, claimed = [], set()
    for name in sweep_names(store):
        if sweep is not None and name != sweep:
            continue
        for trial in read_record(store, name):
            for artifact_id in artifact_ids(trial.spec):
                if artifact_id in artifacts:
                    rows.append(_row(name, trial.spec.method, trial.label, artifacts[artifact_id]))
                    claimed.add(artifact_id)
    if sweep is None:
        rows += [_row("", _implied_method(a), "", a) for i, a in artifacts.items() if i not in claimed]
    return rows


def results_frame(storage, sweep: str | None = None):
    import pandas as pd

    return pd.DataFrame(result_rows(storage, sweep), columns=COLUMNS)
