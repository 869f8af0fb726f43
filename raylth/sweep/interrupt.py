"""Ctrl-C (SIGINT) or SIGTERM during a run: stop Ray's work at once and say
how far the run got in one line. Ray Tune's own SIGINT handler is turned
off: it waits to save its experiment state and advises ``Tuner.restore``,
whereas raylth resumes from its store (run the same command again)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import threading

from raylth.errors import Interrupted, RaylthError, StorageFault


def _sigterm(signum, frame):
    raise KeyboardInterrupt


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)
LOW_SPACE_BYTES = 16 << 20


def out_of_space(err: BaseException, folder) -> OSError | None:
    """The storage fault behind ``err``: an OSError of a full, read-only or
    failing disk in its chain, or, for the errors Ray Tune raises when it
    cannot write its own state (EOFError and the like), a storage folder
    with under 16 MiB free."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return seen
        seen = seen.__cause__ or seen.__context__
    try:
        if folder is not None and shutil.disk_usage(folder).free < LOW_SPACE_BYTES:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
    except OSError:
        pass
    return None


@contextlib.contextmanager
def stopped_cleanly(progress, folder=None):
    """Inside the block, Ctrl-C or SIGTERM shuts this driver's Ray work down
    (trials and tasks die with their driver) and raises Interrupted, and a
    full disk (under the storage ``folder``) raises StorageFault;
    ``progress()`` says what is done."""
    tune_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    main = threading.current_thread() is threading.main_thread()
    previous = (signal.signal(signal.SIGTERM, _sigterm), signal.getsignal(signal.SIGINT)) if main else None
    try:
        try:
            yield
        except SystemExit as exit_:  # ray.init replaces the SIGTERM handler with one calling sys.exit(15)
            if exit_.code != signal.SIGTERM:
                raise
            raise KeyboardInterrupt from None
    except KeyboardInterrupt:
        if main:  # a second Ctrl-C must not break the shutdown
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        _shutdown_ray()
        raise Interrupted(f"interrupted: {_said(progress)}; run the same command to continue") from None
    except RaylthError:  # said already (a storage fault, a refused input)
        raise
    except Exception as err:
        fault = out_of_space(err, folder)
        if fault is None:
            raise
        _shutdown_ray()
        where = f"{fault.filename}: " if fault.filename else ""
        raise StorageFault(f"{where}{os.strerror(fault.errno)} mid-run; {_said(progress)}; free space (or fix the "
                           "storage) and run the same command to continue") from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
        if tune_handler is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_handler


def _said(progress) -> str:
    try:
        return progress()
    except Exception:  # the store itself may be what failed
        return "how many jobs finished is unknown"


def _shutdown_ray() -> None:
    import ray

    with contextlib.suppress(Exception):
        ray.shutdown()
