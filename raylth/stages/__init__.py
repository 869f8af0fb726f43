"""Layer 4: the study's steps as functions of specs -> stored artifacts.

Importing the package registers every stage (raylth.stages.registry) and
every method (raylth.stages.methods).
"""

from raylth.stages import branch, datasets, distill, imp, landscape, lmc, sharpness, ticket, train  # noqa: F401
from raylth.stages.context import StageContext, train_and_store
from raylth.stages.methods import METHODS, Method, check_method_name, register_method
from raylth.stages.registry import STAGES, Stage, register_stage, run_stage, stage_of

__all__ = ["StageContext", "train_and_store", "METHODS", "Method", "check_method_name",
           "register_method", "run_stage", "STAGES", "Stage", "register_stage", "stage_of"]
