"""One run per output directory: an exclusive lock file held for the whole run.

``output_dir/.feedalign.lock`` holds the holder's pid, host, start time and command line
(JSON). It is locked with ``flock`` while the run lives, so the kernel releases it when the
process dies, however it dies: a lock file left behind by a killed run is stale and taken
over (with a warning naming the dead holder). A second run on the same directory fails at
once with a ConfigError naming the holder.

A lock file whose ``flock`` is free but whose pid is alive on this host is also treated as
held: a file system without ``flock`` support (some network mounts) must not let two runs in.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from feedalign.config.errors import ConfigError

logger = logging.getLogger("feedalign.train")

LOCK_FILE = ".feedalign.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def _describe(holder: dict[str, Any]) -> str:
    since = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {when}"


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
    try:
        holder = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


class OutputDirLock:
    """``with OutputDirLock(out):`` holds ``out/.feedalign.lock`` exclusively.

    Raises:
        ConfigError (key ``train.output_dir``): another live run holds the directory.
    """

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.path = Path(output_dir).expanduser() / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self._acquire()
        except OSError as exc:
            raise ConfigError(f"cannot create or lock '{self.path}': {exc.strerror or exc}",
                              key="train.output_dir") from None

    def _acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # retried only when the file was replaced between open and lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise self._held(holder) from None
                raise
            if not self._same_file(fd):  # the holder released (unlinked) it meanwhile
                os.close(fd)
                continue
            holder = _read_holder(fd)
            if holder and self._live_elsewhere(holder):
                os.close(fd)
                raise self._held(holder)
            if holder:
                logger.warning("taking over the stale lock %s of %s (that process is gone)", self.path, _describe(holder))
            self._write(fd)
            self._fd = fd
            return
        raise ConfigError(f"could not lock '{self.path}' (it keeps being replaced)", key="train.output_dir")

    def _same_file(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)

    @staticmethod
    def _live_elsewhere(holder: dict[str, Any]) -> bool:
        pid = holder.get("pid")
        if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False  # flock is authoritative on this file; another host's pid says nothing here
        return pid != os.getpid() and _pid_alive(pid)

    def _held(self, holder: dict[str, Any]) -> ConfigError:
        return ConfigError(
            f"'{self.path.parent}' is in use by another run ({_describe(holder)}; lock file {self.path}); "
            "wait for it to finish or pick another output_dir (if no such run exists, delete the lock file)",
            key="train.output_dir",
        )

    def _write(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "argv": sys.argv}
        data = json.dumps(info).encode("utf-8")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # before unlocking: a waiter re-checks the inode
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
