"""Layer 1: frozen dataclasses for every hyperparameter group, with stable ids."""

from raylth.specs.analysis import ChildSpec, LandscapeSpec, LmcOptions, LmcSpec, SharpnessOptions, SharpnessSpec
from raylth.specs.base import Spec
from raylth.specs.distill import (DistillEvalSpec, DistillSpec, ExpertOptions, ExpertsSpec, MaskImpSpec,
                                  TicketSpec)
from raylth.specs.groups import AugmentSpec, DataSpec, ModelSpec, PruneSpec, Seeds, TrainSpec
from raylth.specs.stages import BranchSpec, ImpLevelSpec, TrainStageSpec
from raylth.specs.step import Step
from raylth.specs.trial import TrialSpec

__all__ = [
    "Spec", "Step", "DataSpec", "ModelSpec", "TrainSpec", "PruneSpec", "Seeds",
    "TrainStageSpec", "ImpLevelSpec", "BranchSpec", "TrialSpec",
    "ChildSpec", "LmcSpec", "LmcOptions", "SharpnessOptions", "SharpnessSpec", "LandscapeSpec",
    "DistillSpec", "ExpertOptions", "ExpertsSpec", "DistillEvalSpec", "TicketSpec", "MaskImpSpec",
]
