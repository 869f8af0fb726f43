"""Method ``dense``: the dense network (level 0 of every IMP trunk of the
same data, model, training and seeds; it keeps its checkpoint at the trial's
``prune.rewind``)."""

from raylth.specs import TrainStageSpec
from raylth.stages.methods import Method, register_method, trunk_level


def artifacts(trial) -> list:
    return [trunk_level(trial).trunk_root()]


register_method(Method("dense", artifacts=artifacts, example={"levels": 0}, order=0, implies=(TrainStageSpec.kind,)))
