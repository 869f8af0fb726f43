"""Method ``imp_last``: only the last level of the trial's IMP trunk is a
results row (the levels before it are stored, as they must be, but not
reported). The worked example of CONTRIBUTING.md, "A sweep method": this
folder is the whole method."""

from raylth.stages.methods import Method, register_method, trunk_level


def artifacts(trial) -> list:
    return [trunk_level(trial, trial.levels)]


register_method(Method("imp_last", artifacts=artifacts, needs_levels=True, example={"levels": 1}, order=50))
