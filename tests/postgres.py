"""A throwaway PostgreSQL server for the tests of searches whose study lives
in a database: the machine's own server binaries (Debian's postgresql
package; `.ci/run` installs it where missing), a fresh cluster in a
temporary folder, trust authentication on 127.0.0.1 only, gone afterwards.
PostgreSQL refuses to run as root, so under root it runs as the
``postgres`` user the package creates."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ports import free_port


def server_binaries() -> Path | None:
    """The folder of initdb and postgres: on PATH, else Debian's newest."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


@contextlib.contextmanager
def throwaway_postgres(user: str = "raylth", database: str = "raylth"):
    """Yields the SQLAlchemy URL of an empty database (psycopg 3 as the driver)."""
    import psycopg

    binaries = server_binaries()
    if binaries is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, postgres): apt-get install postgresql")
    run_as = {}
    folder = Path(tempfile.mkdtemp(prefix="raylth-pg-"))  # not under pytest's root-only temp folder
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        run_as = {"user": owner.pw_uid, "group": owner.pw_gid}
    data, port = folder / "data", free_port()
    server = None
    try:
        subprocess.run([binaries / "initdb", "-D", data, "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, timeout=120, cwd=folder, **run_as)
        server = subprocess.Popen([binaries / "postgres", "-D", data, "-p", str(port), "-k", folder,
                                   "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                                   "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder, **run_as)
        admin = f"host=127.0.0.1 port={port} user={user} dbname=postgres"
        deadline = time.time() + 60
        while True:
            try:
                with psycopg.connect(admin, autocommit=True) as con:
                    con.execute(f"CREATE DATABASE {database}")
                break
            except psycopg.OperationalError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/{database}"
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(folder, ignore_errors=True)
