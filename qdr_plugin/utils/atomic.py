"""Crash-safe checkpoint writing: a file is either the old complete version or the new complete version."""

from __future__ import annotations

import os
import uuid
from typing import Any

import torch


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically.

    The object is written to a hidden temporary file in the same directory (``.<name>.<pid>.<random>.tmp``, so
    basicsr's ``*.state`` / ``*.pth`` scans never see it), flushed and fsync'ed, then moved over ``path`` with
    ``os.replace``. If anything fails (or the process is killed) before the replace, ``path`` keeps its previous
    content; on an exception the temporary file is removed and the exception re-raised.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f'.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)  # umask applies
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
