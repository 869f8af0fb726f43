"""ConvNet-3, the network of dataset distillation (DC, DSA, DM, MTT)."""

from torch import nn

from raylth.engine.models.registry import register_model


@register_model("conv3")
def conv3(input_shape, num_classes, width=128):
    c, h, w = input_shape
    layers = []
    for _ in range(3):
        layers += [
            nn.Conv2d(c, width, 3, padding=1),
            nn.GroupNorm(width, width, affine=True),  # instance norm with affine, as in DC
            nn.ReLU(),
        ]
        if h > 1 and w > 1:  # small inputs (8x8 digits) reach 1x1 early
            layers.append(nn.AvgPool2d(2))
            h, w = h // 2, w // 2
        c = width
    layers += [nn.Flatten(), nn.Linear(width * h * w, num_classes)]
    return nn.Sequential(*layers)
