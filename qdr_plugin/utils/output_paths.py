"""Checks of a command's output paths, made before any work, so that a long run is never thrown away at its end.

One rule for every command and tool that writes files: an output file that exists already is refused (the fix:
choose another path or pass ``--overwrite``); with ``--overwrite`` it is replaced atomically
(:mod:`qdr_plugin.utils.atomic_write`). An output is also refused when it is one of the command's inputs, when a
file path names a folder (or a folder path a file), and when the folder it goes to cannot be written. Missing
folders are created when the output is written. Each problem is one :class:`~qdr_plugin.errors.UserError` naming the
flag and the path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from qdr_plugin.errors import UserError

from .atomic_write import temporary_path

OVERWRITE_FIX = 'choose another path or pass --overwrite'


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def check_writable_folder(folder: str | os.PathLike, flag: str, shown: str | os.PathLike) -> None:
    """Refuse (``UserError`` naming ``flag`` and ``shown``) when ``folder`` cannot be created or written: its
    closest existing ancestor must be a folder this process can create a file in (tried, not guessed: a
    read-only file system or missing permissions both show)."""
    existing = _nearest_existing(Path(folder))
    if not existing.is_dir():
        raise UserError(f'{flag} {shown}: {existing} is a file, not a folder; choose another path.')
    probe = temporary_path(existing / 'write-check')
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as error:
        raise UserError(
            f'{flag} {shown}: cannot write into {existing} ({error.strerror or error}); choose a folder you can '
            'write to.'
        ) from error
    os.remove(probe)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def check_output_file(
    path: str | os.PathLike,
    flag: str,
    overwrite: bool = False,
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
    example: str = 'output',
) -> Path:
    """Check the output file ``path`` given with ``flag`` before any work; returns it as a ``Path``.

    Refused: a folder (the message suggests ``<path>/<example>``), one of ``inputs`` (``{flag: path}`` of the
    command's input files), an existing file without ``overwrite``, a folder that cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f'{flag} {path} is a folder; give the file to write, e.g. {flag} {path / example}.')
    for input_flag, given in (inputs or {}).items():
        if given is not None and _same_file(path, Path(given)):
            raise UserError(f'{flag} {path} is the input {input_flag} {given}; writing it would destroy the input: '
                            'choose another path.')
    if os.path.lexists(path) and not overwrite:
        raise UserError(f'{flag} {path} exists already; {OVERWRITE_FIX}.')
    check_writable_folder(path.parent, flag, path)
    return path


def check_output_folder(
    folder: str | os.PathLike, flag: str, names: Iterable[str], overwrite: bool = False
) -> Path:
    """Check the output folder ``folder`` given with ``flag``, into which a run writes the files ``names``, before
    any work; returns it as a ``Path``. Refused: a file, a folder that already holds one of ``names`` (without
    ``overwrite``), a folder that cannot be created or written."""
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise UserError(f'{flag} {folder} is a file, not a folder; choose another path.')
    taken = [name for name in dict.fromkeys(names) if os.path.lexists(folder / name)]
    if taken and not overwrite:
        shown = ', '.join(taken[:3]) + (f' and {len(taken) - 3} more' if len(taken) > 3 else '')
        raise UserError(f'{flag} {folder} already holds {shown}; {OVERWRITE_FIX}.')
    check_writable_folder(folder, flag, folder)
    return folder
