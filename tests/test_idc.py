"""IDC's condensation (method idc) against IDC's definition, on real CIFAR-10
images: one matching step equals an independent computation (torch.func
gradients of the squared-error distance between the real and synthetic
gradients of one network under one shared DSA draw, SGD with momentum on the
pixels), the clamp holds the pixels in [0, 1] at each outer iteration, the
network between matches trains on real data only; the spec's defaults are
IDC's and its bad fields fail with one line; the idc evaluation protocol is
IDC's."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from raylth.engine.data import load_dataset
from raylth.engine.data.dsa import apply_dsa, sample_dsa
from raylth.engine.distill import idc
from raylth.engine.distill.evaluate import evaluate_idc, idc_train_spec
from raylth.engine.models import build_model
from raylth.errors import SpecError
from raylth.specs import DataSpec, DistillEvalSpec, DistillSpec, ModelSpec, Step

pytestmark = pytest.mark.usefixtures("one_thread")
IPC, FACTOR, N_REAL = 1, 2, 4


@pytest.fixture(scope="module")
def cifar(cifar10_subset_root):
    real = load_dataset(DataSpec("cifar10"), cifar10_subset_root)
    return real, real.train_x.float() / 255.0, real.train_y


def normalizer(real):
    return lambda pixels: real.normalize(pixels * 255.0)


def net_of(seed: int = 0):
    return build_model(ModelSpec("conv3", width=8), (3, 32, 32), 10, seed=seed)


def idc_decode(image: torch.Tensor, factor: int) -> torch.Tensor:
    """IDC's decode_zoom, written again: tiles row-major, each upsampled bilinearly to full size."""
    h = image.shape[-1]
    s = h // factor
    tiles = [image[:, :, i * s:(i + 1) * s, j * s:(j + 1) * s] for i in range(factor) for j in range(factor)]
    return F.interpolate(torch.cat(tiles), size=(h, h), mode="bilinear", align_corners=False)


def conv_names(net) -> list[str]:
    return [name for name, p in net.named_parameters() if p.dim() == 4]


def definition_step(net, images, reals, draws, normalize, lr, buffer):
    """IDC's per-class matching update computed from its definition: for each
    class in turn, L(x) = sum over conv weights of ||g_real - g_syn(x)||^2,
    g the gradient of the mean cross-entropy of the batch augmented by the
    class's one draw; x <- x - lr * b, b <- 0.5 b + dL/dx (SGD momentum)."""
    params = {k: v.detach() for k, v in net.named_parameters()}
    names = conv_names(net)

    def batch_loss(conv, x, c):
        out = functional_call(net, params | conv, (x,))
        return F.cross_entropy(out, torch.full((len(x),), c, dtype=torch.long))

    conv = {k: params[k] for k in names}
    for c, (real, draw) in enumerate(zip(reals, draws)):
        g_real = grad(batch_loss)(conv, apply_dsa(normalize(real), draw), c)

        def distance(x):
            syn = apply_dsa(normalize(idc_decode(x[c * IPC:(c + 1) * IPC], FACTOR)), draw)
            g_syn = grad(batch_loss)(conv, syn, c)
            return sum(((g_real[k] - g_syn[k]) ** 2).sum() for k in names)

        step = grad(distance)(images)
        buffer = step if buffer is None else 0.5 * buffer + step
        images = images - lr * buffer
    return images, buffer


def test_one_matching_step_equals_the_definition(cifar):
    real, pixels, labels = cifar
    normalize = normalizer(real)
    g = torch.Generator().manual_seed(0)
    images0 = idc.mosaic_init(pixels, labels, 10, IPC, FACTOR, g)
    reals = [pixels[labels == c][:N_REAL] for c in range(10)]
    settings = idc.IdcSettings(ipc=IPC, factor=FACTOR, lr_img=0.5)
    net = net_of()
    mine = images0.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([mine], lr=settings.lr_img, momentum=idc.IMAGE_MOMENTUM)
    expected, buffer = images0.clone(), None
    before = copy.deepcopy(net.state_dict())
    for step in range(2):  # the second step checks the momentum carried over
        draws = [sample_dsa(1, g, settings.match_ops, mode="idc") for _ in range(10)]
        idc.match_step(net, mine, optimizer, reals, draws, normalize, settings, g)
        expected, buffer = definition_step(net, expected, reals, draws, normalize, settings.lr_img, buffer)
        assert torch.allclose(mine.detach(), expected, atol=1e-5, rtol=1e-4), step
    assert (mine.detach() - images0).abs().max() > 1e-3  # the step moved the pixels
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # and not the network


def test_the_draw_is_shared_by_the_real_and_the_synthetic_batch(cifar):
    """match_loss augments real and synthetic together: the same as augmenting
    each with the one draw (a batch-1 draw applies to the whole batch)."""
    real, pixels, labels = cifar
    normalize = normalizer(real)
    g = torch.Generator().manual_seed(3)
    draw = sample_dsa(1, g, "color_crop_cutout", mode="idc")
    x = normalize(pixels[:6])
    together = apply_dsa(x, draw)
    assert torch.allclose(together[:4], apply_dsa(x[:4], draw)) and torch.allclose(together[4:], apply_dsa(x[4:], draw))
    assert draw.ops == ("color", "crop", "cutout")


def test_pixels_are_clamped_at_each_outer_iteration(cifar, monkeypatch):
    real, pixels, labels = cifar
    seen = []
    step = idc.match_step

    def spy(net, images, *args):
        seen.append((float(images.detach().min()), float(images.detach().max())))
        return step(net, images, *args)

    monkeypatch.setattr(idc, "match_step", spy)
    settings = idc.IdcSettings(ipc=IPC, factor=FACTOR, iterations=2, steps=2, n_data=0, lr_img=200.0,
                               batch_real=N_REAL)
    out, _ = idc.distill_idc(pixels, labels, 10, net_of, normalizer(real), settings,
                             generator=torch.Generator().manual_seed(0))
    first, second = seen[1], seen[2]  # within iteration 1 (after a step), at iteration 2's start
    assert first[0] < 0 or first[1] > 1, "the lr should push pixels out of [0, 1] within an iteration"
    assert 0 <= second[0] and second[1] <= 1
    assert float(out.min()) < 0 or float(out.max()) > 1  # IDC saves without a last clamp


def test_the_network_between_matches_trains_on_real_data_only(cifar, monkeypatch):
    """Two runs whose synthetic images differ (image lr 0 vs large) train
    bitwise-equal networks: the network update never sees the synthetic set."""
    real, pixels, labels = cifar
    states = []
    update = idc.train_on_real

    def spy(net, *args):
        update(net, *args)
        states[-1].append({k: v.clone() for k, v in net.state_dict().items()})

    monkeypatch.setattr(idc, "train_on_real", spy)
    images = []
    for lr in (0.0, 50.0):
        states.append([])
        settings = idc.IdcSettings(ipc=IPC, factor=FACTOR, iterations=2, steps=2, n_data=48, batch_real=N_REAL * 4,
                                   lr_img=lr)
        out, _ = idc.distill_idc(pixels, labels, 10, net_of, normalizer(real), settings,
                                 generator=torch.Generator().manual_seed(0))
        images.append(out)
    assert not torch.equal(images[0], images[1])
    assert len(states[0]) == len(states[1]) == 4
    for a, b in zip(*states):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(states[0][0]["0.weight"], states[0][1]["0.weight"])  # it trained


def test_the_defaults_are_idcs_and_leave_out_what_they_mean():
    spec = DistillSpec(method="idc")
    assert (spec.ipc, spec.factor, spec.iterations, spec.outer_loop, spec.batch_real, spec.batch_syn, spec.n_data,
            spec.metric, spec.match_ops, spec.cutmix, spec.lr_net, spec.model) == \
        (10, 2, 2000, 100, 64, 128, 2000, "mse", "color_crop_cutout", 0.5, 0.01, ModelSpec("conv3"))
    assert spec.lr_img_value == pytest.approx(5e-3)
    assert DistillSpec(method="idc", ipc=50).lr_img_value == pytest.approx(2.5e-2)  # IDC's tune_lr_img
    assert spec.to_dict(omit_defaults=True) == {"method": "idc"}
    assert DistillSpec.from_dict({"method": "idc", "factor": 2, "iterations": 2000}).id == spec.id
    assert DistillSpec.from_stored(spec.to_dict()) == spec
    # other methods keep their defaults and their ids
    assert DistillSpec(method="gm").factor == 1 and DistillSpec(method="gm", n_data=5).id == DistillSpec(method="gm").id


@pytest.mark.parametrize("fields, named", [
    ({"metric": "l3"}, "distill.metric"), ({"n_data": -1}, "distill.n_data"), ({"cutmix": 2}, "distill.cutmix"),
    ({"match_ops": "color_blur"}, "distill.match_ops"), ({"zca": True}, "distill.zca"),
    ({"outer_loop": 0}, "distill.outer_loop"), ({"batch_syn": 0}, "distill.batch_syn")])
def test_bad_fields_fail_with_one_line(fields, named):
    with pytest.raises(SpecError) as err:
        DistillSpec.from_dict({"method": "idc", **fields}, "distill")
    assert str(err.value).startswith(named) and "\n" not in str(err.value)


def test_the_idc_protocol_is_idcs(cifar):
    spec = DistillEvalSpec(protocol="idc")
    assert (spec.epochs, spec.batch_size, spec.lr) == (1000, 64, None)
    assert DistillEvalSpec().epochs == 300 and DistillEvalSpec().batch_size == 256
    train = idc_train_spec(1000, 0.01, 64)
    assert train.milestones == (Step(666, "ep"), Step(833, "ep")) and train.gamma == 0.2
    assert (train.momentum, train.weight_decay, train.batch_size, train.last_batch) == (0.9, 5e-4, 64, "keep")
    assert train.augment.ops == "color_crop_flip_scale_rotate" and train.augment.mode == "idc"
    assert train.augment.cutmix == 0.5 and train.eval_every == Step(250, "ep")
    real, pixels, labels = cifar
    x, y = real.normalize(real.train_x[:40].float()), real.train_y[:40]
    result = evaluate_idc(x, y, real, lambda seed: net_of(seed), epochs=4, batch_size=16, seeds=[0, 1])
    assert len(result["accs"]) == len(result["best_accs"]) == 2
    assert all(b >= a for a, b in zip(result["accs"], result["best_accs"]))
    again = evaluate_idc(x, y, real, lambda seed: net_of(seed), epochs=4, batch_size=16, seeds=[0, 1])
    assert again == result  # seeded: it repeats
