"""What sweep and search files share: reading the YAML, and checking their
names, blocks of known keys, resources and dotted paths, each failure one
line naming the field at fault."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from raylth.errors import RaylthError, SpecError, check_keys

RESOURCE_KEYS = ("cpu", "gpu")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def read_yaml(path: str | os.PathLike):
    """The contents of a sweep (or search) file."""
    path = Path(path)
    if not path.is_file():
        raise RaylthError(f"{path}: no such sweep file; pass a YAML file such as sweeps/quickstart.yaml")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RaylthError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from None


def checked_name(raw, keys: tuple[str, ...], what: str, default_name: str, where: str) -> str:
    """A sweep or search file's top level: a mapping of known keys; its name."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a {what} is a mapping with keys {', '.join(keys)}")
    check_keys(raw, keys, where, f"{what} keys", top_level=True)
    name = str(raw.get("name") or default_name)
    if not NAME.match(name):
        raise SpecError(f"{where}: name {name!r} may hold only letters, digits, '_', '-' and '.'")
    return name


def checked_block(raw, where: str, block: str, keys, example: str) -> dict:
    """A block of a sweep or search file: a mapping of known keys, else one line naming the first wrong one."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: {block} must be a mapping like {example}")
    check_keys(raw, keys, f"{where}: {block}", f"{block} keys")
    return raw


def checked_resources(raw, where) -> dict:
    """A ``resources:`` block: cpu and gpu per worker (or trial), fractions allowed."""
    checked_block(raw, where, "resources", RESOURCE_KEYS, "{cpu: 1, gpu: 0.25}")
    out = {"cpu": 1, "gpu": 0}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SpecError(f"{where}: resources.{key}: {value!r} must be a number >= 0")
        out[key] = value
    if out["gpu"] > 1 and out["gpu"] != int(out["gpu"]):
        raise SpecError(f"{where}: resources.gpu: {out['gpu']} must be a fraction below 1 or a whole number")
    return out


def positive_int(raw, key, where, optional=False, minimum=1):
    value = raw.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{where}: {key}: {value!r} must be an integer >= {minimum}")
    return value
