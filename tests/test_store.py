"""The store: atomic finishing, manifests, broken artifacts moved aside."""

import json
import zlib

import pytest
import torch
import yaml

from raylth.errors import StoreError
from raylth.specs import ImpLevelSpec, PruneSpec, Step, TrainSpec, TrainStageSpec
from raylth.store import Artifact, Store
from raylth.store import store as store_module

SPEC_A = TrainStageSpec(train=TrainSpec(lr=0.05, duration=Step(2, "ep")))
SPEC_B = ImpLevelSpec(level=2, train=TrainSpec(duration=Step(2, "ep")),
                      prune=PruneSpec(rewind=Step(10, "it")))


def _files(path):
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


def _write(store, spec, seed=0, metrics=None, resume=True):
    g = torch.Generator().manual_seed(seed)
    weights = {"w": torch.randn(40, 30, generator=g), "b": torch.randn(30, generator=g)}
    mask = {"w": weights["w"] > 0}
    partial = store.partial(spec.id)
    partial.save("weights/init.pt", {k: v * 0.5 for k, v in weights.items()})
    partial.save("weights/final.pt", weights)
    partial.save("mask.pt", mask)
    if resume:
        partial.save("resume.pt", {"trainer": {"step": 3}, "wall_s": 1.0})
    artifact = store.finish(spec, partial, metrics or {"test_acc": 0.5 + seed / 10, "history": []})
    return artifact, weights, mask


def test_finish_writes_a_complete_artifact(tmp_path):
    store = Store(tmp_path)
    artifact, weights, mask = _write(store, SPEC_A)
    folder = tmp_path / SPEC_A.id
    assert artifact.path == folder and folder.is_dir()
    assert not (tmp_path / ".partial" / SPEC_A.id).exists()

    files = _files(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert files == set(manifest) | {"manifest.json"}
    assert set(manifest) == {"spec.yaml", "metrics.json", "weights/init.pt", "weights/final.pt",
                             "mask.pt"}  # resume.pt and owner.json are not kept
    for name, entry in manifest.items():
        assert (folder / name).stat().st_size == entry["size"]
        assert entry["crc32"] == f"{zlib.crc32((folder / name).read_bytes()):08x}"

    record = yaml.safe_load((folder / "spec.yaml").read_text())
    assert record["id"] == SPEC_A.id and record["kind"] == "train"
    assert record["canonical"] == SPEC_A.canonical()
    assert TrainStageSpec.from_dict(record["spec"]) == SPEC_A

    got = store.get(SPEC_A.id)
    assert isinstance(got, Artifact)
    assert got.path == folder and got.id == SPEC_A.id and got.kind == "train"
    assert got.metrics == {"test_acc": 0.5, "history": []}
    assert store.has(SPEC_A.id)
    final = got.weights("final")
    assert final.keys() == weights.keys() and all(torch.equal(final[k], weights[k]) for k in weights)
    assert torch.equal(got.weights("init")["w"], weights["w"] * 0.5)
    assert torch.equal(got.mask()["w"], mask["w"])


def test_get_missing_is_none(tmp_path):
    store = Store(tmp_path / "never-created")
    assert store.get(SPEC_A.id) is None and not store.has(SPEC_A.id)
    assert list(store.artifacts()) == []


def _assert_quarantined(store, tmp_path, artifact_id, before_files):
    assert not (tmp_path / artifact_id).exists()
    broken = list((tmp_path / ".broken").iterdir())
    assert len(broken) == 1 and broken[0].name.startswith(f"{artifact_id}-")
    assert _files(broken[0]) == before_files | {"REASON.txt"}  # moved whole, not deleted, with why
    assert store.get(artifact_id) is None


def test_truncated_weights_are_moved_aside(tmp_path):
    store = Store(tmp_path)
    _write(store, SPEC_A)
    _, other_weights, _ = _write(store, SPEC_B, seed=1)
    other_before = {n: (tmp_path / SPEC_B.id / n).read_bytes() for n in _files(tmp_path / SPEC_B.id)}
    target = tmp_path / SPEC_A.id / "weights" / "final.pt"
    target.write_bytes(target.read_bytes()[:100])
    before = _files(tmp_path / SPEC_A.id)

    with pytest.warns(UserWarning, match="truncated"):
        assert store.get(SPEC_A.id) is None
    _assert_quarantined(store, tmp_path, SPEC_A.id, before)

    # the other artifact is untouched and still readable
    other = store.get(SPEC_B.id)
    assert other is not None and other.metrics["test_acc"] == 0.6
    assert {n: (tmp_path / SPEC_B.id / n).read_bytes() for n in _files(tmp_path / SPEC_B.id)} == other_before
    assert torch.equal(other.weights()["w"], other_weights["w"])
    assert [a.id for a in store.artifacts()] == [SPEC_B.id]


def test_corrupt_metrics_are_moved_aside(tmp_path):
    store = Store(tmp_path)
    _write(store, SPEC_A)
    _write(store, SPEC_B, seed=1)
    metrics = tmp_path / SPEC_A.id / "metrics.json"
    size = metrics.stat().st_size
    metrics.write_bytes(b"{" + b"x" * (size - 1))  # same size, not JSON
    before = _files(tmp_path / SPEC_A.id)

    with pytest.warns(UserWarning):
        assert store.get(SPEC_A.id) is None
    _assert_quarantined(store, tmp_path, SPEC_A.id, before)
    assert store.get(SPEC_B.id) is not None


@pytest.mark.parametrize("damage", ["missing_file", "missing_spec", "wrong_id"])
def test_other_damage_is_moved_aside(tmp_path, damage):
    store = Store(tmp_path)
    _write(store, SPEC_A)
    folder = tmp_path / SPEC_A.id
    if damage == "missing_file":
        (folder / "mask.pt").unlink()
    elif damage == "missing_spec":
        (folder / "spec.yaml").unlink()
    else:
        text = (folder / "spec.yaml").read_text().replace(SPEC_A.id, SPEC_B.id)
        (folder / "spec.yaml").write_text(text)
    with pytest.warns(UserWarning):
        assert store.get(SPEC_A.id) is None
    assert not folder.exists() and len(list((tmp_path / ".broken").iterdir())) == 1


def test_a_recomputed_artifact_can_break_again(tmp_path, monkeypatch):
    """Broken, recomputed, broken again within the same second (a small stage
    recomputes in well under a second): the second one is moved aside as
    well, next to the first, and get() still answers None."""
    # both breakages happen "in the same second", whatever the machine's speed
    monkeypatch.setattr(store_module.time, "strftime", lambda fmt, *args: "20260101-000000")
    store = Store(tmp_path)
    for round_ in range(2):
        _write(store, SPEC_A)
        target = tmp_path / SPEC_A.id / "weights" / "final.pt"
        target.write_bytes(target.read_bytes()[:10])
        with pytest.warns(UserWarning):
            assert store.get(SPEC_A.id) is None
        assert not (tmp_path / SPEC_A.id).exists()
        assert len(list((tmp_path / ".broken").iterdir())) == round_ + 1


def test_same_size_corruption_is_found_by_its_checksum_and_moved_aside(tmp_path):
    store = Store(tmp_path)
    _write(store, SPEC_A)
    target = tmp_path / SPEC_A.id / "weights" / "final.pt"
    data = bytearray(target.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = bytes(b ^ 0xFF for b in data[len(data) // 2: len(data) // 2 + 16])
    target.write_bytes(bytes(data))  # the size still matches the manifest
    assert store.condition(SPEC_A.id)[0] == "damaged"
    with pytest.warns(UserWarning, match="final.pt does not match the checksum"):
        assert store.get(SPEC_A.id) is None
    broken = next((tmp_path / ".broken").iterdir())
    assert "final.pt" in (broken / "REASON.txt").read_text()


def test_a_file_damaged_after_get_is_refused_on_load(tmp_path):
    store = Store(tmp_path)
    _write(store, SPEC_A)
    artifact = store.get(SPEC_A.id)
    target = tmp_path / SPEC_A.id / "weights" / "final.pt"
    target.write_bytes(b"\0" * target.stat().st_size)
    with pytest.raises(StoreError, match="final.pt: does not match the checksum"):
        artifact.weights("final")


def test_checks_are_remembered_until_a_file_changes(tmp_path, monkeypatch):
    store = Store(tmp_path)
    _write(store, SPEC_A)
    calls = []
    real = store_module.checksums.crc32_file
    monkeypatch.setattr(store_module.checksums, "crc32_file", lambda path: calls.append(path) or real(path))
    assert store.condition(SPEC_A.id) == ("finished", "")  # checked when finished: nothing read again
    assert calls == []
    target = tmp_path / SPEC_A.id / "mask.pt"
    target.write_bytes(target.read_bytes())  # same bytes, new modification time
    assert store.condition(SPEC_A.id) == ("finished", "")
    assert calls == [target]
    assert store.scan(SPEC_A.id) is None and len(calls) == 1 + 5  # a scan reads every file


def test_artifacts_written_before_checksums_are_checked_by_size(tmp_path):
    store = Store(tmp_path)
    _write(store, SPEC_A)
    folder = tmp_path / SPEC_A.id
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({k: v["size"] for k, v in manifest.items()}))
    assert store.condition(SPEC_A.id) == ("finished", "") and store.scan(SPEC_A.id) is None
    assert torch.equal(store.get(SPEC_A.id).weights("final")["w"], torch.load(folder / "weights/final.pt")["w"])


def test_partial_folders_are_never_artifacts(tmp_path):
    store = Store(tmp_path)
    partial = store.partial(SPEC_A.id)
    partial.save("weights/init.pt", {"w": torch.ones(3)})
    partial.save("resume.pt", {"trainer": {}, "wall_s": 0.0})
    assert partial.has("resume.pt") and partial.load("resume.pt")["wall_s"] == 0.0
    owner = store.partial_state(SPEC_A.id)
    assert owner is not None and isinstance(owner["pid"], int)

    assert store.get(SPEC_A.id) is None and not store.has(SPEC_A.id)
    assert list(store.artifacts()) == []
    assert not (tmp_path / SPEC_A.id).exists()

    _write(store, SPEC_B)
    assert [a.id for a in store.artifacts()] == [SPEC_B.id]
    assert store.get(SPEC_A.id) is None
    assert store.partial_state(SPEC_B.id) is None  # finished: no owner left


def test_artifacts_lists_finished_ones_only(tmp_path):
    store = Store(tmp_path)
    _write(store, SPEC_A)
    _write(store, SPEC_B, seed=1)
    store.partial(TrainStageSpec().id).save("weights/init.pt", {"w": torch.ones(2)})
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "demo.yaml").write_text("name: demo\n")
    (tmp_path / "notes").mkdir()            # no "_": not an artifact folder
    (tmp_path / "train_half").mkdir()       # looks like one but is empty: skipped with a warning
    (tmp_path / ".broken" / "train_old-1").mkdir(parents=True)

    with pytest.warns(UserWarning, match="train_half"):
        listed = list(store.artifacts())
    assert sorted(a.id for a in listed) == sorted([SPEC_A.id, SPEC_B.id])
    assert {a.id: a.kind for a in listed} == {SPEC_A.id: "train", SPEC_B.id: "imp"}


def test_finishing_twice_keeps_the_first(tmp_path):
    store = Store(tmp_path)
    first, _, _ = _write(store, SPEC_A, seed=0)
    second, _, _ = _write(store, SPEC_A, seed=1)
    assert second.path == first.path
    assert second.metrics["test_acc"] == 0.5
    assert store.get(SPEC_A.id).metrics["test_acc"] == 0.5
    assert not (tmp_path / ".partial" / SPEC_A.id).exists()
