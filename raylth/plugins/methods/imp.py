"""Method ``imp``: iterative magnitude pruning with rewinding, levels 0..N of
one trunk (raylth.stages.imp; level 0 the dense network)."""

from raylth.stages.methods import Method, register_method, trunk_level


def artifacts(trial) -> list:
    return [trunk_level(trial).trunk_root()] + [trunk_level(trial, level) for level in range(1, trial.levels + 1)]


register_method(Method("imp", artifacts=artifacts, example={"levels": 2}, order=1))
