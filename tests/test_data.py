"""Data sets and seeded batches (CPU, offline: the network is never touched)."""

import dataclasses
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raylth.engine.data import (DATASETS, Dataset, check_dataset, check_dataset_name, epoch_batches,
                                load_dataset, seed_for, steps_per_epoch)
from raylth.engine.data import batches, cifar
from raylth.errors import DataError, SpecError
from raylth.specs.groups import DataSpec, Seeds


# -- digits ---------------------------------------------------------------------

def test_digits_shapes_and_split():
    d = load_dataset(DataSpec(name="digits"))
    assert d.train_x.shape[1:] == (1, 8, 8) and d.input_shape == (1, 8, 8)
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    n_train, n_test = len(d.train_y), len(d.test_y)
    assert n_train + n_test == 1797 and n_test >= 0.2 * 1797
    assert d.num_classes == 10 and d.augment is False
    assert float(d.train_x.max()) == 16.0 and float(d.train_x.min()) == 0.0
    assert d.mean[0] == pytest.approx(float(d.train_x.mean()), rel=1e-5)
    assert d.std[0] == pytest.approx(float(d.train_x.std()), rel=1e-5)


def test_digits_read_without_sklearn_equal_load_digits(monkeypatch):
    from sklearn.datasets import load_digits as sk_load

    from raylth.engine.data import digits

    reference = sk_load()
    images, labels = digits.digits_arrays()
    assert np.array_equal(images, reference.images) and np.array_equal(labels, reference.target)
    monkeypatch.setattr(digits.importlib.util, "find_spec", lambda name: None)  # the fallback: sklearn's loader
    images, labels = digits.digits_arrays()
    assert np.array_equal(images, reference.images) and np.array_equal(labels, reference.target)


def test_digits_split_is_fixed_and_stratified():
    a, b = load_dataset(DataSpec(name="digits")), load_dataset(DataSpec(name="digits"))
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y)
    train, test = torch.bincount(a.train_y), torch.bincount(a.test_y)
    for c in range(10):
        assert int(test[c]) == round(0.3 * int(train[c] + test[c]))
    # No image is in both splits (rows of the flattened images as a set).
    rows = lambda x: {tuple(r) for r in x.flatten(1).tolist()}  # noqa: E731
    assert not rows(a.train_x) & rows(a.test_x)


def test_train_size_and_augment_override():
    full = load_dataset(DataSpec(name="digits"))
    d = load_dataset(DataSpec(name="digits", train_size=100, augment=True))
    assert len(d.train_y) == 100 and torch.equal(d.train_x, full.train_x[:100])
    assert torch.equal(d.test_y, full.test_y) and d.mean == full.mean and d.augment is True
    with pytest.raises(SpecError, match="data.train_size"):
        load_dataset(DataSpec(name="digits", train_size=10**6))


def test_unknown_name():
    with pytest.raises(SpecError, match=r"data.name: unknown data set 'x'; known data sets are .*digits"):
        check_dataset_name("x")
    with pytest.raises(SpecError, match="data.name"):
        check_dataset(DataSpec(name="mnist"))
    assert {"digits", "cifar10", "cifar100", "tensors"} <= set(DATASETS)


def test_dataset_to_and_normalize():
    d = load_dataset(DataSpec(name="digits"))
    e = d.to("cpu")
    assert e is not d and e.train_x.dtype == torch.float32
    x = d.train_x[:5]
    assert torch.allclose(d.normalize(x), (x - d.mean[0]) / d.std[0])


# -- CIFAR ------------------------------------------------------------------------

def _batch(rng, n, classes, label_key):
    data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
    batch = {b"batch_label": b"test", b"data": data, label_key: [int(v) for v in rng.randint(0, classes, n)]}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [0] * n
    return batch


def write_cifar(root, name, n=4):
    """A tiny copy in the official layout; returns {file: batch dict}."""
    rng = np.random.RandomState(1)
    if name == "cifar10":
        folder, files, key, k = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10
    else:
        folder, files, key, k = root / "cifar-100-python", ["train", "test"], b"fine_labels", 100
    folder.mkdir(parents=True)
    out = {}
    for f in files:
        out[f] = _batch(rng, n, k, key)
        with open(folder / f, "wb") as fh:
            pickle.dump(out[f], fh, protocol=2)
    return out


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_official_format(tmp_path, name):
    written = write_cifar(tmp_path, name)
    d = load_dataset(DataSpec(name=name), tmp_path)
    n_train = 20 if name == "cifar10" else 4
    assert d.train_x.shape == (n_train, 3, 32, 32) and d.test_x.shape == (4, 3, 32, 32)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert d.augment is True and d.num_classes == (10 if name == "cifar10" else 100)
    first = written["data_batch_1" if name == "cifar10" else "train"]
    label_key = b"labels" if name == "cifar10" else b"fine_labels"
    assert d.train_y[:4].tolist() == first[label_key]
    # Channel-major rows: pixel (c, r, col) is data[c * 1024 + r * 32 + col].
    raw = first[b"data"][1]
    for c, r, col in [(0, 0, 0), (1, 5, 7), (2, 31, 30), (0, 17, 3)]:
        assert int(d.train_x[1, c, r, col]) == raw[c * 1024 + r * 32 + col]
    assert torch.equal(d.train_x[:4].reshape(4, -1), torch.from_numpy(first[b"data"]))


def test_cifar_missing_and_download_fails(tmp_path, monkeypatch):
    def offline(url, dest, timeout=None):
        raise OSError("network is unreachable")
    monkeypatch.setattr(cifar, "download", offline)
    with pytest.raises(DataError) as err:
        check_dataset(DataSpec(name="cifar10"), tmp_path / "data")
    msg = str(err.value)
    assert str(tmp_path / "data" / "cifar-10-batches-py") in msg and "network is unreachable" in msg
    assert "cifar-10-python.tar.gz" in msg and "\n" not in msg
    assert list((tmp_path / "data").iterdir()) == []  # no archive or staging folder left behind


def _archive_of(folder_parent, folder_name):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder_parent / folder_name, arcname=folder_name)
    return buf.getvalue()


def test_cifar_download_checks_md5_and_extracts(tmp_path, monkeypatch):
    write_cifar(tmp_path / "src", "cifar100")
    blob = _archive_of(tmp_path / "src", "cifar-100-python")
    monkeypatch.setattr(cifar, "download", lambda url, dest, timeout=None: dest.write_bytes(blob))
    root = tmp_path / "root"
    with pytest.raises(DataError, match="md5"):  # the official checksum does not match the fake
        load_dataset(DataSpec(name="cifar100"), root)
    fake = dataclasses.replace(cifar.SETS["cifar100"], md5=hashlib.md5(blob).hexdigest())
    monkeypatch.setitem(cifar.SETS, "cifar100", fake)
    d = load_dataset(DataSpec(name="cifar100"), root)
    assert len(d.train_y) == 4
    assert [p.name for p in root.iterdir()] == ["cifar-100-python"]


def test_cifar_corrupt_or_missing_batch(tmp_path):
    write_cifar(tmp_path, "cifar10")
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3") as err:
        load_dataset(DataSpec(name="cifar10"), tmp_path)
    assert "\n" not in str(err.value)
    bad.unlink()
    with pytest.raises(DataError, match="missing .*data_batch_3"):
        load_dataset(DataSpec(name="cifar10"), tmp_path)


def test_cifar_refuses_code_in_pickles(tmp_path):
    write_cifar(tmp_path, "cifar10")
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": dataclasses.replace}, f)  # a pickle that imports a function
    with pytest.raises(DataError, match="test_batch"):
        load_dataset(DataSpec(name="cifar10"), tmp_path)


def test_cifar_real_subset(cifar10_subset_root):
    size = check_dataset(DataSpec(name="cifar10"), cifar10_subset_root)  # what the driver checks
    assert (size.train, size.input_shape, size.num_classes) == (200, (3, 32, 32), 10)
    d = load_dataset(DataSpec(name="cifar10"), cifar10_subset_root)
    assert len(d.train_y) == 200 and len(d.test_y) == 200
    assert torch.bincount(d.train_y).tolist() == [20] * 10
    assert torch.bincount(d.test_y).tolist() == [20] * 10
    # Real photos, so per-channel means sit near the standard constants.
    means = d.train_x.double().mean((0, 2, 3))
    assert torch.allclose(means, torch.tensor(d.mean, dtype=torch.float64), atol=15)


def test_the_references_normalisation_is_a_data_option(cifar10_subset_root):
    """norm: dc is DC/DSA/IDC's constants (std 0.2023/0.1994/0.2010 on CIFAR-10), in pixel units;
    the images are the same, only what normalise gives differs; a set without such constants refuses it."""
    standard = load_dataset(DataSpec("cifar10"), cifar10_subset_root)
    dc = load_dataset(DataSpec("cifar10", norm="dc"), cifar10_subset_root)
    assert torch.equal(standard.train_x, dc.train_x)
    assert dc.std == pytest.approx((0.2023 * 255, 0.1994 * 255, 0.2010 * 255))
    assert dc.mean == pytest.approx((0.4914 * 255, 0.4822 * 255, 0.4465 * 255))
    x = standard.train_x[:4].float()
    assert torch.allclose(dc.normalize(x) * torch.tensor(dc.std).view(1, 3, 1, 1) / 255,
                          x / 255 - torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1), atol=1e-5)
    assert not torch.allclose(dc.normalize(x), standard.normalize(x))
    assert DataSpec("cifar10").id != DataSpec("cifar10", norm="dc").id and "norm" not in DataSpec("cifar10").canonical()
    with pytest.raises(SpecError, match=r"^data.norm: 'dc' is defined for cifar10, cifar100, not digits"):
        load_dataset(DataSpec("digits", norm="dc"))


# -- tensors files ----------------------------------------------------------------

def _tensors(n=6, m=4, shape=(3, 5, 5), classes=3):
    g = torch.Generator().manual_seed(0)
    return {"images": torch.rand((n, *shape), generator=g), "labels": torch.arange(n) % classes,
            "test_images": torch.rand((m, *shape), generator=g), "test_labels": torch.arange(m) % classes}


def _save(path, items):
    if path.suffix == ".pt":
        torch.save(items, path)
    else:
        np.savez(path, **{k: np.asarray(v) for k, v in items.items()})
    return path


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_tensors_round_trip(tmp_path, suffix):
    items = _tensors()
    path = _save(tmp_path / f"set{suffix}", items)
    d = load_dataset(DataSpec(name="tensors", path=str(path)))
    assert torch.equal(d.train_x, items["images"]) and torch.equal(d.test_y, items["test_labels"])
    assert d.train_y.dtype == torch.int64 and d.num_classes == 3 and d.augment is False
    assert d.mean == pytest.approx(items["images"].double().mean((0, 2, 3)).tolist())
    # x / y aliases, file mean/std and num_classes.
    alias = {"x": items["images"], "y": items["labels"], "test_x": items["test_images"],
             "test_y": items["test_labels"], "mean": [0.5, 0.5, 0.5], "std": [0.25] * 3, "num_classes": 7}
    d = load_dataset(DataSpec(name="tensors", path=str(_save(tmp_path / f"alias{suffix}", alias))))
    assert d.mean == (0.5,) * 3 and d.std == (0.25,) * 3 and d.num_classes == 7


def test_tensors_with_real_test_split(tmp_path):
    digits = load_dataset(DataSpec(name="digits"))
    x = torch.rand(10, 1, 8, 8) * 16
    path = _save(tmp_path / "d.pt", {"images": x, "labels": torch.arange(10)})
    d = load_dataset(DataSpec(name="tensors", path=str(path), test="digits"))
    assert torch.equal(d.test_x, digits.test_x) and d.num_classes == 10 and d.mean == digits.mean
    assert torch.equal(d.train_x, x)
    # Images stored already normalised (file mean/std) are mapped to digits' units.
    z = torch.randn(10, 1, 8, 8)
    path = _save(tmp_path / "z.pt", {"images": z, "labels": torch.arange(10), "mean": [0.0], "std": [1.0]})
    d = load_dataset(DataSpec(name="tensors", path=str(path), test="digits"))
    assert torch.allclose(d.normalize(d.train_x), z, atol=1e-5)
    with pytest.raises(DataError, match=r"w.pt: images are \[3, 8, 8\] but digits"):
        load_dataset(DataSpec(name="tensors", test="digits", path=str(_save(tmp_path / "w.pt", {
            "images": torch.rand(2, 3, 8, 8), "labels": torch.tensor([0, 1])}))))
    with pytest.raises(DataError, match=r"l.pt: labels holds values in 0..10, outside 0..9"):
        load_dataset(DataSpec(name="tensors", test="digits", path=str(_save(tmp_path / "l.pt", {
            "images": torch.rand(2, 1, 8, 8), "labels": torch.tensor([0, 10])}))))
    with pytest.raises(SpecError, match="data.test"):
        load_dataset(DataSpec(name="tensors", path=str(path), test="nope"))


@pytest.mark.parametrize("change, what", [
    (lambda t: t.update(images=t["images"][0]), "shape"),
    (lambda t: t.update(labels=torch.tensor([0, 1, 2, 0, 1, -1])), "outside"),
    (lambda t: t.update(test_labels=torch.tensor([0, 1, 2, 9]), num_classes=3), "outside 0..2"),
    (lambda t: t.update(labels=torch.tensor([0, 1, 2])), "3 labels for 6 images"),
    (lambda t: t.update(test_images=torch.rand(4, 3, 6, 6)), "test images are"),
    (lambda t: t.pop("test_labels"), "no test_labels"),
    (lambda t: t.update(labels=torch.zeros(6, 3)), "soft labels"),
    (lambda t: t.update(images=torch.full((6, 3, 5, 5), float("nan"))), "NaN"),
])
def test_tensors_bad_files(tmp_path, change, what):
    items = _tensors()
    change(items)
    path = _save(tmp_path / "bad.pt", items)
    with pytest.raises(DataError, match=what) as err:
        load_dataset(DataSpec(name="tensors", path=str(path)))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_tensors_missing_or_unreadable_file(tmp_path):
    for path in (tmp_path / "none.pt", tmp_path / "junk.npz", tmp_path / "x.csv"):
        if path.name != "none.pt":
            path.write_bytes(b"not a tensor file")
        with pytest.raises(DataError) as err:
            check_dataset(DataSpec(name="tensors", path=str(path)))
        assert str(path) in str(err.value)


# -- batches ----------------------------------------------------------------------

def _indexed(n=50, hw=6):
    """Distinct uint8 images whose label is their index, so batches can be traced."""
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (n, 3, hw, hw), generator=g, dtype=torch.uint8)
    y = torch.arange(n)
    return Dataset("t", x, y, x[:5], y[:5], (100.0,) * 3, (50.0,) * 3, n, augment=True)


def _epoch(data, seeds, augment=True, epoch=0, start_batch=0, bs=8):
    return list(epoch_batches(data, bs, epoch, seeds, augment, start_batch=start_batch))


def test_steps_and_seed_for():
    assert steps_per_epoch(50, 8) == 7 and steps_per_epoch(5, 8) == 1 and steps_per_epoch(16, 8) == 2
    assert steps_per_epoch(50, 8, drop_last=True) == 6 and steps_per_epoch(5, 8, drop_last=True) == 1
    s = seed_for(1, 2, "order")
    assert s == seed_for(1, 2, "order") and 0 <= s < 2**63
    assert len({s, seed_for(1, 2, "augment"), seed_for(1, 3, "order"), seed_for(2, 2, "order")}) == 4
    small = _indexed(5)
    (x, y), = _epoch(small, Seeds(), bs=8)
    assert sorted(y.tolist()) == [0, 1, 2, 3, 4] and x.dtype == torch.float32


def test_batches_deterministic_and_order_independent_of_augment():
    data = _indexed()
    a, b = _epoch(data, Seeds(order=1, augment=2)), _epoch(data, Seeds(order=1, augment=2))
    assert len(a) == 7 and all(torch.equal(p.x, q.x) and torch.equal(p.y, q.y) for p, q in zip(a, b))
    c = _epoch(data, Seeds(order=9, augment=2))
    order = lambda bs: torch.cat([y for _, y in bs])  # noqa: E731
    assert not torch.equal(order(a), order(c))
    per_example = lambda bs: {int(i): x[j] for x, y in bs for j, i in enumerate(y)}  # noqa: E731
    pa, pc = per_example(a), per_example(c)
    common = set(pa) & set(pc)
    assert len(common) > 20 and all(torch.equal(pa[i], pc[i]) for i in common)
    # Another augment seed or epoch changes the draws.
    d = per_example(_epoch(data, Seeds(order=1, augment=3)))
    assert any(not torch.equal(pa[i], d[i]) for i in pa)
    assert not torch.equal(order(a), order(_epoch(data, Seeds(order=1, augment=2), epoch=1)))


def test_start_batch_is_the_tail():
    data = _indexed()
    full = _epoch(data, Seeds.all(4))
    for k in (0, 1, 5, 6):
        tail = _epoch(data, Seeds.all(4), start_batch=k)
        assert len(tail) == len(full) - k
        assert all(torch.equal(p.x, q.x) and torch.equal(p.y, q.y) for p, q in zip(tail, full[k:]))


def test_no_augment_is_just_normalised_pixels():
    data = _indexed()
    for x, y in _epoch(data, Seeds(), augment=False):
        assert torch.allclose(x, (data.train_x[y].float() - 100) / 50)


def test_crop_flip_on_crafted_images():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6) + 1
    center = torch.tensor([[4, 4], [4, 4]])
    assert torch.equal(batches.crop_flip(x, center, torch.tensor([False, False])), x)
    assert torch.equal(batches.crop_flip(x, center, torch.tensor([True, False])), torch.stack([x[0].flip(-1), x[1]]))
    out = batches.crop_flip(x, torch.tensor([[0, 0], [8, 8]]), torch.tensor([False, False]))
    assert torch.equal(out[0, :, 4:, 4:], x[0, :, :2, :2]) and (out[0, :, :4] == 0).all()
    assert torch.equal(out[1, :, :2, :2], x[1, :, 4:, 4:]) and (out[1, :, 2:] == 0).all()
    # Random draws against a per-image reference, on uint8 as the trainer uses it.
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 256, (16, 3, 7, 5), generator=g, dtype=torch.uint8)
    offsets, flips = torch.randint(0, 9, (16, 2), generator=g), torch.rand(16, generator=g) < 0.5
    got = batches.crop_flip(u, offsets, flips)
    assert got.dtype == torch.uint8 and got.shape == u.shape
    for i in range(16):
        r, c = offsets[i].tolist()
        ref = F.pad(u[i], (4, 4, 4, 4))[:, r:r + 7, c:c + 5]
        assert torch.equal(got[i], ref.flip(-1) if flips[i] else ref)


def test_global_rng_untouched():
    data = _indexed()
    state = torch.get_rng_state()
    _epoch(data, Seeds.all(1))
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draws_match_cpu():
    data = _indexed()
    cpu = _epoch(data, Seeds.all(5))
    gpu = _epoch(data.to("cuda"), Seeds.all(5))
    for (a, y), (b, z) in zip(cpu, gpu):
        assert b.is_cuda and torch.equal(y, z.cpu()) and torch.allclose(a, b.cpu())
