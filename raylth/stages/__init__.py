"""Layer 4: the study's steps as functions of specs -> stored artifacts."""

from raylth.stages.context import StageContext, train_and_store
from raylth.stages.methods import METHODS, Method, check_method_name, register_method, run_stage

__all__ = ["StageContext", "train_and_store", "METHODS", "Method", "check_method_name",
           "register_method", "run_stage"]
