"""Command-line overrides of a sweep (or search) file: ``KEY=VALUE`` with a
dotted KEY and a YAML VALUE, applied to the file's contents before they are
parsed, so an override is checked exactly like the file's own keys.

    train.lr=0.05            a trial field: set in base (or, if the grid varies
                             train.lr, replaces that axis: a list stays an axis,
                             one value fixes it)
    'grid.seed=[0,1,2]'      a path from the file's top level (grid, base,
                             resources, storage, name, study, ...)
    resources.gpu=0.5
"""

from __future__ import annotations

import copy
from dataclasses import fields

import yaml

from raylth.errors import RaylthError, did_you_mean
from raylth.specs import TrialSpec
from raylth.sweep.config import SWEEP_KEYS
from raylth.specs.refs import SHORTHANDS, set_dotted


def parse_override(text: str) -> tuple[list[str], object]:
    key, sep, value = str(text).partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise RaylthError(f"override {text!r}: expected KEY=VALUE with a dotted KEY, e.g. train.lr=0.05 "
                          "or 'grid.seed=[0,1,2]'")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as err:
        raise RaylthError(f"override {text!r}: the value is not valid YAML ({getattr(err, 'problem', err)})") from None
    return key.strip().split("."), parsed


def _trial_keys() -> tuple[str, ...]:
    """What a trial (``base:``) may set: TrialSpec's fields and the grid's shorthands."""
    return (*(f.name for f in fields(TrialSpec)), "seed", *SHORTHANDS)


def _set(tree: dict, path: list[str], value, text: str) -> None:
    set_dotted(tree, ".".join(path), value, f"override {text!r}", error=RaylthError, shorthands=False,
               conflict=lambda above, child: f"override {text!r}: {above} is {child!r}, not a mapping; "
                                             f"set {above}=... instead")


def apply_override(raw: dict, text: str, top_keys: tuple[str, ...] | None = None) -> dict:
    """``raw`` (a sweep file's contents, or another file's whose top-level
    keys are ``top_keys``, e.g. a search's) with one override applied."""
    path, value = parse_override(text)
    out = copy.deepcopy(raw)
    top_keys = top_keys or SWEEP_KEYS
    if path[0] in top_keys:
        _set(out, path, value, text)
        return out
    trial_keys = _trial_keys()
    if path[0] not in trial_keys:
        known = (*top_keys, *trial_keys)
        raise RaylthError(f"override {text!r}: unknown key {path[0]!r}{did_you_mean(path[0], known)}; a KEY "
                          f"starts with a key of the file ({', '.join(top_keys)}) or of a trial "
                          f"({', '.join(trial_keys)})")
    full = SHORTHANDS.get(".".join(path), ".".join(path))  # rewind is prune.rewind
    names = {full} | {short for short, long in SHORTHANDS.items() if long == full}
    grid = out.get("grid") if isinstance(out.get("grid"), dict) else {}
    axis = next((key for key in grid if key in names), None)
    if axis is not None:  # the grid varies it: a list replaces the axis, one value fixes it
        if isinstance(value, list):
            grid[axis] = value
            return out
        del grid[axis]
    path = full.split(".")
    if not isinstance(out.get("base"), dict):
        if "base" not in top_keys:
            raise RaylthError(f"override {text!r}: {path[0]!r} is not a key of this file{did_you_mean(path[0], top_keys)}; "
                              f"its keys are {', '.join(top_keys)}")
        out["base"] = {}
    _set(out["base"], path, value, text)
    return out


def apply_overrides(raw, overrides, parse, where: str, top_keys: tuple[str, ...] | None = None):
    """Apply each override to ``raw`` and ``parse`` the result (a sweep or a
    search). The file is parsed first without them, so an error that comes
    with an override names it; returns the parsed object."""
    overrides = list(overrides or [])
    parsed = parse(raw)
    for text in overrides:
        if not isinstance(raw, dict):
            break
        raw = apply_override(raw, text, top_keys)
        try:
            parsed = parse(raw)
        except RaylthError as err:
            message = str(err)
            if message.startswith(f"{where}: "):
                message = message[len(where) + 2:]
            raise type(err)(f"override {text!r}: {message}") from None
    return parsed
