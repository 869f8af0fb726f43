"""Layer 4: the study's steps as functions of specs -> stored artifacts.

The core: the registries (stages, methods, analyses), the dense run and the
IMP level every method builds on, distillation and its evaluation, stored
data sets. Importing the package imports every module in it, so that each
registers its stages; the methods, analyses and distillation methods are
plugins (raylth/plugins), which register themselves here.
"""

import importlib
import pkgutil

from raylth.stages.context import StageContext, train_and_store
from raylth.stages.methods import METHODS, Method, check_method_name, register_method
from raylth.stages.registry import STAGES, Stage, register_stage, run_stage, stage_of

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["StageContext", "train_and_store", "METHODS", "Method", "check_method_name",
           "register_method", "run_stage", "STAGES", "Stage", "register_stage", "stage_of"]
