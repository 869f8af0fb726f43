"""A bucket that falters: a fault-injecting proxy in front of the local S3
server (test_store_uri's) answers chosen requests with 503 SlowDown, 500
InternalError or a connection closed without a reply.

Intermittent faults are retried by the AWS SDK (RAYLTH_S3_MAX_ATTEMPTS) and
every artifact reads back intact; a bucket that keeps failing ends the
operation with one line (StoreUnreachable), leaves no artifact half
committed, loses nothing stored before, and the rerun finishes. One sweep
runs through Ray behind the proxy, its workers retrying as the driver does.
"""

import http.client
import json
import pickle
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import torch
import yaml

from raylth.cli.main import main
from raylth.errors import StoreError, StoreUnreachable
from raylth.specs import DataSpec, ModelSpec, Step, TrainSpec, TrainStageSpec
from raylth.store import Store
from raylth.store.bucket import Bucket
from raylth.store.filesystems import MAX_ATTEMPTS_VARIABLE, RetryingS3FileSystem
from raylth.store.remote import Remote
from raylth.sweep.config import load_sweep
from raylth.sweep.jobs import sweep_jobs
from raylth.sweep.runner import run_specs_here
from test_store_uri import CREDENTIALS, node, s3, same  # noqa: F401 (fixtures)

SPECS = [TrainStageSpec(data=DataSpec("digits"), model=ModelSpec("lenet"),
                        train=TrainSpec(lr=lr, batch_size=64, duration=Step(1, "ep"))) for lr in (0.05, 0.1)]
KINDS = ("slow_down", "internal_error", "reset")
ERRORS = {"slow_down": (503, "SlowDown", "Please reduce your request rate."),
          "internal_error": (500, "InternalError", "We encountered an internal error. Please try again.")}


class FaultyProxy:
    """A reverse proxy to the S3 server at ``upstream`` (host:port). ``plan(number, method, path)``
    picks, for each request in order of arrival, a fault of KINDS to answer with instead of
    forwarding it, or None; ``injected`` counts the faults by kind."""

    def __init__(self, upstream: str):
        self.upstream, self.plan = upstream, healthy
        self.requests, self.injected = 0, Counter()
        self._lock = threading.Lock()
        handler = type("Handler", (_Relay,), {"proxy": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def choose(self, method: str, path: str) -> str | None:
        with self._lock:
            number, self.requests = self.requests, self.requests + 1
            kind = self.plan(number, method, path)
            self.injected.update([kind] if kind else [])
            return kind

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Relay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK expects
    proxy: FaultyProxy

    def log_message(self, *args) -> None:
        pass

    def relay(self) -> None:
        body = self._body()  # read whole first: a fault never cuts a request short
        kind = self.proxy.choose(self.command, self.path)
        if kind == "reset":  # closed without a reply (SO_LINGER 0: a reset)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        elif kind is not None:
            self._error(*ERRORS[kind])
        else:
            self._forward(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = relay

    def _body(self) -> bytes:
        if "Content-Length" in self.headers:
            return self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return b""
        raw = b""  # kept chunked, trailer included (the SDK's streaming checksum): forwarded as is
        while True:
            line = self.rfile.readline()
            raw += line
            if int(line.split(b";")[0], 16) == 0:
                break
            raw += self.rfile.read(int(line.split(b";")[0], 16) + 2)
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            raw += line
        return raw + b"\r\n"

    def _forward(self, body: bytes) -> None:
        upstream = http.client.HTTPConnection(self.proxy.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
        try:
            upstream.request(self.command, self.path, body, headers)
            reply = upstream.getresponse()
            payload = reply.read()
        finally:
            upstream.close()
        self.send_response_only(reply.status, reply.reason)
        for name, value in reply.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        head = self.command == "HEAD"
        self.send_header("Content-Length", reply.getheader("Content-Length", "0") if head else str(len(payload)))
        self.end_headers()
        if not head:
            self.wfile.write(payload)

    def _error(self, status: int, code: str, message: str) -> None:
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
               "<RequestId>faulty-proxy</RequestId></Error>").encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(xml)


def healthy(number, method, path):
    return None


def every(nth: int, limit: int, skip: str | None = None):
    """A fault at every ``nth`` request, kinds in turn, ``limit`` in all, none twice at one
    request (method and path): so each succeeds within two attempts. ``skip``: paths holding it
    are never faulted."""
    faulted = []

    def plan(number, method, path):
        if number % nth != nth - 1 or len(faulted) >= limit or (method, path) in faulted:
            return None
        if skip is not None and skip in path:
            return None
        faulted.append((method, path))
        return KINDS[(len(faulted) - 1) % len(KINDS)]
    return plan


def down_from_writing(fragment: str):
    """503 SlowDown for every request from the first that writes a path holding ``fragment`` on."""
    down = []

    def plan(number, method, path):
        if method in ("PUT", "POST") and fragment in path:
            down.append(number)
        return "slow_down" if down else None
    return plan


def slow_down_first(count: int):
    """503 SlowDown for the next ``count`` requests."""
    left = [count]

    def plan(number, method, path):
        left[0] -= 1
        return "slow_down" if left[0] >= 0 else None
    return plan


@pytest.fixture
def faulty(s3, monkeypatch):  # noqa: F811
    """(a fresh root URI reached through a FaultyProxy, the proxy); 3 attempts per request."""
    monkeypatch.setenv(MAX_ATTEMPTS_VARIABLE, "3")
    direct = s3()
    upstream = parse_qs(urlsplit(direct).query)["endpoint_override"][0]
    proxy = FaultyProxy(upstream)
    yield direct.replace(upstream, proxy.address), proxy
    proxy.close()


def weights(seed: int) -> dict:
    return {"w": torch.randn(25_000, generator=torch.Generator().manual_seed(seed))}


def store_artifact(store: Store, spec, tensors: dict):
    """As a stage stores its artifact: the stored one if there, else saved, mirrored and finished."""
    found = store.get(spec.id)
    if found is not None:
        return found
    with store.lock(spec.id):
        partial = store.partial(spec.id)
        partial.save("weights/final.pt", tensors)
        return store.finish(spec, partial, {"test_acc": 0.5})


def verified(uri: str, capsys, intact: int) -> None:
    assert main(["verify", uri]) == 0
    assert f"{intact} artifacts checked, {intact} intact, 0 damaged" in capsys.readouterr().out


def test_intermittent_faults_are_retried_and_every_artifact_reads_back_intact(faulty, node, capsys):  # noqa: F811
    uri, proxy = faulty
    proxy.plan = every(3, limit=3)
    stored = [store_artifact(Store(uri), spec, weights(seed)) for seed, spec in enumerate(SPECS)]
    assert proxy.injected == dict.fromkeys(KINDS, 1)

    node("b")  # another node: every file comes through the proxy, checked against its checksum
    proxy.plan = every(3, limit=3)
    for seed, spec in enumerate(SPECS):
        got = Store(uri).get(spec.id)
        assert got.metrics == stored[seed].metrics and same(got.weights("final"), weights(seed))
    verified(uri, capsys, intact=len(SPECS))
    assert proxy.injected == dict.fromkeys(KINDS, 2)


def test_a_bucket_that_keeps_failing_ends_in_one_line_and_loses_nothing(faulty, node, monkeypatch,  # noqa: F811
                                                                        capsys):
    uri, proxy = faulty
    monkeypatch.setenv(MAX_ATTEMPTS_VARIABLE, "2")
    first, second = SPECS
    store_artifact(Store(uri), first, weights(0))
    before = Remote(uri).file_sizes(first.id)
    display = Remote(uri).display

    # down from the worst moment: the second's files are up, its manifest is being uploaded
    proxy.plan = down_from_writing(f"{second.id}/manifest.json")
    with pytest.raises(StoreUnreachable) as failed:
        store_artifact(Store(uri), second, weights(1))
    line = str(failed.value)
    assert line.startswith(f"storage {display}: the bucket keeps failing to upload {second.id}/manifest.json (")
    assert "AWS Error SLOW_DOWN" in line and "; 2 attempts)" in line and "\n" not in line, line
    assert line.endswith("nothing stored was lost: rerun the same command to resume")
    assert main(["verify", uri]) == 1  # the command line says it in one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"raylth: error: storage {display}: the bucket keeps failing"), err
    assert proxy.injected["slow_down"] >= 4  # two operations, two attempts each

    proxy.plan = healthy
    remote = Remote(uri)
    assert remote.size(f"{second.id}/weights/final.pt") and not remote.exists(f"{second.id}/manifest.json")
    assert remote.file_sizes(first.id) == before and not remote.exists(".broken")
    verified(uri, capsys, intact=1)  # the second, without its manifest, is no artifact
    node("b")
    assert same(Store(uri).get(first.id).weights("final"), weights(0))

    node("a")  # the rerun: finished in this node's cache, so committed, not recomputed
    store_artifact(Store(uri), second, weights(1))
    node("c")
    assert same(Store(uri).get(second.id).weights("final"), weights(1))
    verified(uri, capsys, intact=2)


def test_the_bucket_filesystem_keeps_the_uri_options_and_its_retry_setting_when_pickled(faulty, monkeypatch):
    uri, proxy = faulty
    monkeypatch.setenv(MAX_ATTEMPTS_VARIABLE, "1")
    tune = Bucket(uri).tune_storage()["storage_filesystem"]
    copy = pickle.loads(pickle.dumps(tune))  # as Ray sends Tune's storage filesystem to its workers
    assert isinstance(copy, RetryingS3FileSystem) and copy.attempts == 1
    options = copy.__reduce__()[1][1]
    assert (options["endpoint_override"], options["scheme"], options["region"]) == (proxy.address, "http", "us-east-1")
    proxy.plan = slow_down_first(1)
    with pytest.raises(OSError, match="HTTP status 503"):  # one attempt, as set: pyarrow's default 3 would retry
        copy.get_file_info("raylth")
    assert copy.get_file_info("raylth").type.name == "Directory" and proxy.injected == {"slow_down": 1}

    monkeypatch.setenv(MAX_ATTEMPTS_VARIABLE, "ten")
    with pytest.raises(StoreError, match=f"{MAX_ATTEMPTS_VARIABLE}='ten': give a whole number"):
        Store(uri)


def test_a_sweep_whose_jobs_failed_on_the_bucket_ends_with_the_bucket_s_line():
    from raylth.sweep.paths import root_cause_line
    from raylth.sweep.runner import bucket_failure

    line = ("storage s3://b/x: the bucket keeps failing to upload a/manifest.json (AWS Error SLOW_DOWN; 2 attempts); "
            "nothing stored was lost: rerun the same command to resume")
    try:
        try:
            raise StoreUnreachable(line)
        except StoreUnreachable as err:
            raise RuntimeError("the trial raised an exception") from err  # as Ray wraps a trial's error
    except RuntimeError as wrapped:
        failed = {"one": "ValueError: lr must be positive", "two": root_cause_line(wrapped)}
    assert bucket_failure(failed) == line
    assert bucket_failure({"one": "StoreError: s3://b/x/a: does not match the checksum"}) is None


def test_a_full_disk_under_a_file_uri_stays_a_full_disk(tmp_path, monkeypatch):
    """A file:// store's own disk filling up is said as a full disk is (the run's one line, exit 1),
    not taken for a storage that cannot be reached."""
    import errno

    remote = Remote(f"file://{tmp_path}/store")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(remote, "_write", full)
    with pytest.raises(OSError) as caught:
        remote.write("x", b"1")
    assert caught.value.errno == errno.ENOSPC


@pytest.mark.slow  # Ray: its own, whose workers see this run's credentials, cache and attempts
def test_a_sweep_behind_a_faltering_bucket_finishes_equal_to_one_that_lost_nothing(faulty, tmp_path, cli, capsys):
    """`raylth run` on a bucket whose requests fail now and then (raylth's own objects; Tune's
    run state under .ray/ is left alone): the sweep finishes, every checksum is intact, and the
    numbers equal the same sweep run on a folder."""
    uri, proxy = faulty
    proxy.plan = every(3, limit=6, skip="/.ray/")  # a run makes well over 18 such requests
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "faltering", "resources": {"cpu": 1, "gpu": 0},
        "base": {"levels": 1, "data": {"name": "digits"}, "model": {"name": "lenet"},
                 "train": {"duration": "1ep", "batch_size": 64, "lr": 0.05}}}))
    env = {**CREDENTIALS, "RAYLTH_CACHE": str(tmp_path / "cache")}
    run = cli("run", sweep, "--storage", uri, env=env)
    assert run.returncode == 0 and "faltering: 1 jobs finished" in run.stdout, run.stdout[-2000:] + run.stderr[-3000:]
    assert proxy.injected == dict.fromkeys(KINDS, 2), proxy.injected  # faults met by the driver and its workers
    proxy.plan = healthy
    verified(uri, capsys, intact=2)  # levels 0 and 1

    for job in sweep_jobs(load_sweep(sweep).trials):  # the same jobs here, on a folder, without faults
        run_specs_here(list(job.specs), tmp_path / "local", tmp_path / "data")
    compared = 0
    for path in (tmp_path / "local").glob("*_*/metrics.json"):
        expected = json.loads(path.read_text())
        got = json.loads(Remote(uri).read(f"{path.parent.name}/metrics.json"))
        assert got["test_acc"] == expected["test_acc"] and got["history"] == expected["history"]
        compared += 1
    assert compared == 2
