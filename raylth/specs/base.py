"""The Spec base: strict parsing from dicts, a canonical string, a stable id.

A spec's canonical string lists only fields that differ from their id
defaults (a field's default, unless it declares another ``id_default``), with
sorted keys, so adding a new field with a default never changes the id of
anything stored before it.

A field whose default changed what specs compute (``id_default`` differs from
``default``) makes a dict written before it existed mean its id default, not
its default: read stored dicts with ``from_stored``, which fills the missing
keys with their id defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import types
import typing
from typing import Any, ClassVar, Literal

from raylth.errors import SpecError, check_keys
from raylth.specs.step import Step


def choice(default, options, doc: str = "", id_default=dataclasses.MISSING, since: int = 2):
    """A field restricted to ``options`` (checked when the spec is built).

    ``id_default``: the value left out of the canonical string when it
    differs from ``default``. Used where a new default changes what an
    existing spec computes: the old behaviour keeps its old ids (they were
    written without the field), and the new default is always written out,
    so its ids are new and never mixed with results stored before.
    ``since``: the sweep-record format (raylth.store.records.RECORD_FORMAT)
    that first wrote the field's new default out; a record of an earlier
    format that lacks the field means its id default."""
    metadata = {"choices": tuple(options), "doc": doc}
    if id_default is not dataclasses.MISSING:
        metadata["id_default"] = id_default
        metadata["since"] = since
    return dataclasses.field(default=default, metadata=metadata)


def id_field(default, id_default, doc: str = ""):
    """A field whose ids were written without it at ``id_default``, while its
    default is ``default`` (a method's own default of a field others share:
    IDC's factor 2 where ids meant 1): equal values, equal ids, whatever the method."""
    return dataclasses.field(default=default, metadata={"id_default": id_default, "since": 2, "doc": doc})


def resolved(id_default, doc: str = ""):
    """A field whose default depends on another field (a distillation's method,
    an evaluation's protocol): None when built means "that default", which the
    spec's ``validate`` fills in (``resolve_defaults``). ``id_default`` is the
    value ids were written without (the field's one default before it
    depended on anything), so every spec that resolves to it keeps its id."""
    return dataclasses.field(default=None, metadata={"id_default": id_default, "resolved": True, "doc": doc,
                                                    "since": 2})


def resolve_defaults(spec) -> None:
    """Fill each ``resolved`` field left None with ``spec.resolved_defaults()``
    (by name), else its id default."""
    defaults = spec.resolved_defaults()
    for f in dataclasses.fields(spec):
        if f.metadata.get("resolved") and getattr(spec, f.name) is None:
            object.__setattr__(spec, f.name, defaults.get(f.name, f.metadata["id_default"]))


def id_default(f: dataclasses.Field):
    """The value of field ``f`` that canonical strings leave out: its
    ``id_default``, or its default with the id defaults of nested specs
    (``TrainStageSpec().train`` is left out only where it means what a
    TrainSpec meant before its id defaults existed)."""
    if "id_default" in f.metadata:
        return f.metadata["id_default"]
    if f not in _ID_DEFAULTS:  # a field's default is fixed: build it once
        default = _default_of(f)
        _ID_DEFAULTS[f] = default._with_id_defaults() if isinstance(default, Spec) else default
    return _ID_DEFAULTS[f]


_ID_DEFAULTS: dict = {}


def _spec_class(hint):
    """The Spec class of a field's type hint (``TrainSpec | None`` -> TrainSpec), or None."""
    for option in (hint, *typing.get_args(hint)):
        if isinstance(option, type) and issubclass(option, Spec):
            return option
    return None


def _fill_id_defaults(cls, data, written: int | None = None):
    """``data`` with the keys it lacks set to their id defaults: all of them
    (``written`` None: a dict written before any), or those of fields whose
    new default came after record format ``written``."""
    if not isinstance(data, dict):
        return data
    hints = _hints(cls)
    out = dict(data)
    for f in dataclasses.fields(cls):
        nested = _spec_class(hints[f.name])
        if f.name in out:
            if nested is not None and isinstance(out[f.name], dict):
                out[f.name] = _fill_id_defaults(nested, out[f.name], written)
        elif "id_default" in f.metadata:
            if written is None or f.metadata.get("since", 2) > written:
                out[f.name] = f.metadata["id_default"]
        elif nested is not None and isinstance(_default_of(f), Spec):
            out[f.name] = id_default(f).to_dict() if written is None else _fill_id_defaults(nested, {}, written)
    return out


class Spec:
    """Mixin for frozen dataclasses of hyperparameters."""

    kind: ClassVar[str] = "spec"  # unique among Spec classes; a stage's kind prefixes its artifact ids
    # Its name in files and error messages when that is not its kind (TrainSpec: train).
    block: ClassVar[str | None] = None
    # Prefix of field paths in error messages when parsed at the top level.
    path_prefix: ClassVar[str | None] = None

    @classmethod
    def label(cls) -> str:
        return cls.block or cls.kind

    def __post_init__(self):
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            if hints[f.name] in _FLOATISH and type(getattr(self, f.name)) is int:
                object.__setattr__(self, f.name, float(getattr(self, f.name)))  # lr=1 and lr=1.0: one id
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise SpecError(f"{self._path(f.name)}: {value} is not a finite number; give a real value")
            if "seed" in f.name and isinstance(value, int) and not 0 <= value < SEED_LIMIT:
                raise SpecError(f"{self._path(f.name)}: {value} is outside 0..2**63-1, the seeds a torch "
                                "generator takes")
            options = f.metadata.get("choices")
            if options and value not in options:
                raise SpecError(f"{self.label()}.{f.name}: {value!r} is not one of {', '.join(map(str, options))}")
        self.validate()

    def _path(self, name: str) -> str:
        prefix = self.label() if self.path_prefix is None else self.path_prefix
        return f"{prefix}.{name}" if prefix else name

    def validate(self) -> None:
        """Check values; raise SpecError naming the field. Overridden by specs."""

    def inputs(self) -> tuple["Spec", ...]:
        """Stage specs whose artifacts this stage reads without naming them in
        its fields (nested stage specs and artifact ids are found from the
        fields). The sweep schedules the jobs that make them first."""
        return ()

    # -- parsing -------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict | None, where: str | None = None):
        if where is None:
            where = cls.label() if cls.path_prefix is None else cls.path_prefix
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SpecError(f"{where or cls.label()}: expected a mapping, got {type(data).__name__}")
        hints = _hints(cls)
        names = cls.known_keys()
        check_keys(data, sorted(names), where, "known keys here" if where else "known keys")
        kwargs = {k: _coerce(hints[k], v, _join(where, k)) for k, v in data.items()}
        try:
            return cls(**kwargs)
        except SpecError as err:  # messages name fields from the spec's kind: name them from here
            message, own = str(err), f"{cls.label()}."
            if where and where != cls.label() and message.startswith(own):
                raise SpecError(f"{where}.{message[len(own):]}") from None
            raise

    @classmethod
    def known_keys(cls) -> set[str]:
        """The keys ``from_dict`` reads."""
        return {f.name for f in dataclasses.fields(cls) if f.init}

    @classmethod
    def from_stored(cls, data: dict, where: str | None = None, written: int | None = None):
        """A spec from a dict stored by an earlier version (an artifact's spec,
        an old sweep record of format ``written``): keys it lacks take their id
        defaults, the values they had when it was written."""
        return cls.from_dict(_fill_id_defaults(cls, data, written), where)

    def unused_fields(self) -> tuple[str, ...]:
        """Fields that mean nothing with this spec's other values; left out
        of every rendering (overridden by specs)."""
        return ()

    # -- rendering -----------------------------------------------------------
    def to_dict(self, omit_defaults: bool = False) -> dict:
        """Every field, or (``omit_defaults``) those that differ from their
        defaults: a dict that ``from_dict`` reads back to this spec."""
        return self._render(omit_defaults, for_id=False)

    def resolved_defaults(self) -> dict:
        """What ``resolved`` fields left out mean for this spec (its method's
        defaults); overridden by specs that have such fields."""
        return {}

    def _render(self, omit_defaults: bool, for_id: bool) -> dict:
        out = {}
        unused = self.unused_fields() if omit_defaults else ()
        own = self.resolved_defaults() if omit_defaults and not for_id else {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("resolved") and not for_id:  # left out: what leaving it out resolves to
                if omit_defaults and value == own.get(f.name, f.metadata["id_default"]):
                    continue
            elif omit_defaults and (_is_default(f, value, for_id) or f.name in unused):
                continue
            out[f.name] = _plain(value, omit_defaults, for_id)
        return out

    def _with_id_defaults(self) -> "Spec":
        changes = {}
        for f in dataclasses.fields(self):
            value = id_default(f) if "id_default" in f.metadata else getattr(self, f.name)
            if isinstance(value, Spec):
                value = value._with_id_defaults()
            if value != getattr(self, f.name):
                changes[f.name] = value
        return dataclasses.replace(self, **changes) if changes else self

    def canonical(self) -> str:
        """Fields that differ from their id defaults, sorted: what the id hashes."""
        return json.dumps(self._render(True, for_id=True), sort_keys=True, separators=(",", ":"))

    def spec_hash(self) -> str:
        # a spec is frozen, so its hash is computed once (planning a sweep asks for ids ~20x per spec)
        cached = self.__dict__.get("_spec_hash")
        if cached is None:
            cached = hashlib.sha256(f"{self.kind}:{self.canonical()}".encode()).hexdigest()[:16]
            object.__setattr__(self, "_spec_hash", cached)
        return cached

    @property
    def id(self) -> str:
        return f"{self.kind}_{self.spec_hash()}"

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


_FLOATISH = (float, float | None)
SEED_LIMIT = 2 ** 63


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _is_default(f: dataclasses.Field, value, for_id: bool) -> bool:
    default = id_default(f) if for_id else _default_of(f)
    return default is not dataclasses.MISSING and value == default


def _plain(value, omit_defaults: bool, for_id: bool = False):
    if isinstance(value, Spec):
        return value._render(omit_defaults, for_id)
    if isinstance(value, Step):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v, omit_defaults, for_id) for v in value]
    return value


def _coerce(hint, value, where: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, where)
            except SpecError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise SpecError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(hint, type) and issubclass(hint, Spec):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise SpecError(f"{where}: expected a mapping of {hint.kind} fields, got {value!r}")
        return hint.from_dict(value, where)
    if hint is Step:
        return Step.parse(value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise SpecError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise SpecError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 5e-4 as a string
            except ValueError:
                pass
        raise SpecError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise SpecError(f"{where}: expected a string, got {value!r}")
    if hint is Any:
        return value
    raise TypeError(f"spec field type {hint!r} at {where} is not supported")


def settings(spec: Spec, of: type) -> dict:
    """The values of ``spec`` for the fields of ``of`` (a Spec class it
    derives from): e.g. a sweep block's analysis settings for its stage spec."""
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(of)}
