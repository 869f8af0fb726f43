"""Storage and output faults (part of the fault campaign): a storage path
that is a file, cannot be created or is read-only, a report folder that is a
file or read-only: one line naming the path and the cause, exit 2, nothing
written. Mid-run: Ctrl-C, SIGTERM and a full disk end a run with one line
(exit 130 and 1), Ray's work shut down."""

import errno
import io
import os
import pathlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from raylth.cli.main import main
from raylth.errors import Interrupted, StorageFault
from raylth.sweep import interrupt

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "sweeps" / "quickstart.yaml"


def _one_line(capsys, needle):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    return err[0]


def test_storage_that_is_a_file_is_one_line(tmp_path, capsys):
    file = tmp_path / "results"
    file.write_text("not a folder")
    assert main(["run", str(QUICKSTART), "--storage", str(file)]) == 2
    _one_line(capsys, f"storage {file}: is a file, not a folder")
    assert file.read_text() == "not a folder"
    for command in ("status", "results", "verify", "report"):
        assert main([command, str(file)]) == 2
        _one_line(capsys, f"{file}: is a file")


def test_storage_that_cannot_be_made_is_one_line(capsys):
    assert main(["run", str(QUICKSTART), "--storage", "/proc/raylth-results"]) == 2
    _one_line(capsys, "storage /proc/raylth-results: not writable")


@pytest.fixture
def read_only(monkeypatch):
    """Writes under a folder fail as on a read-only mount (root ignores file modes, so the fault is injected)."""
    real = pathlib.Path.write_bytes

    def write_bytes(self, data):
        if self.name.startswith(".raylth-write-test"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real(self, data)
    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)


def test_a_read_only_storage_is_one_line_and_nothing_is_written(tmp_path, capsys, read_only):
    assert main(["run", str(QUICKSTART), "--storage", str(tmp_path / "store")]) == 2
    _one_line(capsys, "not writable (Read-only file system); choose a writable folder with --storage")
    assert not any((tmp_path / "store").rglob("*"))


def test_a_report_folder_that_is_a_file_or_read_only_is_one_line(tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"
    (store / "sweeps").mkdir(parents=True)
    out = tmp_path / "report"
    out.write_text("a file")
    assert main(["report", str(store), "--out", str(out)]) == 2
    _one_line(capsys, f"report folder {out}: is a file, not a folder; give a folder with --out")
    out.unlink()

    def write_bytes(self, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    assert main(["report", str(store), "--out", str(out)]) == 2
    _one_line(capsys, f"report folder {out}: not writable (Read-only file system)")


@pytest.fixture
def no_ray(monkeypatch):
    shutdowns = []
    monkeypatch.setattr(interrupt, "_shutdown_ray", lambda: shutdowns.append(1))
    return shutdowns


def test_an_interrupt_stops_ray_and_says_how_far_the_run_got(no_ray):
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted, match="interrupted: 3 of 6 jobs finished; run the same command to continue"):
        with interrupt.stopped_cleanly(lambda: "3 of 6 jobs finished"):
            raise KeyboardInterrupt
    assert no_ray == [1] and Interrupted.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_is_an_interrupt(no_ray):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted):
        with interrupt.stopped_cleanly(lambda: "0 of 1 jobs finished"):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()  # woken by the signal
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_after_ray_replaced_the_handler_is_an_interrupt(no_ray):
    with pytest.raises(Interrupted):
        with interrupt.stopped_cleanly(lambda: "0 of 1 jobs finished"):
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # what ray.init installs
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()
    with pytest.raises(SystemExit):  # any other exit passes through
        with interrupt.stopped_cleanly(lambda: ""):
            sys.exit(3)
    assert os.environ.get("TUNE_DISABLE_SIGINT_HANDLER") is None  # as it was


def test_a_full_disk_is_a_storage_fault_and_other_errors_pass_through(tmp_path, no_ray, monkeypatch):
    with pytest.raises(StorageFault, match=r"/s/x: No space left on device mid-run; 1 of 2 jobs finished; free space"):
        with interrupt.stopped_cleanly(lambda: "1 of 2 jobs finished", tmp_path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/s/x")
    with pytest.raises(EOFError):  # Tune's error on a store with room: not a storage fault
        with interrupt.stopped_cleanly(lambda: "", tmp_path):
            raise EOFError("Ran out of input")
    monkeypatch.setattr(interrupt.shutil, "disk_usage", lambda path: type("U", (), {"free": 1024})())
    with pytest.raises(StorageFault, match="No space left on device"):  # ... and on a full one
        with interrupt.stopped_cleanly(lambda: "", tmp_path):
            raise EOFError("Ran out of input")
    assert StorageFault.exit_code == 1


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (skipped where this process may not mount one)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_is_one_line_and_the_rerun_completes(small_disk, quickstart_store, ray_cluster):
    from test_faults_interrupt import assert_same_results

    storage = small_disk / "results"
    run = [sys.executable, "-m", "raylth.cli.main", "run", str(QUICKSTART), "grid.seed=[0]", "--storage",
           str(storage), "--address", ray_cluster]
    full = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert full.returncode == 1, full.stderr[-3000:]
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith(f"raylth: error: {storage}: No space left on device mid-run;") and \
        "run the same command to continue" in last, last
    assert main(["verify", str(storage)]) == 0  # what was stored is whole
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    again = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_results(storage, quickstart_store)


def test_output_into_a_closed_pipe_and_a_bad_watch_interval(monkeypatch, capsys, tmp_path):
    import raylth.api

    def closed(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(raylth.api, "results", closed)
    (tmp_path / "sweeps").mkdir()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", io.StringIO())  # the CLI closes stderr on a broken pipe
        assert main(["results", str(tmp_path)]) == 0  # `raylth results | head`
    assert main(["status", str(tmp_path), "--watch", "-1"]) == 2
    assert "--watch: -1 seconds; give a positive interval" in capsys.readouterr().err


def test_a_lost_heartbeat_or_driver_record_is_not_an_error(tmp_path, monkeypatch):
    from raylth.errors import StoreError
    from raylth.store import Store
    from raylth.sweep import drivers

    store = Store(tmp_path)

    def unreachable(*args):
        raise StoreError("s3://b/x: cannot reach the storage")
    monkeypatch.setattr(store, "write_file", unreachable)
    monkeypatch.setattr(store, "delete_file", unreachable)
    with drivers.registered(store, "s"):
        pass
