"""Specs of dataset distillation: a distilled set and its evaluation.

- ``DistillSpec`` (``distill_<hash>``): a distilled set of ``ipc`` images per
  class made from a real data set by a distillation method (DM, gradient
  matching, IDC, MTT, an import: each a plugin under raylth/plugins/distillers
  declaring its own fields in an options Spec, ``DistillMethod.options``).
  Its artifact holds ``distilled.pt`` (images, labels, the preprocessing they
  expect) and is usable as training data through ``DataSpec(name='distilled',
  path=<distill id>, test=<real set>)``.
- ``DistillEvalSpec`` (``distill_eval_<hash>``): the evaluation of a distilled
  set by a protocol (fresh networks trained on it, tested on the real test
  split, mean and std over seeds), or of a random real subset of the same
  size (``random: true``), the baseline.

A DistillSpec is written flat: its own fields and its method's fields side
by side (``{method: idc, ipc: 10, n_data: 2000}``), as it always was, so the
ids of sets stored before the methods had fields of their own are unchanged.
Fields of other methods are ignored (they mean nothing for this one: a grid
over the method may carry several methods' fields in its base).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from raylth.errors import SpecError, check_keys
from raylth.specs.base import Spec, _coerce, _fill_id_defaults, choice, resolve_defaults, resolved
from raylth.specs.groups import DataSpec, ModelSpec

ZCA_SPACES = ("pixels", "normalized")         # engine.data.zca.ZCA_SPACES (specs import no engine)
ZCA_FIELDS = ("zca_space",)                  # meaningless without zca (zca_eps is kept: old ids)
SYNTHESIS_FIELDS = ("iterations", "lr_img", "init", "seed", "model", "dsa")  # what only synthesis reads


@dataclass(frozen=True)
class NoOptions(Spec):
    """A method without fields of its own."""
    kind = "distill_options"


@dataclass(frozen=True)
class DistillMethod:
    """A distillation method, declared once by its plugin: its fields (an
    options Spec, written flat into the DistillSpec; a field whose default
    differs from what ids were written without declares an ``id_default``),
    the checks of them, how it runs and whether it fits.
    Adding one: CONTRIBUTING.md, "A distillation method"."""
    name: str
    options: type[Spec] = NoOptions
    # the default image lr (or spec -> lr); None: it synthesises nothing (import)
    lr_img: float | Callable[["DistillSpec"], float] | None = None
    lr_img_zca: float | None = None   # the default with zca, where its reference differs
    iterations: int = 1000            # its default of the shared ``iterations`` (idc: 2000)
    check: Callable[["DistillSpec", str], None] | None = None  # its fields' checks (one line, SpecError)
    # run(spec, ctx, real, synthesis) -> Distilled and fits(spec, real, device) -> low_memory (raylth.stages.distill)
    run: Callable | None = None
    fits: Callable | None = None
    # a synthesising method's options (beside ipc 1, 100 iterations, LeNet) for a small
    # distillation of digits that beats a random subset of its size (the template test's run),
    # or a line saying why digits cannot show it and which test proves the method instead
    example: dict | str | None = None

    @property
    def synthesizes(self) -> bool:
        return self.lr_img is not None

    def default_lr_img(self, spec: "DistillSpec") -> float:
        if spec.zca and self.lr_img_zca is not None:
            return self.lr_img_zca
        return self.lr_img(spec) if callable(self.lr_img) else self.lr_img

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.options))


DISTILL_METHODS: dict[str, DistillMethod] = {}


def register_distill_method(method: DistillMethod) -> DistillMethod:
    """Declare a distillation method (its plugin does, once)."""
    if method.name in DISTILL_METHODS and DISTILL_METHODS[method.name] != method:
        raise ValueError(f"distillation method {method.name!r} is registered twice")
    DISTILL_METHODS[method.name] = method
    return method


def distill_method(name: str) -> DistillMethod:
    if name not in DISTILL_METHODS:
        raise SpecError(f"distill.method: {name!r} is not one of {', '.join(sorted(DISTILL_METHODS))}")
    return DISTILL_METHODS[name]


def uses_field(method: str, name: str) -> bool:
    """Whether distillation ``method`` reads DistillSpec field ``name`` (its own or a shared one)."""
    m = DISTILL_METHODS[method]
    if name in m.field_names:
        return True
    return name in _SHARED and (m.synthesizes or name not in SYNTHESIS_FIELDS)


@dataclass(frozen=True)
class DistillSpec(Spec):
    kind = "distill"
    data: DataSpec | None = None     # the real data set; in a sweep trial: the trial's data
    method: str = "dm"               # a name in DISTILL_METHODS
    ipc: int = 10                    # images per class (stored; x factor^2 decoded with factor > 1)
    iterations: int | None = resolved(1000)  # None: the method's (idc 2000), else 1000
    lr_img: float | None = None      # None: the method's (dm 1.0, gm 0.1, mtt 100 or 1000 with zca, idc 5e-3 x ipc/10)
    init: str = choice("real", ["real", "noise"])
    dsa: bool = True                 # differentiable siamese augmentation while distilling
    zca: bool = False                # distil (and evaluate) in ZCA-whitened space
    zca_eps: float = 0.1
    # what ZCA whitens: raw [0, 1] pixels (MTT/KIP), or per-channel normalised
    # images (raylth before; sets stored then keep their ids and load as made)
    zca_space: str = choice("pixels", ZCA_SPACES, id_default="normalized")
    model: ModelSpec = field(default_factory=lambda: ModelSpec("conv3"))  # the distillation network
    seed: int = 0
    options: Any = None              # the method's own fields (DistillMethod.options), written flat

    def __init__(self, options=None, **given):
        """``DistillSpec(method="gm", factor=2, ...)``: the method's fields by
        name beside the shared ones (or ``options=`` its options Spec)."""
        shared = {f.name for f in fields(DistillSpec) if f.name != "options"}
        method = distill_method(given.get("method", "dm"))
        own = {k: given.pop(k) for k in list(given) if k not in shared}
        unknown = [k for k in own if k not in DistillSpec.known_keys()]
        if unknown:
            raise SpecError(f"distill.{unknown[0]}: not a field of any distillation method (method "
                            f"{method.name}'s own: {', '.join(method.field_names) or 'none'})")
        own = {k: v for k, v in own.items() if k in method.field_names}  # other methods' fields mean nothing here
        if not isinstance(options, method.options):
            options = method.options()
        options = options.replace(**own) if own else options
        for f in fields(DistillSpec):
            value = options if f.name == "options" else given.get(f.name, _default(f))
            object.__setattr__(self, f.name, value)
        self.__post_init__()

    def __getattr__(self, name: str):
        options = self.__dict__.get("options")
        if options is not None and name in {f.name for f in fields(options)}:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__} of method {self.__dict__.get('method')!r} has no field {name!r}")

    def validate(self):
        w = "distill"
        method = distill_method(self.method)
        if not method.synthesizes:  # what only synthesis reads means nothing: equal computations, one id
            for name in SYNTHESIS_FIELDS:
                f = next(f for f in fields(self) if f.name == name)
                generic = f.metadata["id_default"] if f.metadata.get("resolved") else _default(f)
                object.__setattr__(self, name, generic)
        resolve_defaults(self)
        reset_unused_zca(self)
        check_real_data(self, w)
        if self.ipc < 1:
            raise SpecError(f"{w}.ipc: {self.ipc} must be at least 1 (images per class)")
        if self.iterations < 0:
            raise SpecError(f"{w}.iterations: {self.iterations} must be >= 0")
        if self.lr_img is not None and self.lr_img <= 0:
            raise SpecError(f"{w}.lr_img: {self.lr_img} must be positive (or left out for the method's default)")
        if self.zca_eps < 0:
            raise SpecError(f"{w}.zca_eps: {self.zca_eps} must be >= 0")
        if method.check is not None:
            method.check(self, w)

    @property
    def distill_method(self) -> DistillMethod:
        return DISTILL_METHODS[self.method]

    @property
    def factor(self) -> int:
        """How many times each side is divided (IDC's multi-formation): 1 unless the method has the field."""
        return getattr(self.options, "factor", 1)

    def resolved_defaults(self) -> dict:
        return {"iterations": self.distill_method.iterations} if self.method in DISTILL_METHODS else {}

    def unused_fields(self) -> tuple[str, ...]:
        return () if self.zca else ZCA_FIELDS

    @property
    def lr_img_value(self) -> float:
        if self.lr_img is not None:
            return self.lr_img
        return self.distill_method.default_lr_img(self)

    # -- written flat: the method's fields beside the shared ones ------------------------------
    @classmethod
    def known_keys(cls) -> set[str]:
        own = {name for m in DISTILL_METHODS.values() for name in m.field_names}
        return {f.name for f in fields(cls) if f.name != "options"} | own

    @classmethod
    def from_dict(cls, data: dict | None, where: str | None = None):
        where = cls.label() if where is None else where
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
        method = distill_method(data.get("method", "dm")) if isinstance(data.get("method", "dm"), str) else None
        if method is None:
            raise SpecError(f"{where}.method: {data.get('method')!r} is not one of {', '.join(sorted(DISTILL_METHODS))}")
        check_keys(data, sorted(cls.known_keys()), where, "known keys here")
        shared = {f.name for f in fields(cls) if f.name != "options"}
        kwargs = {k: _coerce(_hint(cls, k), v, f"{where}.{k}") for k, v in data.items() if k in shared}
        own = {k: v for k, v in data.items() if k in method.field_names}
        options = method.options.from_dict(own, where)
        try:
            return cls(options=options, **kwargs)
        except SpecError as err:
            message, prefix = str(err), "distill."
            if where != "distill" and message.startswith(prefix):
                raise SpecError(f"{where}.{message[len(prefix):]}") from None
            raise

    @classmethod
    def from_stored(cls, data: dict, where: str | None = None, written: int | None = None):
        if not isinstance(data, dict):
            return super().from_stored(data, where, written)
        method = DISTILL_METHODS.get(data.get("method", "dm"))
        filled = _fill_id_defaults(cls, {k: v for k, v in data.items() if k not in cls._own_keys()}, written)
        if method is not None:  # the method's own fields; other methods' (stored before) meant nothing
            own = {k: v for k, v in data.items() if k in method.field_names}
            filled |= _fill_id_defaults(method.options, own, written)
        return cls.from_dict(filled, where)

    @classmethod
    def _own_keys(cls) -> set[str]:
        return cls.known_keys() - {f.name for f in fields(cls)}

    def _render(self, omit_defaults: bool, for_id: bool) -> dict:
        out = super()._render(omit_defaults, for_id)
        out.pop("options", None)
        out.update(self.options._render(omit_defaults, for_id))
        return out

    # -- the set as the stages use it ------------------------------------------------------------
    def dataset(self, augment: bool | None = None) -> DataSpec:
        """This set as training data (resolved by StageContext from the store)."""
        if self.data is None:
            raise SpecError("distill.data: name the real data set to distil, e.g. data: {name: digits}")
        return DataSpec(name="distilled", path=self.id, test=self.data.name, augment=augment)

    def baseline_key(self) -> "DistillSpec":
        """What a random real subset of the same size depends on."""
        return DistillSpec(data=self.data, ipc=self.ipc, zca=self.zca, zca_eps=self.zca_eps,
                           zca_space=self.zca_space)


_SHARED = {f.name for f in fields(DistillSpec) if f.name != "options"}


def _hint(cls, name: str):
    import typing

    return typing.get_type_hints(cls)[name]


def _default(f):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def reset_unused_zca(spec) -> None:
    """Without ZCA its space means nothing: one value (and, by
    ``unused_fields``, left out of every rendering), so that equal
    computations are equal specs with one id."""
    if not spec.zca:
        object.__setattr__(spec, "zca_space", "pixels")


def check_real_data(spec, where: str) -> None:
    if spec.data is not None and spec.data.zca:
        raise SpecError(f"{where}.data.zca: distil the raw data set (ZCA is the distillation's own zca: true); "
                        "data.zca whitens the real data networks train on")


# An evaluation protocol's own defaults of the fields declared ``resolved`` (epochs, batch_size).
EVAL_PROTOCOLS = {"dc": {}, "idc": {"epochs": 1000, "batch_size": 64}}


@dataclass(frozen=True)
class DistillEvalSpec(Spec):
    """The evaluation protocol of a distilled set: ``dc`` (DC/DSA/DM/MTT's
    evaluate_synset: 300 epochs, batch 256, lr x0.1 with a fresh optimiser at
    half time, DSA per example) or ``idc`` (IDC's test.py: 1,000 epochs, batch
    64, lr x0.2 at 2/3 and 5/6, IDC's DSA less cutout plus CutMix p 0.5,
    evaluated at each quarter: final and best reported). In a sweep trial
    (``distill_eval:``) ``distill`` and ``random`` are left out: the trial's
    distillation is evaluated and so is a random subset of the same size."""
    kind = "distill_eval"
    distill: DistillSpec | None = None
    random: bool = False             # evaluate a random real subset of the same size instead
    model: ModelSpec = field(default_factory=lambda: ModelSpec("conv3"))
    epochs: int | None = resolved(300)      # None: the protocol's (dc 300, idc 1000)
    lr: float | None = None          # None: the set's learned lr (MTT) or 0.01
    batch_size: int | None = resolved(256)  # None: the protocol's (dc 256, idc 64)
    seeds: tuple[int, ...] = (0, 1, 2)
    dsa: bool = True
    subset_seed: int = 0             # random: which subset
    protocol: str = choice("dc", tuple(EVAL_PROTOCOLS))

    def resolved_defaults(self) -> dict:
        return EVAL_PROTOCOLS.get(self.protocol, {})

    def validate(self):
        resolve_defaults(self)
        if self.epochs < 1:
            raise SpecError(f"distill_eval.epochs: {self.epochs} must be >= 1")
        if self.batch_size < 1:
            raise SpecError(f"distill_eval.batch_size: {self.batch_size} must be >= 1")
        if not self.seeds:
            raise SpecError("distill_eval.seeds: name at least one seed, e.g. [0, 1, 2]")
        if self.lr is not None and self.lr <= 0:
            raise SpecError(f"distill_eval.lr: {self.lr} must be positive (or left out)")
        if self.random and self.distill is not None and self.distill != self.distill.baseline_key():
            object.__setattr__(self, "distill", self.distill.baseline_key())
        if not self.random and self.subset_seed != 0:
            object.__setattr__(self, "subset_seed", 0)

    def of(self, distill: DistillSpec, random: bool = False) -> "DistillEvalSpec":
        """These options applied to ``distill`` (or to its random baseline)."""
        return self.replace(distill=distill.baseline_key() if random else distill, random=random)
