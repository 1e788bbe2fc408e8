"""A throw-away PostgreSQL server for tests: initdb + pg_ctl in a temporary directory,
listening on a free loopback port only (no Unix socket in a shared place). Skips the test
with the reason when the server binaries or the driver are missing."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile

import pytest


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_url():
    """Yield a ``postgresql+psycopg://`` URL of a fresh server; stops and removes it after."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'psycopg[binary]')")
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    # The server refuses to run as root: run it as the 'postgres' system user when we are root.
    prefix: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        if not runuser:
            pytest.skip("running as root and runuser is missing")
        prefix = [runuser, "-u", "postgres", "--"]
    root = tempfile.mkdtemp(prefix="feedalign-pg-")
    os.chmod(root, 0o777)
    data, log = os.path.join(root, "data"), os.path.join(root, "server.log")
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        subprocess.run([*prefix, initdb, "-D", data, "-U", "feedalign", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, env=env, timeout=300)
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=on"
        subprocess.run([*prefix, pg_ctl, "-D", data, "-l", log, "-o", options, "-w", "-t", "120", "start"],
                       check=True, capture_output=True, env=env, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start a PostgreSQL server: {detail.decode(errors='replace')[-300:]}")
    try:
        yield f"postgresql+psycopg://feedalign@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", data, "-m", "fast", "-w", "stop"], capture_output=True,
                       env=env, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
