"""A search's best trial as a ready-to-run sweep, written to the store."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from raylth.search.spec import Search


def best_sweep(search: Search, params: dict, store_root, data_root: Path) -> dict:
    """The best trial's parameters as a normal raylth sweep."""
    sweep = {"name": f"{search.name}_best", "storage": str(store_root), "data_root": str(data_root),
             "resources": dict(search.resources)}
    base = search.objective.best(search, params, _readable)
    sweep["base"] = base
    return sweep


def _readable(spec) -> dict:
    """Fields that differ from their defaults, but every data set and model by name."""
    import dataclasses

    from raylth.specs import Spec

    out = spec.to_dict(omit_defaults=True)
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if isinstance(value, Spec) and (f.name in out or hasattr(value, "name")):
            out[f.name] = _readable(value)
    if hasattr(spec, "name") and "name" in {f.name for f in dataclasses.fields(spec)}:
        out = {"name": spec.name} | out
    return out


def write_best(search: Search, best, store, data_root: Path) -> Path:
    """The best sweep, in the store (and, for a bucket, in this machine's cache: the path returned)."""
    params = {p.path: p.render(best.params[p.path]) for p in search.space if p.path in best.params}
    sweep = best_sweep(search, params, store.uri, data_root)
    rel = f"searches/{search.name}-best.yaml"  # not sweeps/: that holds sweep records
    path = store.root / rel
    header = (f"# Best of study {search.name!r}: trial {best.number}, value {best.value:.6g} "
              f"({time.strftime('%Y-%m-%d %H:%M:%S')}).\n# Run it with: raylth run {path}\n")
    store.write_file(rel, (header + yaml.safe_dump(sweep, sort_keys=False)).encode())
    return path
