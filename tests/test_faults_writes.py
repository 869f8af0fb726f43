"""Single files the store writes (sweep records, errors, owner files, the
drivers' heartbeats, partial state, tensors) are replaced whole or not at
all: a write that fails midway (in the write, in fsync, in torch.save)
leaves the old content and no temporary file behind."""

import errno
import io
import json

import pytest
import torch

from raylth.specs import TrialSpec
from raylth.store import Store
from raylth.store import records
from raylth.store import files as store_module  # where every single-file write is made


def _record(store, version):
    records.write_record(store, "s", None, [(f"levels={version}", TrialSpec(levels=version))])
    return store.root / "sweeps" / "s.yaml"


def _errors(store, version):
    records.write_errors(store, "s", {"job": f"error {version}"})
    return store.root / "sweeps" / "s.errors.json"


def _owner(store, version):
    partial = store.partial("train_0")
    partial.touch()
    return partial.path / "owner.json"


def _tensor(store, version):
    store.partial("train_0").save("resume.pt", {"w": torch.full((64, 64), float(version))})
    return store.root / ".partial" / "train_0" / "resume.pt"


# (the drivers' heartbeats go through Store.write_file, as the sweep record and errors do)
WRITERS = {"sweep record": _record, "errors": _errors, "owner file": _owner, "partial tensor": _tensor}


def _fail_fsync(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(store_module.os, "fsync", fsync)


def _fail_write(monkeypatch):
    real_open = open

    class HalfWriter(io.FileIO):
        def write(self, data):
            super().write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    def failing_open(path, mode="r", *args, **kwargs):
        return HalfWriter(path, "wb") if "w" in mode else real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr(store_module, "open", failing_open, raising=False)


def _fail_torch_save(monkeypatch):
    real = torch.save

    def save(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)
        raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")  # torch's full-disk error
    monkeypatch.setattr(torch, "save", save)


CASES = [(writer, inject) for writer in WRITERS for inject in (_fail_fsync, _fail_write)]
CASES.append(("partial tensor", _fail_torch_save))


@pytest.mark.parametrize("writer, inject", CASES, ids=[f"{w}-{i.__name__[6:]}" for w, i in CASES])
def test_a_write_that_fails_midway_leaves_the_old_content(tmp_path, monkeypatch, writer, inject):
    store = Store(tmp_path)
    path = WRITERS[writer](store, 1)
    before = path.read_bytes()
    with monkeypatch.context() as patch:
        inject(patch)
        with pytest.raises((OSError, RuntimeError)):
            WRITERS[writer](store, 2)
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_written_files_hold_the_new_content_when_nothing_fails(tmp_path):
    store = Store(tmp_path)
    for writer in WRITERS.values():
        writer(store, 1)
        path = writer(store, 2)
        assert path.stat().st_size > 0
    assert "levels=2" in (tmp_path / "sweeps" / "s.yaml").read_text()
    assert json.loads((tmp_path / "sweeps" / "s.errors.json").read_text()) == {"job": "error 2"}
    assert torch.load(tmp_path / ".partial" / "train_0" / "resume.pt")["w"][0, 0] == 2.0
