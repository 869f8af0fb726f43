"""Model families; importing this package registers them all."""

from raylth.engine.models import conv3, lenet, resnet, vgg  # noqa: F401  (registers)
from raylth.engine.models.registry import (
    MODELS, build_model, check_model_name, prunable_weight_names, register_model,
)

__all__ = ["MODELS", "build_model", "register_model", "prunable_weight_names", "check_model_name"]
