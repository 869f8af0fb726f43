"""A storage root on a bucket: s3:// through pyarrow, against a local S3
server (moto), with one cache folder per simulated node (RAYLTH_CACHE).

What a bucket lacks (folder rename, file locks) is replaced by a commit
order: files first, manifest last. These tests check that order, lazy
fetching, resumption on another node from mirrored partial files, the
sweep records, and a whole sweep run, rerun and read back through s3://.
"""

import json
import logging
import os
import uuid
import warnings
from pathlib import Path

import moto.server as moto_server
import pytest
import torch
import yaml

import raylth
from raylth.errors import StoreError
from raylth.specs import DataSpec, ModelSpec, Step, TrainSpec, TrainStageSpec
from raylth.stages import StageContext, run_stage
from raylth.store import Partial, Store
from raylth.store.bucket import Bucket
from raylth.store.remote import Remote


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
CPU = torch.device("cpu")
SPEC = TrainStageSpec(data=DataSpec("digits"), model=ModelSpec("lenet"),
                      train=TrainSpec(lr=0.05, batch_size=64, duration=Step(3, "ep")))


@pytest.fixture(scope="module")
def s3():
    """A local S3 endpoint with one bucket; yields a function giving a fresh root URI."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    from pyarrow import fs as pafs

    pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                      allow_bucket_creation=True).create_dir("raylth")
    # moto's buckets live as long as the process (a server started again finds them): fresh roots
    yield lambda: f"s3://raylth/run{uuid.uuid4().hex[:12]}?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def node(tmp_path, monkeypatch):
    """Switch to the local cache of simulated node NAME."""
    def switch(name: str):
        monkeypatch.setenv("RAYLTH_CACHE", str(tmp_path / f"cache-{name}"))
    switch("a")
    return switch


def ctx(uri):
    return StageContext(store=Store(uri), data_root="data", device=CPU)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_artifact_is_committed_then_fetched_lazily_on_another_node(s3, node):
    uri = s3()
    done = run_stage(SPEC, ctx(uri))
    remote = Remote(uri)
    assert remote.size(f"{SPEC.id}/manifest.json") and not remote.exists(f".partial/{SPEC.id}")
    assert sorted(remote.files(SPEC.id)) == sorted([*done.manifest, "manifest.json"])

    node("b")
    store = Store(uri)
    assert store.root != done.path.parent and store.has(SPEC.id)
    got = store.get(SPEC.id)
    assert got.metrics == done.metrics
    assert not (got.path / "weights" / "final.pt").exists()  # metadata only, until asked
    assert same(got.weights("final"), done.weights("final"))
    assert (got.path / "weights" / "final.pt").stat().st_size == got.manifest["weights/final.pt"]["size"]
    assert [a.id for a in store.artifacts()] == [SPEC.id]
    assert run_stage(SPEC, ctx(uri)).metrics == done.metrics  # reused, not recomputed


def test_an_upload_without_its_manifest_is_not_an_artifact(s3, node, tmp_path):
    uri = s3()
    done = run_stage(SPEC, ctx(uri))
    node("b")
    remote, store = Remote(uri), Store(uri)
    copy = SPEC.id.replace("train_", "train_copy")  # a second artifact folder, cut before its manifest
    for name in done.manifest:
        remote.upload(done.path / name, f"{copy}/{name}")
    assert not store.has(copy) and store.get(copy) is None
    assert [a.id for a in store.artifacts()] == [SPEC.id]


def test_a_run_killed_on_one_node_resumes_on_another_from_the_mirrored_state(s3, node, tmp_path, monkeypatch):
    uri = s3()
    reference = run_stage(SPEC, StageContext(store=Store(tmp_path / "local"), data_root="data", device=CPU))
    original, saves = Partial.save, []

    def save_then_die(self, name, obj):
        original(self, name, obj)
        if name == "resume.pt":
            saves.append(obj["trainer"]["step"])
            raise KeyboardInterrupt  # the node goes away after its first epoch

    with monkeypatch.context() as patch:
        patch.setattr(Partial, "save", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            run_stage(SPEC, ctx(uri))
    assert saves == [20] and Remote(uri).size(f".partial/{SPEC.id}/resume.pt")

    node("b")  # a fresh node: nothing local, the resume state comes from the bucket
    steps = []
    from raylth.stages.context import Trainer
    step = Trainer._train_step
    monkeypatch.setattr(Trainer, "_train_step", lambda self, batch: (steps.append(self.step), step(self, batch))[1])
    resumed = run_stage(SPEC, ctx(uri))
    assert steps[0] == 20 and len(steps) == 40  # epochs 2 and 3 only
    assert same(resumed.weights("final"), reference.weights("final"))
    assert resumed.metrics["history"] == reference.metrics["history"]
    assert not Remote(uri).exists(f".partial/{SPEC.id}")


def test_finished_here_but_never_uploaded_is_committed_on_next_read(s3, node, monkeypatch):
    uri = s3()
    with monkeypatch.context() as patch:
        def fail(self, artifact):
            raise ConnectionError("the network went away mid-upload")
        patch.setattr(Bucket, "commit", fail)
        with pytest.raises(ConnectionError):
            run_stage(SPEC, ctx(uri))
    store = Store(uri)
    assert (store.root / SPEC.id / "manifest.json").is_file() and not store.has(SPEC.id)
    # not finished until it is in the bucket: the plan schedules its job, whose get commits it
    assert store.condition(SPEC.id) == ("missing", "") and store.scan(SPEC.id) is None
    assert store.artifact_ids() == [] and raylth.verify(uri) == []  # an upload in progress is not damage
    assert Store(uri, read_only=True).get(SPEC.id) is None and not store.has(SPEC.id)  # a dry run uploads nothing
    got = store.get(SPEC.id)
    assert got is not None and store.has(SPEC.id)
    node("b")
    assert Store(uri).get(SPEC.id).metrics == got.metrics


def test_unreadable_remote_artifacts_are_moved_aside_and_truncated_files_refused(s3, node):
    uri = s3()
    done = run_stage(SPEC, ctx(uri))
    remote = Remote(uri)
    remote.write(f"{SPEC.id}/weights/final.pt", b"cut")
    node("b")
    with pytest.raises(StoreError, match="truncated"):
        Store(uri).get(SPEC.id).weights("final")
    remote.write(f"{SPEC.id}/spec.yaml", b"{not: [yaml")
    node("c")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Store(uri).get(SPEC.id) is None
    assert "moved it to s3://raylth/" in str(caught[0].message)
    assert not remote.exists(SPEC.id) and [n for n, _ in remote.listdir(".broken")][0].startswith(SPEC.id)
    assert done.id == SPEC.id


def test_same_size_damage_on_a_bucket_is_refused_on_download_and_found_by_verify(s3, node):
    uri = s3()
    run_stage(SPEC, ctx(uri))
    remote = Remote(uri)
    data = bytearray(remote.read(f"{SPEC.id}/weights/final.pt"))
    data[len(data) // 2] ^= 0xFF
    remote.write(f"{SPEC.id}/weights/final.pt", bytes(data))
    node("b")
    store = Store(uri)
    assert store.condition(SPEC.id) == ("finished", "")  # a bucket's sizes are listed, its bytes not read
    with pytest.raises(StoreError, match="final.pt: does not match the checksum"):
        store.get(SPEC.id).weights("final")
    assert "weights/final.pt does not match the checksum" in store.scan(SPEC.id)
    assert [f.problem is not None for f in raylth.verify(uri)] == [True]
    findings = raylth.verify(uri, repair=True)
    assert [(f.id, f.moved_to.startswith("s3://raylth/")) for f in findings] == [(SPEC.id, True)]
    broken = remote.listdir(".broken")[0][0]
    assert not remote.exists(SPEC.id) and "final.pt" in remote.read(f".broken/{broken}/REASON.txt").decode()
    # a manifest naming a file the bucket lacks (or holds cut): damaged from the listing alone
    remote.write(f"{SPEC.id}/manifest.json", json.dumps({"mask.pt": {"size": 10, "crc32": "0"}}).encode())
    assert store.condition(SPEC.id)[0] == "damaged"


def test_a_bucket_that_refuses_writes_is_one_line_before_anything_runs(s3, tmp_path, capsys):
    from raylth.cli.main import main

    refused = s3().replace("s3://raylth/", "s3://no-such-bucket/")
    quickstart = Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.yaml"
    assert main(["run", str(quickstart), "--storage", refused]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raylth: error: storage s3://no-such-bucket/") and \
        "refuses writes" in err[0], err


def test_a_damaged_copy_in_the_cache_is_fetched_again_and_an_unreachable_bucket_is_not_damage(s3, node,
                                                                                                 monkeypatch):
    uri = s3()
    done = run_stage(SPEC, ctx(uri))
    cached = done.path / "weights" / "final.pt"
    assert cached.is_file()
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))  # same size: Artifact.file keeps it
    assert same(Store(uri).get(SPEC.id).weights("final"), done.weights("final"))  # the bucket's copy is whole
    def unreachable(self, rel):
        raise StoreError(f"{self.url(rel)}: cannot list (connection refused)")
    monkeypatch.setattr(Remote, "file_sizes", unreachable)
    with pytest.raises(StoreError, match="cannot list"):
        Store(uri).condition(SPEC.id)  # said, not taken for damage (nothing is moved aside)
    monkeypatch.undo()
    assert Remote(uri).exists(SPEC.id)


def test_bad_storage_uris_fail_with_one_line(tmp_path):
    with pytest.raises(StoreError, match="nosuch://x: not a storage URI pyarrow can open"):
        Store("nosuch://x")
    with pytest.raises(raylth.errors.RaylthError, match="no such storage root"):
        raylth.results("file://" + str(tmp_path / "nothing"))


@pytest.mark.slow  # Ray: its own per run, whose workers see the run's cache and credentials
def test_a_sweep_runs_reruns_and_reads_back_through_s3(s3, tmp_path, cli, ray_cluster):
    uri = s3()
    sweep = {"name": "bucket", "resources": {"cpu": 1, "gpu": 0},
             "base": {"levels": 1, "data": {"name": "digits"}, "model": {"name": "lenet"},
                      "train": {"duration": "2ep", "batch_size": 64, "lr": 0.05}},
             "grid": {"seed": [0, 1]}}
    path = tmp_path / "bucket.yaml"
    path.write_text(yaml.safe_dump(sweep))
    here = {"RAYLTH_CACHE": str(tmp_path / "cache-driver")}
    first = cli("run", path, "--storage", uri, env={**CREDENTIALS, **here})
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "bucket: 2 jobs finished (0 already stored, 2 run now), 0 failed" in first.stdout, first.stdout
    assert "results in s3://raylth/run" in first.stdout and "endpoint_override" not in first.stdout

    local = cli("run", path, "--storage", tmp_path / "local", "--address", ray_cluster)
    assert local.returncode == 0, local.stderr[-3000:]

    again = cli("run", path, "--storage", uri, "--dry-run",  # another node's cache: the bucket's artifacts
                env={**CREDENTIALS, "RAYLTH_CACHE": str(tmp_path / "cache-other")})
    assert again.returncode == 0 and "2 jobs (2 stored, 0 to run)" in again.stdout, again.stdout + again.stderr

    os.environ.update(CREDENTIALS)
    os.environ["RAYLTH_CACHE"] = str(tmp_path / "cache-reader")  # a laptop reading the results back
    try:
        from_bucket = raylth.results(uri).sort_values("id").reset_index(drop=True)
        from_disk = raylth.results(tmp_path / "local").sort_values("id").reset_index(drop=True)
        assert list(from_bucket.id) == list(from_disk.id) and len(from_bucket) == 4  # 2 seeds x levels 0, 1
        assert list(from_bucket.test_acc) == list(from_disk.test_acc)  # same seeds, same numbers
        states = raylth.status(uri)["bucket"]
        assert [s.state for s in states] == ["finished"] * 2
        written = raylth.report(uri, out=tmp_path / "report")
        assert written["table"].is_file()
        remote = Remote(uri)
        assert yaml.safe_load(remote.read("sweeps/bucket.yaml"))["name"] == "bucket"
        assert json.loads(remote.read("sweeps/bucket.errors.json")) == {}
    finally:
        os.environ.pop("RAYLTH_CACHE")


@pytest.mark.slow
def test_a_search_on_a_bucket_needs_a_study_storage_and_runs_with_one(s3, tmp_path, cli):
    search = {"kind": "search", "name": "nostudy", "resources": {"cpu": 1, "gpu": 0}, "study": {"n_trials": 1},
              "base": {"distill": {"data": {"name": "digits"}, "method": "dm", "ipc": 1, "iterations": 2,
                                   "model": {"name": "lenet"}},
                       "eval": {"model": {"name": "lenet"}, "epochs": 2, "seeds": [0]}},
              "space": {"distill.lr_img": {"type": "float", "low": 0.1, "high": 1}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(search))
    uri, cache = s3(), {"RAYLTH_CACHE": str(tmp_path / "cache")}
    out = cli("run", path, "--storage", uri, env={**CREDENTIALS, **cache})
    assert out.returncode != 0
    assert "study.storage: results go to s3://raylth/" in out.stderr and "journal:///" in out.stderr, out.stderr
    assert not Remote(uri).exists()  # nothing written

    search["study"]["storage"] = f"journal:///{tmp_path}/study.log"
    path.write_text(yaml.safe_dump(search))
    out = cli("run", path, "--storage", uri, env={**CREDENTIALS, **cache})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    best = yaml.safe_load(Remote(uri).read("searches/nostudy-best.yaml"))
    assert best["storage"] == uri and best["base"]["method"] == "distill"  # runs against the same bucket
    assert Store(uri).has(best_distill_id(best)), "the trial's distilled set is in the bucket"


def best_distill_id(best: dict) -> str:
    from raylth.specs import DistillSpec

    distill = dict(best["base"]["distill"], data=best["base"]["data"])
    return DistillSpec.from_dict(distill).id
