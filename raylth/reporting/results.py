"""Results: one row per finished artifact of every sweep recorded in a store.

Reads only the store. Artifacts computed outside any sweep (from Python)
appear with an empty ``sweep`` and the method their kind implies.

Columns (``columns()``: the head, each analysis's metrics, the tail; then ``config/<dotted key>``):

- ``test_acc``: at the end of training; ``best_test_acc``: the best of the
  training's test evaluations (what the paper's code and IDC report), NaN
  where there were none.
- ``points_seen``: training points (images x passes) of the artifact's own
  training. A ticket stores that apart, as ``train_points_seen``, and its
  distilled trunk's levels 0..L under ``points_seen`` (its meaning before
  the two were told apart): the row reads the former.
- ``search_points``: training points of the pruning loop that produced the
  network, up to and including its level (the stages' ``loop_points`` fact,
  also the x axis of the distilled-pruning report); NaN for rows that are no
  pruning loop's network (analyses, distillations).
- ``config/<key>``: one column per trial field (the trial spec flattened
  with dotted keys, ``seed`` for three equal seeds) that takes more than one
  value among the trials of a sweep; with several sweeps, the union of those
  keys, each row holding its own trial's value (NaN where its spec lacks the
  key, and for artifacts no sweep claims).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from raylth.errors import RaylthError
from raylth.specs import TrialSpec
from raylth.specs.refs import flatten
from raylth.stages.analyses import result_columns
from raylth.stages.points import Points
from raylth.stages.registry import method_network_kinds, stage_of, stored_spec
from raylth.stages.trials import PlannedJob, trial_plan
from raylth.store import Artifact, Store
from raylth.store.files import atomic_write_bytes
from raylth.store.records import read_record, sweep_names

HEAD = ["sweep", "stage", "method", "dataset", "model", "seed", "level", "sparsity", "test_acc", "best_test_acc",
        "rewind", "noise"]
TAIL = ["points_seen", "search_points", "wall_s", "trial", "id"]


def columns() -> list[str]:
    """The results' columns: the head, every analysis's metrics (its plugin declares
    them: Analysis.columns, e.g. lmc's instability_test), the tail."""
    return HEAD + result_columns() + TAIL
CONFIG = "config/"
FORMATS = ("md", "csv", "json", "parquet")


# -- config columns -------------------------------------------------------------------------
def flat_config(spec: TrialSpec) -> dict:
    """A trial's every field under its dotted key (``train.lr``), values
    hashable; seeds.init/order/augment as ``seed`` when all three are equal
    (the sweep files' shorthand)."""
    flat = flatten(spec.to_dict(), hashable=True)
    seeds = [f"seeds.{k}" for k in ("init", "order", "augment")]
    if all(k in flat for k in seeds) and len({flat[k] for k in seeds}) == 1:
        flat = {("seed" if k == seeds[0] else k): v for k, v in flat.items() if k not in seeds[1:]}
    return flat


def varying_keys(configs: list[dict]) -> list[str]:
    """The keys (in first-seen order) whose value is not the same in every
    config; a key missing from a config counts as None there."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    return [k for k in keys if len({c.get(k) for c in configs}) > 1]


@dataclass(frozen=True)
class Claim:
    """A stored artifact a recorded trial planned."""
    sweep: str
    label: str
    trial: TrialSpec
    job: PlannedJob
    artifact: Artifact


class Sweeps:
    """The sweeps recorded in a store (or the one named): their trials, the
    stored artifacts each planned, and the config columns of their rows."""

    def __init__(self, store: Store, sweep: str | None = None):
        names = [n for n in sweep_names(store) if sweep is None or n == sweep]
        self.trials = {name: read_record(store, name) for name in names}
        self._flat = {(name, label): flat_config(spec) for name, trials in self.trials.items()
                      for label, spec in trials}
        keys = {}
        for name, trials in self.trials.items():
            keys.update(dict.fromkeys(varying_keys([self._flat[name, label] for label, _ in trials])))
        self.keys = list(keys)

    @property
    def config_columns(self) -> list[str]:
        return [CONFIG + k for k in self.keys]

    def config(self, sweep: str, label: str) -> dict:
        flat = self._flat.get((sweep, label), {})
        return {CONFIG + k: flat.get(k) for k in self.keys}

    def claims(self, artifacts: dict[str, Artifact]):
        """Every (sweep, trial, job, artifact) of a stored artifact a trial
        planned, in the sweeps' and plans' order (an artifact two trials share
        is claimed by both)."""
        for name, trials in self.trials.items():
            for label, trial in trials:
                for job in trial_plan(label, trial):
                    for spec in job.specs:
                        if spec.id in artifacts:
                            yield Claim(name, label, trial, job, artifacts[spec.id])


# -- rows -------------------------------------------------------------------------------------
def _origin(artifacts: dict[str, Artifact], artifact: Artifact | None) -> dict:
    """Data set, model, seed and rewind step of the network an artifact is about."""
    if artifact is None:
        return {}
    return stage_of(artifact.kind).origin(stored_spec(artifact), lambda i: _origin(artifacts, artifacts.get(i)))


def best_accuracy(metrics: dict):
    """The best test accuracy of a training's evaluations (stored, or read from its history)."""
    if metrics.get("best_test_acc") is not None:
        return metrics["best_test_acc"]
    accs = [h["test_acc"] for h in metrics.get("history") or () if h.get("test_acc") is not None]
    return max(accs) if accs else None


def own_points(metrics: dict):
    """Training points of the artifact's own training (see the module's doc)."""
    return metrics.get("train_points_seen", metrics.get("points_seen"))


def search_points(points: Points, artifact: Artifact, method: str) -> float:
    """Training points of the pruning loop that produced it (NaN: none did)."""
    loop = stage_of(artifact.kind).loop_points
    return float("nan") if loop is None else loop(stored_spec(artifact), points, method)


def loaded_points(store: Store, artifacts: dict[str, Artifact]) -> Points:
    """``Points`` over artifacts already read (it reads others from the store)."""
    points = Points(store)
    points.cache.update({i: a.metrics for i, a in artifacts.items()})
    return points


def _row(artifacts, points, sweep: str, method: str, trial: str, artifact: Artifact) -> dict:
    m = artifact.metrics
    row = {"sweep": sweep, "stage": artifact.kind, "method": method, **_origin(artifacts, artifact),
           "level": m.get("level", 0), "sparsity": round(float(m.get("sparsity", 0.0)), 6),
           "test_acc": m.get("test_acc"), "best_test_acc": best_accuracy(m), "points_seen": own_points(m),
           "search_points": search_points(points, artifact, method),
           "wall_s": round(float(m.get("wall_s", 0.0)), 3), "trial": trial, "id": artifact.id}
    for key in result_columns():  # the analyses' metrics
        if key in m:
            row[key] = m[key]
    return row


def implied_method(artifacts, artifact: Artifact | None) -> str | None:
    """The method a stored artifact no sweep claims implies."""
    if artifact is None:
        return None
    return stage_of(artifact.kind).implied_method(stored_spec(artifact),
                                                  lambda i: implied_method(artifacts, artifacts.get(i)))


def network_rows(frame):
    """The rows of networks a method gave as its result (with a test accuracy)."""
    return frame[frame.stage.isin(method_network_kinds())]


def _rows(storage, sweep: str | None) -> tuple[list[dict], list[str]]:
    store = Store(storage)
    artifacts = {a.id: a for a in store.artifacts()}
    points = loaded_points(store, artifacts)
    sweeps = Sweeps(store, sweep)
    rows, claimed = [], set()
    for c in sweeps.claims(artifacts):
        # a method's preparation (e.g. a distilled trunk) and intermediates are no results
        if c.job.rows and stage_of(c.artifact.kind).results_row:
            rows.append(_row(artifacts, points, c.sweep, c.trial.method, c.label, c.artifact)
                        | sweeps.config(c.sweep, c.label))
        claimed.add(c.artifact.id)
    if sweep is None:
        rows += [_row(artifacts, points, "", implied_method(artifacts, a), "", a)
                 for i, a in artifacts.items() if i not in claimed and stage_of(a.kind).results_row]
    return rows, sweeps.config_columns


def result_rows(storage, sweep: str | None = None) -> list[dict]:
    return _rows(storage, sweep)[0]


def results_frame(storage, sweep: str | None = None):
    import pandas as pd

    rows, config = _rows(storage, sweep)
    return pd.DataFrame(rows, columns=columns() + config)


# -- output -----------------------------------------------------------------------------------
def write_table(frame, fmt: str = "md", out=None) -> None:
    """``frame`` as md, csv, json or parquet, into the file ``out`` or onto
    stdout. Parquet is binary: refused onto a terminal."""
    if fmt not in FORMATS:
        raise RaylthError(f"--format: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        if out is None and sys.stdout.isatty():
            raise RaylthError("--format parquet: binary output, not written to a terminal; "
                              "name a file with --out FILE (or redirect stdout)")
        table = arrow_table(frame)
        import pyarrow as pa
        import pyarrow.parquet as pq

        if out is not None:
            buffer = pa.BufferOutputStream()
            pq.write_table(table, buffer)
            atomic_write_bytes(Path(out), buffer.getvalue().to_pybytes())
        else:
            sys.stdout.flush()
            pq.write_table(table, sys.stdout.buffer)
        return
    if fmt == "csv":
        text = frame.to_csv(index=False)
    elif fmt == "json":
        text = frame.to_json(orient="records", indent=1) + "\n"
    else:
        text = (frame.to_markdown(index=False) if _has_tabulate() else frame.to_string(index=False)) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_bytes(Path(out), text.encode())


def arrow_table(frame):
    """``frame`` as a pyarrow Table; an object column pyarrow cannot type
    (values of mixed types) holds their text."""
    import pyarrow as pa

    columns = {}
    for name in frame.columns:
        values = frame[name]
        try:
            columns[name] = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[name] = pa.array([None if _missing(v) else str(v) for v in values], type=pa.string())
    return pa.table(columns)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _has_tabulate() -> bool:
    import importlib.util

    return importlib.util.find_spec("tabulate") is not None
