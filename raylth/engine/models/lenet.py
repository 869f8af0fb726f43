"""LeNet-300-100: a fully connected network on flattened images."""

from torch import nn

from raylth.engine.models.registry import register_model


@register_model("lenet")
def lenet(input_shape, num_classes, width=300):
    c, h, w = input_shape
    second = max(1, round(width / 3))  # keeps the 300:100 ratio
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(c * h * w, width), nn.ReLU(),
        nn.Linear(width, second), nn.ReLU(),
        nn.Linear(second, num_classes),
    )
