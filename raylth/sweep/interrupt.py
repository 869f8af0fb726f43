"""Ctrl-C (SIGINT) or SIGTERM during a run: stop Ray's work at once and say
how far the run got in one line. Ray Tune's own SIGINT handler is turned
off: it waits to save its experiment state and advises ``Tuner.restore``,
whereas raylth resumes from its store (run the same command again)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading

from raylth.errors import Interrupted, StorageFault


def _sigterm(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def stopped_cleanly(progress):
    """Inside the block, Ctrl-C or SIGTERM shuts this driver's Ray work down
    (trials and tasks die with their driver) and raises Interrupted, and a
    full disk raises StorageFault; ``progress()`` says what is done."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    main = threading.current_thread() is threading.main_thread()
    previous = (signal.signal(signal.SIGTERM, _sigterm), signal.getsignal(signal.SIGINT)) if main else None
    try:
        yield
    except KeyboardInterrupt:
        if main:  # a second Ctrl-C must not break the shutdown
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        _shutdown_ray()
        raise Interrupted(f"interrupted: {progress()}; run the same command to continue") from None
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            raise
        _shutdown_ray()
        where = f"{err.filename}: " if err.filename else ""
        raise StorageFault(f"{where}{os.strerror(err.errno)} mid-run; {progress()}; free space (or fix the "
                           "storage) and run the same command to continue") from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])


def _shutdown_ray() -> None:
    import ray

    with contextlib.suppress(Exception):
        ray.shutdown()
