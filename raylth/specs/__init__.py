"""Layer 1: frozen dataclasses for every hyperparameter group, with stable ids.

The core's specs; each plugin declares its own (an analysis's options and
stages, a method's stages, a distillation method's fields) in its folder
under raylth/plugins.
"""

from raylth.specs.base import Spec
from raylth.specs.distill import DistillEvalSpec, DistillSpec
from raylth.specs.groups import AugmentSpec, DataSpec, ModelSpec, PruneSpec, Seeds, TrainSpec
from raylth.specs.stages import ImpLevelSpec, TrainStageSpec
from raylth.specs.step import Step
from raylth.specs.trial import TrialSpec

__all__ = [
    "Spec", "Step", "DataSpec", "ModelSpec", "TrainSpec", "AugmentSpec", "PruneSpec", "Seeds",
    "TrainStageSpec", "ImpLevelSpec", "TrialSpec", "DistillSpec", "DistillEvalSpec",
]
