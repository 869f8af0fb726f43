"""VGG-16 with BatchNorm, CIFAR style (one linear classifier)."""

from torch import nn

from raylth.engine.models.registry import register_model

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


@register_model("vgg16")
def vgg16(input_shape, num_classes, width=64):
    c, h, w = input_shape
    layers = []
    for v in VGG16:
        if v == "M":
            if h > 1 and w > 1:  # skip pools once 1x1, so 8x8 inputs work
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            continue
        out = max(1, round(v * width / 64))
        layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)
