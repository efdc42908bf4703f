"""Crash-safe checkpoint writing: a file is either the old complete version or the new complete version."""

from __future__ import annotations

import os
from typing import Any

import torch

from qdr_plugin.utils.atomic_write import atomic_output, remove_stale_temporaries


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically (:func:`qdr_plugin.utils.atomic_write.atomic_output`).

    The object is written to a hidden temporary file in the same directory (``.<name>.<pid>.<random>.tmp``, so
    basicsr's ``*.state`` / ``*.pth`` scans never see it), fsync'ed, then moved over ``path`` with ``os.replace``. If
    anything fails (or the process is killed) before the replace, ``path`` keeps its previous content; on an
    exception the temporary file is removed and the exception re-raised. A write that fails in the operating system
    (a full disk, a file size limit) raises that ``OSError`` with ``path`` as its file name, also where
    ``torch.save`` reports it only as a ``RuntimeError`` ("unexpected pos ..."). Checkpoints are few, so every save
    first removes the temporaries that saves killed hard left in the folder
    (:func:`qdr_plugin.utils.atomic_write.remove_stale_temporaries`).
    """
    remove_stale_temporaries(os.path.dirname(os.path.abspath(path)))
    with atomic_output(path) as tmp, open(tmp, 'wb') as f:
        _save_reporting_os_errors(obj, f, os.fspath(path))


def _save_reporting_os_errors(obj: Any, f, path: str) -> None:
    """``torch.save(obj, f)``; torch's writer turns a failed ``f.write`` into a ``RuntimeError`` whose context is
    the ``OSError``: that error is raised instead (file name ``path``)."""
    try:
        torch.save(obj, f)
    except RuntimeError as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, OSError) and cause.errno is not None:
            raise OSError(cause.errno, cause.strerror, path) from error
        raise
