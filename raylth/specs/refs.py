"""How stored things are named and addressed, in one place for every layer:
artifact references (``imp_0123456789abcdef[:checkpoint]``), the names of
checkpoints, and dotted paths into trees of spec fields (``train.lr``)."""

from __future__ import annotations

import json
import re

from raylth.errors import RaylthError, SpecError
from raylth.specs.step import Step

# <kind>_<16 hex>, a kind being lower-case words joined by _ (distill_eval_...), then an optional :checkpoint
ARTIFACT_REF = re.compile(r"^([a-z]+(?:_[a-z]+)*_[0-9a-f]{16})(?::([A-Za-z0-9_]+))?$")


def check_network(ref: str, field: str) -> None:
    """``ref`` is an artifact id, optionally ``:checkpoint``; else one line naming ``field``."""
    if not isinstance(ref, str) or not ARTIFACT_REF.match(ref):
        raise SpecError(f"{field}: {ref!r} is not an artifact id such as imp_0123456789abcdef "
                        "(optionally :CHECKPOINT, e.g. :init or :final)")


def artifact_of(value) -> str | None:
    """The artifact id a string value refers to, or None."""
    match = ARTIFACT_REF.match(value) if isinstance(value, str) else None
    return match.group(1) if match else None


def split_ref(ref: str, default: str = "final") -> tuple[str, str]:
    """(artifact id, checkpoint name) of ``id[:checkpoint]``."""
    artifact_id, _, checkpoint = ref.partition(":")
    return artifact_id, checkpoint or default


# -- checkpoints: weights/<name>.pt ------------------------------------------------------------
def checkpoint_name(step: Step | int) -> str:
    """A checkpoint's name: ``init`` at step 0, else ``step_<the step as written>`` (2ep, 500it)."""
    return "init" if (step == 0 or getattr(step, "amount", 1) == 0) else f"step_{step}"


def checkpoint_step(name: str, steps_per_epoch: int) -> int | None:
    """The iteration a checkpoint name stands for (None: ``final`` or not a step's name)."""
    if name == "init":
        return 0
    if name.startswith("step_"):
        try:
            return Step.parse(name[len("step_"):]).iterations(steps_per_epoch)
        except RaylthError:
            return None
    return None


def step_key(step: Step) -> str:
    """One string per step as written, all zero steps alike (``0it``)."""
    return "0it" if step.is_zero() else str(step)


# -- trees of fields --------------------------------------------------------------------------
def flatten(tree: dict, prefix: str = "", *, keep_none: bool = True, hashable: bool = False) -> dict:
    """A tree of fields as dotted keys (``train.lr``). ``keep_none``: None
    values kept; ``hashable``: lists as tuples and mappings (inside lists) as
    sorted JSON, so that values can be compared and grouped."""
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{dotted}.", keep_none=keep_none, hashable=hashable)
        elif value is not None or keep_none:
            out[dotted] = _hashable(value) if hashable else (list(value) if isinstance(value, tuple) else value)
    return out


def _hashable(value):
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


SHORTHANDS = {"rewind": "prune.rewind"}  # a sweep's short keys


def set_dotted(tree: dict, dotted: str, value, where: str, error=SpecError, conflict=None,
               shorthands: bool = True) -> None:
    """Set a dotted path (``train.lr``) in a tree of fields, making the groups
    on the way (an empty one, None, too); with ``shorthands``, ``seed`` (all
    three seeds) and ``rewind`` (prune.rewind) too. A path through a value
    that is not a group raises ``error`` with one line: ``conflict(path so
    far, value)``, else naming ``where``."""
    if shorthands and dotted == "seed":
        tree["seeds"] = {"init": value, "order": value, "augment": value}
        return
    dotted = SHORTHANDS.get(dotted, dotted) if shorthands else dotted
    *parents, leaf = dotted.split(".")
    node = tree
    for depth, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            above = ".".join(parents[:depth + 1])
            raise error(conflict(above, child) if conflict else f"{where}: {dotted}: {part} is not a group of fields")
        node = child
    node[leaf] = value
