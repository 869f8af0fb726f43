"""Training points of stored artifacts (SGD steps x batch, as their metrics
record them): what the stages' ``loop_points`` facts add up into the training
points of the pruning loop that produced a network (the results'
``search_points``, the pruning report's x axis)."""

from __future__ import annotations

from raylth.specs import ImpLevelSpec
from raylth.store import Store


class Points:
    """Reads the metrics of stored artifacts once each."""

    def __init__(self, store: Store):
        self.store, self.cache = store, {}

    def own(self, artifact_id: str, key: str = "points_seen") -> float:
        if artifact_id not in self.cache:
            artifact = self.store.get(artifact_id)
            self.cache[artifact_id] = artifact.metrics if artifact is not None else {}
        value = self.cache[artifact_id].get(key)
        return float(value) if value is not None else float("nan")

    def trunk(self, spec: ImpLevelSpec, upto: int) -> float:
        """An IMP trunk's levels 0..upto."""
        chain = [spec.trunk_root()] + [spec.at_level(level) for level in range(1, upto + 1)]
        return sum(self.own(s.id) for s in chain)
