"""One live run per experiment folder: the lock file ``<experiment folder>/.lock``.

A training run holds an exclusive ``fcntl.flock`` on ``.lock`` in its experiment folder for as long as it runs; the
file records who holds it (pid, host, start time). The operating system drops the lock when the process ends, however
it ends, so a lock file whose lock is free is *stale* (its run died, e.g. killed) and the next run takes it over.
Another run that would move (archive) or resume a held folder is refused, naming the holder. The checks of several
runs starting at once are serialized by a short lock on the folder that holds the experiment folders
(:func:`setup_serialized`), so two runs cannot both find a folder free and both claim it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from qdr_plugin.errors import UserError

__all__ = ['LOCK_NAME', 'RunLock', 'setup_serialized']

LOCK_NAME = '.lock'


@contextlib.contextmanager
def setup_serialized(parent: str) -> Iterator[None]:
    """Hold an exclusive lock on the folder ``parent`` (created if missing) for the duration of the block: the
    set-up of runs whose experiment folders live in ``parent`` (check, archive, claim) happens one at a time."""
    os.makedirs(parent, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _holder_text(fd: int) -> str:
    """What a lock file says about its holder (``pid P on host H, started T``), or ``''`` for an empty file."""
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode('utf-8', 'replace').strip()


def _own_text() -> str:
    started = datetime.datetime.now().isoformat(sep=' ', timespec='seconds')
    return f'pid {os.getpid()} on host {socket.gethostname()}, started {started}'


def _try_flock(fd: int) -> bool:
    """Take the exclusive lock of ``fd`` without waiting; ``False`` if another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@dataclass
class RunLock:
    """The lock of the live run on ``folder`` (``folder/.lock``), held from :meth:`claim` until :meth:`release`.

    Attributes:
        folder: the experiment folder.
        stale: what the lock file said about a run that died holding it (taken over), or ``None``.
    """

    folder: str
    stale: str | None
    _fd: int | None

    @staticmethod
    def check_free(folder: str, fix: str) -> str | None:
        """Raise :class:`UserError` (``<folder> is in use by a live run (pid ..., host ..., started ...): <fix>``)
        if a live run holds ``folder``'s lock; else return the holder a stale lock file names (or ``None``)."""
        path = os.path.join(folder, LOCK_NAME)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            holder = _holder_text(fd)
            if not _try_flock(fd):
                raise UserError(f'{folder} is in use by a live run ({holder or "holder unknown"}): {fix}')
            return holder or None
        finally:
            os.close(fd)

    @classmethod
    def claim(cls, folder: str, fix: str) -> RunLock:
        """Take ``folder``'s lock for this process (creating the folder and ``.lock`` if needed) and write who holds
        it; a stale lock is taken over (its holder in :attr:`stale`). Raises :class:`UserError` like
        :meth:`check_free` if a live run holds it."""
        os.makedirs(folder, exist_ok=True)
        fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            holder = _holder_text(fd)
            if not _try_flock(fd):
                raise UserError(f'{folder} is in use by a live run ({holder or "holder unknown"}): {fix}')
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (_own_text() + '\n').encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(folder, holder or None, fd)

    def release(self) -> None:
        """Remove ``.lock`` and drop the lock (idempotent; the lock also goes when the process ends)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.folder, LOCK_NAME))
        os.close(self._fd)
        self._fd = None
