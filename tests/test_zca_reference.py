"""raylth's ZCA against kornia's ``ZCAWhitening`` (what MTT calls) on real
CIFAR-10 images, in the space MTT fits it: raw [0, 1] pixels, eps 0.1."""

import pytest
import torch

from raylth.engine.data import load_dataset
from raylth.engine.distill import fit_zca_space, space_input
from raylth.specs import DataSpec

kornia = pytest.importorskip("kornia")


@pytest.fixture(scope="module")
def cifar(cifar10_subset):
    return load_dataset(DataSpec("cifar10"), cifar10_subset(100))  # 1,000 train, 1,000 test images


@pytest.fixture(scope="module")
def pixel_zca(cifar):
    return fit_zca_space(cifar, "pixels", eps=0.1)


def test_zca_equals_kornia_on_cifar10_pixels(cifar, pixel_zca):
    ours = pixel_zca
    train01 = cifar.train_x.float() / 255  # MTT: ToTensor only
    theirs = kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True).fit(train01.double())
    test01 = cifar.test_x.float() / 255
    expected = theirs(test01.double()).float()
    assert torch.allclose(ours.whiten(cifar.test_x, cifar), expected, atol=1e-4)
    assert torch.allclose(ours.apply(test01), expected, atol=1e-4)


def test_the_pixel_space_is_the_references_not_the_normalised_one(cifar, pixel_zca):
    """Normalising first multiplies the variance by ~16 and makes eps ~16x
    weaker: whitened pixels spread much more (measured on these 1,000 images:
    std 0.24 from pixels, 0.40 from normalised images)."""
    pixels = float(pixel_zca.whiten(cifar.train_x, cifar).std())
    normalised = float(fit_zca_space(cifar, "normalized").whiten(cifar.train_x, cifar).std())
    assert 0.2 < pixels < 0.3 and normalised > 0.35
    assert torch.equal(space_input(cifar, cifar.train_x[:2], "pixels"), cifar.train_x[:2].float() / 255)
