"""A sweep's record in the store (``sweeps/<name>.yaml``: its trials, by label
and spec) and the errors of its latest run (``sweeps/<name>.errors.json``).
Reports read them from here, without the sweep planner."""

from __future__ import annotations

import json
import logging
import time

import yaml

from raylth.specs import TrialSpec
from raylth.store.store import Store

log = logging.getLogger("raylth")

def errors_file(name: str) -> str:
    return f"sweeps/{name}.errors.json"


def write_errors(store: Store, name: str, failed: dict[str, str]) -> None:
    """The errors of the jobs that failed in the latest run (empty: none did)."""
    store.write_file(errors_file(name), json.dumps(failed, indent=1).encode())


def read_errors(store: Store, name: str) -> dict[str, str]:
    try:
        return json.loads(store.read_file(errors_file(name)) or b"{}")
    except ValueError:
        return {}


# -- the sweep's record in the store --------------------------------------------
def record_file(name: str) -> str:
    return f"sweeps/{name}.yaml"


# 2: written since fields with id defaults exist (train.last_batch, distill.zca_space);
# 3: since sharpness.bn. A record of format N lacking a field whose new default came
# later (its ``since`` > N) is read with that field at its id default, as it was written.
RECORD_FORMAT = 3


def write_record(store: Store, name: str, source, trials: list[tuple[str, TrialSpec]]) -> None:
    """Record a sweep's trials (label, spec). A sweep run again with more grid
    points keeps the trials it had: records only grow, nothing stored is dropped."""
    old = read_record(store, name)
    merged = {spec.id: {"label": label, "spec": spec.to_dict(omit_defaults=True)} for label, spec in old}
    merged.update({spec.id: {"label": label, "spec": spec.to_dict(omit_defaults=True)} for label, spec in trials})
    record = {"name": name, "format": RECORD_FORMAT, "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
              "source": source, "trials": list(merged.values())}
    store.write_file(record_file(name), yaml.safe_dump(record, sort_keys=False).encode())


def _record(store: Store, name: str) -> dict | None:
    """The record of sweep ``name``, or None when ``sweeps/<name>.yaml`` is
    missing or is not a record raylth wrote (a sweep definition, a stray
    file, broken YAML): readers skip it, naming it once."""
    text = store.read_file(record_file(name))
    if text is None:
        return None
    try:
        record = yaml.safe_load(text)
    except yaml.YAMLError:
        record = None
    if not (isinstance(record, dict) and isinstance(record.get("trials"), list)
            and all(isinstance(t, dict) and "label" in t and "spec" in t for t in record["trials"])):
        if name not in _SKIPPED:
            _SKIPPED.add(name)
            log.warning("%s: not a sweep record raylth wrote; skipped", record_file(name))
        return None
    return record


_SKIPPED: set[str] = set()


def read_record(store: Store, name: str) -> list[tuple[str, TrialSpec]]:
    """The (label, spec) of every trial a sweep recorded."""
    record = _record(store, name)
    if record is None:
        return []
    written = record.get("format", 1)
    return [(t["label"], TrialSpec.from_stored(t["spec"], written=None if written < 2 else written))
            for t in record["trials"]]


def sweep_names(store: Store) -> list[str]:
    """The sweeps recorded in ``store`` (files under sweeps/ that are records)."""
    names = [name[:-len(".yaml")] for name in store.file_names("sweeps", ".yaml")]
    return [name for name in names if _record(store, name) is not None]
