"""Crash-safe writing of any output file (ONNX models, images, reports, engines).

:func:`atomic_output` hands out a hidden temporary path in the target's folder (``.<name>.<pid>.<random>.tmp``, the
naming of :func:`qdr_plugin.utils.atomic.atomic_torch_save`); whatever the caller writes there is fsync'ed and moved
over the target with ``os.replace`` when the block ends without an exception, and removed when it raises. The
target is therefore either its old complete content or the new complete content, never a partial file.

A process killed hard (``SIGKILL``, power loss) between creating the temporary file and the replace leaves that file
behind. The first save of a process into a folder removes the temporaries there whose process is gone
(:func:`remove_stale_temporaries`), so a killed save is cleaned up by the next run that saves into its folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

_TEMPORARY = re.compile(r'^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$')
_CLEANED: set[Path] = set()
"""Folders :func:`atomic_output` has cleared of stale temporaries in this process."""


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh hidden temporary path next to ``path``: ``.<name>.<pid>.<8 hex digits>.tmp``."""
    path = Path(os.path.abspath(path))
    return path.with_name(f'.{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')


def _process_is_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (POSIX; a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`temporary_path`'s form in ``folder`` whose process no longer runs, and
    return them. Temporaries of live processes (including this one) are left alone. POSIX only: elsewhere nothing
    is removed (a process id cannot be probed without side effects)."""
    if os.name != 'posix':
        return []
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or int(match['pid']) == os.getpid() or _process_is_alive(int(match['pid'])):
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            os.remove(entry.path)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_output(path) as tmp: write(tmp)``: the file written to ``tmp`` replaces ``path`` atomically.

    The folder of ``path`` is created if missing and cleared of stale temporaries first. On an exception in the block
    ``tmp`` is removed, ``path`` keeps its previous content and the exception propagates. If the block writes nothing
    to ``tmp``, ``FileNotFoundError`` is raised.
    """
    target = Path(os.path.abspath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.parent not in _CLEANED:  # once per folder and process: a folder of 10 000 images is scanned once
        remove_stale_temporaries(target.parent)
        _CLEANED.add(target.parent)
    tmp = temporary_path(target)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, newline: str | None = None) -> None:
    """Write ``text`` (UTF-8; ``newline`` as for :func:`open`) to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp, open(tmp, 'w', encoding='utf-8', newline=newline) as f:
        f.write(text)


def _fsync_file(path: Path) -> None:
    """Flush ``path``'s data to the disk before it is renamed over the target."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
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
