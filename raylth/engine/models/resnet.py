"""CIFAR ResNets: ResNet-18 (4 stages, kuangliu style; ``resnet18_idc``: IDC's, which the paper
prunes) and ResNet-20 (He et al. 2016)."""

from torch import nn

from raylth.engine.models.registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # projection shortcut (option B)
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, in_channels, num_classes, widths, blocks):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages, cin = [], widths[0]
        for i, (cout, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            stages += [BasicBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(n)]
            cin = cout
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


@register_model("resnet18")
def resnet18(input_shape, num_classes, width=64):
    return ResNet(input_shape[0], num_classes, [width, 2 * width, 4 * width, 8 * width], [2, 2, 2, 2])


@register_model("resnet20")
def resnet20(input_shape, num_classes, width=16):
    return ResNet(input_shape[0], num_classes, [width, 2 * width, 4 * width], [3, 3, 3])


@register_model("resnet18_idc")
def resnet18_idc(input_shape, num_classes, width=32):
    """The CIFAR ResNet-18 of IDC (``ResNet('cifar10', 18, nclass, 'batch')``),
    which McDermott & Parhi prune: ``resnet18`` at base width 32 (2,797,610
    parameters on CIFAR-10), with IDC's initialisation: conv weights
    N(0, 2 / (k^2 * out_channels)), BatchNorm 1/0, the linear layer PyTorch's default."""
    model = resnet18(input_shape, num_classes, width)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model
