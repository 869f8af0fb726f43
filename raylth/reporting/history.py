"""Training histories: one row per evaluation of every stored training.

Each trained artifact's ``metrics["history"]`` (the evaluations its training
recorded: step, epoch, train and test loss, test accuracy, ...) becomes rows
carrying the artifact's identity as in the results (sweep, stage, method,
dataset, model, seed, level, sparsity, trial, id) and the same ``config/``
columns. Unlike the results it also holds the trainings a method prepares
(e.g. a distilled trunk's levels), under the trial that planned them.
"""

from __future__ import annotations

from raylth.reporting.results import Sweeps, _origin, implied_method
from raylth.store import Artifact, Store

IDENTITY = ["sweep", "stage", "method", "dataset", "model", "seed", "level", "sparsity"]
TAIL = ["trial", "id"]


def _rows_of(artifacts, sweep: str, method: str, trial: str, artifact: Artifact, config: dict) -> list[dict]:
    history = artifact.metrics.get("history")
    if not isinstance(history, list) or not history:
        return []
    origin = _origin(artifacts, artifact)
    m = artifact.metrics
    identity = {"sweep": sweep, "stage": artifact.kind, "method": method, "dataset": origin.get("dataset"),
                "model": origin.get("model"), "seed": origin.get("seed"), "level": m.get("level", 0),
                "sparsity": round(float(m.get("sparsity", 0.0)), 6), "trial": trial, "id": artifact.id}
    return [{**entry, **identity, **config} for entry in history if isinstance(entry, dict)]


def history_rows(storage, sweep: str | None = None) -> tuple[list[dict], list[str]]:
    """The rows, and the ``config/`` columns."""
    store = Store(storage)
    artifacts = {a.id: a for a in store.artifacts()}
    sweeps = Sweeps(store, sweep)
    rows, seen, claimed = [], set(), set()
    for c in sweeps.claims(artifacts):
        claimed.add(c.artifact.id)
        if (c.sweep, c.label, c.artifact.id) in seen:  # one trial may plan an artifact in several jobs
            continue
        seen.add((c.sweep, c.label, c.artifact.id))
        rows += _rows_of(artifacts, c.sweep, c.trial.method, c.label, c.artifact, sweeps.config(c.sweep, c.label))
    if sweep is None:
        for i, a in artifacts.items():
            if i not in claimed:
                rows += _rows_of(artifacts, "", implied_method(artifacts, a), "", a, {})
    return rows, sweeps.config_columns


def history_frame(storage, sweep: str | None = None):
    """A pandas DataFrame: the identity columns, the histories' own columns
    (in the order first seen), trial, id, then the config columns."""
    import pandas as pd

    rows, config = history_rows(storage, sweep)
    fixed = set(IDENTITY + TAIL + config)
    own = list(dict.fromkeys(k for row in rows for k in row if k not in fixed))
    return pd.DataFrame(rows, columns=IDENTITY + own + TAIL + config)
