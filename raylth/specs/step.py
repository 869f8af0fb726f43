"""Points in training written as strings: ``500it`` (iterations) or ``2ep`` (epochs)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from raylth.errors import SpecError

_STEP = re.compile(r"^\s*(\d+)\s*(it|ep)\s*$")


@dataclass(frozen=True, order=True)
class Step:
    amount: int
    unit: str  # "it" or "ep"

    def __post_init__(self):
        if self.unit not in ("it", "ep") or self.amount < 0:
            raise SpecError(f"invalid step {self.amount}{self.unit}: use e.g. 500it or 2ep")

    @classmethod
    def parse(cls, value, field: str = "step") -> "Step":
        if isinstance(value, Step):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value == 0:
            return cls(0, "it")
        match = _STEP.match(str(value)) if isinstance(value, str) else None
        if not match:
            raise SpecError(f"{field}: {value!r} is not a step; write it as e.g. 0it, 500it or 2ep")
        return cls(int(match.group(1)), match.group(2))

    def iterations(self, steps_per_epoch: int) -> int:
        return self.amount * steps_per_epoch if self.unit == "ep" else self.amount

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    def is_zero(self) -> bool:
        return self.amount == 0
