"""The model registry: every family builds, runs, is seeded and names its prunable weights."""

import pytest
import torch
from torch import nn

from raylth.engine.models import MODELS, build_model, check_model_name, prunable_weight_names
from raylth.errors import SpecError
from raylth.specs import ModelSpec

SHAPES = [((1, 8, 8), 10), ((3, 32, 32), 10), ((3, 32, 32), 100)]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_families_registered():
    assert {"lenet", "conv3", "resnet18", "resnet20", "vgg16"} <= set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape,classes", SHAPES)
def test_builds_and_forwards(name, shape, classes):
    model = build_model(ModelSpec(name=name), shape, classes, seed=0)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        out = model(x)  # train mode: BatchNorm on batch statistics
        assert out.shape == (2, classes)
        assert torch.isfinite(out).all()
        # channels_last inputs and weights must give the same logits (no .view on
        # strided tensors); compared in eval mode, where BatchNorm is well conditioned
        model.eval()
        out = model(x)
        model = model.to(memory_format=torch.channels_last)
        out_cl = model(x.to(memory_format=torch.channels_last))
    assert out_cl.shape == (2, classes)
    torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_dry_runs_flop_count_is_torchs_flop_counter(name):
    """The dry run counts FLOPs with hooks on convolutions and linear layers; torch's own flop
    counter (every matmul and convolution it dispatches) counts the same in every model."""
    from torch.utils.flop_counter import FlopCounterMode

    from raylth.sweep.dry_run import forward_flops

    spec, shape = ModelSpec(name=name, width=8), (3, 32, 32)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        build_model(spec, shape, 10, seed=0).eval()(torch.zeros(1, *shape))
    assert forward_flops(spec, shape, 10) == counter.get_total_flops() > 0


def test_resnet18_param_count():
    model = build_model(ModelSpec(name="resnet18"), (3, 32, 32), 10, seed=0)
    assert abs(n_params(model) - 11_173_962) <= 0.01 * 11_173_962


def test_resnet20_param_count():
    # 269,722 with the zero-padding shortcut (option A); the two 1x1 conv+BN
    # projections of option B add 2,752.
    model = build_model(ModelSpec(name="resnet20"), (3, 32, 32), 10, seed=0)
    assert n_params(model) == 272_474


def test_conv3_param_count():
    # 320,010 for CIFAR-10 at width 128, as reported for ConvNet-3 in the DC papers.
    model = build_model(ModelSpec(name="conv3"), (3, 32, 32), 10, seed=0)
    assert n_params(model) == 320_010


@pytest.mark.parametrize("name", sorted(MODELS))
def test_seed_determines_init(name):
    spec, shape = ModelSpec(name=name), (1, 8, 8)
    a = build_model(spec, shape, 10, seed=1).state_dict()
    b = build_model(spec, shape, 10, seed=1).state_dict()
    c = build_model(spec, shape, 10, seed=2).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_build_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    build_model(ModelSpec(name="conv3"), (3, 32, 32), 10, seed=7)
    assert torch.equal(torch.get_rng_state(), before)


def test_unknown_name():
    with pytest.raises(SpecError, match="'nosuchnet'"):
        build_model(ModelSpec(name="nosuchnet"), (3, 32, 32), 10, seed=0)
    with pytest.raises(SpecError, match="model.name: unknown model 'nosuchnet'; known models are .*lenet"):
        check_model_name("nosuchnet")
    check_model_name("lenet")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prunable_weight_names(name):
    model = build_model(ModelSpec(name=name), (1, 8, 8), 10, seed=0)
    names = prunable_weight_names(model)
    params = dict(model.named_parameters())
    expected = [n + ".weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert names == expected and names
    assert all(n.endswith(".weight") and n in params for n in names)
    assert all(params[n].dim() in (2, 4) for n in names)  # no biases, no norm parameters
    # in module order, i.e. the order named_parameters yields them
    order = list(params)
    assert sorted(names, key=order.index) == names
    # the last one is the classifier
    assert params[names[-1]].shape[0] == 10


def test_prunable_excludes_norms_and_biases():
    model = build_model(ModelSpec(name="resnet20"), (3, 32, 32), 10, seed=0)
    names = set(prunable_weight_names(model))
    assert "fc.weight" in names and "fc.bias" not in names
    assert not any("bn" in n for n in names)
    assert "layers.3.shortcut.0.weight" in names and "layers.3.shortcut.1.weight" not in names
    # conv1 + 9 blocks x 2 convs + 2 projections + fc
    assert len(names) == 1 + 18 + 2 + 1


@pytest.mark.parametrize("name,width", [("lenet", 150), ("conv3", 32), ("resnet18", 16),
                                        ("resnet20", 8), ("vgg16", 16)])
def test_width_changes_param_count(name, width):
    default = build_model(ModelSpec(name=name), (3, 32, 32), 10, seed=0)
    narrow = build_model(ModelSpec(name=name, width=width), (3, 32, 32), 10, seed=0)
    assert n_params(narrow) < n_params(default)
    assert narrow(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_lenet_width_keeps_ratio():
    model = build_model(ModelSpec(name="lenet", width=600), (1, 8, 8), 10, seed=0)
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [600, 200, 10]


def test_resnet18_idc_is_the_network_the_paper_prunes():
    """IDC's CIFAR ResNet-18 (models/resnet.py, 'batch' norm): conv1 3->32
    3x3 s1 p1 no bias, 4 stages of 2 BasicBlocks at 32/64/128/256 with 1x1
    projection shortcuts where the shape changes, global average pool, fc;
    2,797,610 parameters; conv weights N(0, 2 / (9 * out_channels))."""
    from torch import nn

    model = build_model(ModelSpec("resnet18_idc"), (3, 32, 32), 10, seed=0)
    assert sum(p.numel() for p in model.parameters()) == 2_797_610
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs][:3] == [
        (3, 32, 3, 1), (32, 32, 3, 1), (32, 32, 3, 1)]
    assert sorted({c.out_channels for c in convs}) == [32, 64, 128, 256] and all(c.bias is None for c in convs)
    assert sum(c.kernel_size[0] == 1 for c in convs) == 3  # projection shortcuts of stages 2-4
    assert model.fc.in_features == 256
    same = build_model(ModelSpec("resnet18", width=32), (3, 32, 32), 10, seed=0)
    assert [p.shape for p in model.parameters()] == [p.shape for p in same.parameters()]
    big = convs[-2].weight.detach()  # 256 out channels, 3x3
    assert float(big.std()) == pytest.approx((2 / (9 * 256)) ** 0.5, rel=0.05)
