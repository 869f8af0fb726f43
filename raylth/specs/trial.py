"""One trial of a sweep: a method applied to one point of the grid."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from raylth.errors import SpecError
from raylth.specs.base import Spec, _fill_id_defaults, _join
from raylth.specs.blocks import TRIAL_BLOCKS
from raylth.specs.distill import DistillEvalSpec, DistillSpec
from raylth.specs.groups import DataSpec, ModelSpec, PruneSpec, Seeds, TrainSpec


MIN_LEFT = 1e-6  # the smallest share of weights a trunk may keep (levels beyond prune nothing real)

# method name -> its check of the trial (the fields it reads: distill, inner, start_level), one line
# (SpecError); each method plugin registers its own (raylth.stages.methods.register_method)
TRIAL_CHECKS: dict[str, Callable[["TrialSpec"], None]] = {}


@dataclass(frozen=True)
class TrialSpec(Spec):
    kind = "trial"
    path_prefix = ""
    method: str = "imp"           # a name in raylth.stages.METHODS (each a plugin: raylth/plugins/methods)
    levels: int = 10              # IMP levels after the dense level 0
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    prune: PruneSpec = field(default_factory=PruneSpec)
    seeds: Seeds = field(default_factory=Seeds)
    branch_seed: int = 0          # random_prune / reinit draws
    # fields only some methods read (each method's check says which it needs):
    distill: DistillSpec | None = None  # the distillation of `data` (distill, distilled pruning)
    inner: TrainSpec | None = None      # each level's training on the distilled set (distilled pruning)
    distill_eval: DistillEvalSpec | None = None  # the evaluation protocol of a distilled set (distill)
    start_level: int = 0          # the distilled-pruning level mask_then_imp starts (and rewinds) from
    # The analysis blocks (lmc:, sharpness:, ... each an options Spec of
    # raylth.specs.analysis.TRIAL_BLOCKS), written and read as top-level keys.
    analyses: tuple[Any, ...] = ()

    def validate(self):
        if self.levels < 0:
            raise SpecError(f"levels: {self.levels} must be >= 0")
        left = (1 - self.prune.fraction) ** self.levels
        if self.levels and left < MIN_LEFT:
            most = int(math.log(MIN_LEFT) / math.log(1 - self.prune.fraction))
            raise SpecError(f"levels: {self.levels} levels of prune.fraction {self.prune.fraction} keep "
                            f"{left:.1e} of the weights, fewer than one in a million; use levels <= {most}")
        for options in self.analyses:
            if type(options) not in TRIAL_BLOCKS.values():
                raise SpecError(f"analyses: {options!r} is not the options of an analysis; use the blocks "
                                f"{', '.join(TRIAL_BLOCKS)}")
            outside = [level for level in getattr(options, "levels", ()) if not 0 <= level <= self.levels]
            if outside:
                raise SpecError(f"{options.label()}.levels: {outside[0]} is not a level of this trial "
                                f"(0..{self.levels}); pick levels it trains, or raise levels")
        if self.start_level < 0:
            raise SpecError(f"start_level: {self.start_level} must be >= 0")
        check = TRIAL_CHECKS.get(self.method)
        if check is not None:
            check(self)

    def analysis(self, block: str):
        """The options of analysis ``block`` (e.g. "lmc"), or None."""
        return next((o for o in self.analyses if o.label() == block), None)

    @classmethod
    def known_keys(cls) -> set[str]:
        return super().known_keys() - {"analyses"} | set(TRIAL_BLOCKS)

    @classmethod
    def from_dict(cls, data: dict | None, where: str | None = None):
        if not isinstance(data, dict) or not set(data) & set(TRIAL_BLOCKS):
            return super().from_dict(data, where)
        data = dict(data)
        where = cls.path_prefix if where is None else where
        blocks = {name: data.pop(name) for name in TRIAL_BLOCKS if name in data}
        spec = super().from_dict(data, where)
        analyses = tuple(TRIAL_BLOCKS[name].from_dict(raw, _join(where, name))
                         for name, raw in blocks.items() if raw is not None)
        return spec.replace(analyses=analyses) if analyses else spec

    @classmethod
    def from_stored(cls, data: dict, where: str | None = None, written: int | None = None):
        if isinstance(data, dict):
            data = {k: _fill_id_defaults(TRIAL_BLOCKS[k], v, written) if k in TRIAL_BLOCKS else v
                    for k, v in data.items()}
        return super().from_stored(data, where, written)

    def _render(self, omit_defaults: bool, for_id: bool) -> dict:
        out = super()._render(omit_defaults, for_id)
        out.pop("analyses", None)
        for options in self.analyses:
            out[options.label()] = options._render(omit_defaults, for_id)
        return out
