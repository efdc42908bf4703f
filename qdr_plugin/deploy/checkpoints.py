"""Load a checkpoint for the deployment and benchmark commands, or say in one line why it cannot be loaded.

:func:`load_checkpoint` is :func:`qdr_plugin.utils.checkpoint.load_networks` with every way a user-given file can
fail (missing, a folder, empty, truncated, random bytes, a pickle that a weights-only load refuses, another
network's weights) turned into one :class:`~qdr_plugin.errors.UserError` naming the file, the reason and the fix.
"""

from __future__ import annotations

import pickle
import re
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from qdr_plugin.errors import UserError
from qdr_plugin.utils.checkpoint import load_networks

_FIX = 'give a basicsr checkpoint (.pth) and the options file it was trained with'
_LOAD_ERRORS = (pickle.UnpicklingError, EOFError, KeyError, RuntimeError, ValueError, OSError, AttributeError,
                TypeError)
_TORCH_LOAD_FILES = ('serialization.py', '_weights_only_unpickler.py')


def _shorten(text: str, limit: int = 200) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    line = ' '.join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 3] + '...'


def raised_by_torch_load(error: BaseException) -> bool:
    """Whether ``error`` comes from inside ``torch.load`` (random bytes make its unpickler raise about anything:
    ``IndexError``, ``UnicodeDecodeError``, ``OverflowError``, ...), i.e. the file is not a readable checkpoint."""
    frames = traceback.extract_tb(error.__traceback__)
    return any(Path(f.filename).name in _TORCH_LOAD_FILES and 'torch' in Path(f.filename).parts for f in frames)


def _reason(error: BaseException) -> str:
    """What is wrong with the file, from the exception ``torch.load`` or ``load_state_dict`` raised."""
    text = str(error)
    if isinstance(error, EOFError):
        return 'the file is empty or cut short'
    unsafe = re.search(r'GLOBAL (\S+)', text) if isinstance(error, pickle.UnpicklingError) else None
    if unsafe:
        return f'it refers to {unsafe.group(1)}, which a weights-only load refuses (loading it could run code)'
    if isinstance(error, PermissionError):
        return f'cannot read it ({error.strerror})'
    if isinstance(error, OSError) or (isinstance(error, RuntimeError) and 'PytorchStreamReader' in text):
        return 'it is not a complete torch checkpoint (truncated, or not a .pth file)'
    if isinstance(error, pickle.UnpicklingError) or raised_by_torch_load(error):
        return 'it is not a torch checkpoint (unreadable pickle)'
    if type(error) is ValueError:
        return _shorten(text).rstrip('.')
    return f'{type(error).__name__}: {_shorten(text)}'


def load_checkpoint(
    opt: Mapping[str, Any], opt_path: str | Path, ckpt: str | Path
) -> tuple[nn.Module, nn.Module | None]:
    """``(student, teacher)`` of the checkpoint ``ckpt`` built from the options ``opt`` (read from ``opt_path``), as
    :func:`~qdr_plugin.utils.checkpoint.load_networks` returns them; a :class:`UserError` when the file is missing or
    cannot be loaded into ``network_g``."""
    path = Path(ckpt)
    if not path.is_file():
        kind = 'is a folder' if path.is_dir() else 'does not exist'
        raise UserError(f'checkpoint {ckpt} {kind}; {_FIX}.')
    try:
        return load_networks(opt['network_g'], opt.get('quant'), str(path))
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001  (what the file's content makes torch.load raise, see _reason)
        if not isinstance(error, _LOAD_ERRORS) and not raised_by_torch_load(error):
            raise  # a defect of the software keeps its traceback
        text = str(error)
        if isinstance(error, RuntimeError) and 'Error(s) in loading state_dict' in text:
            detail = _shorten(text.split(':', 1)[1] if ':' in text else text, 160)
            raise UserError(
                f'checkpoint {ckpt} does not fit network_g of {opt_path} ({detail}); give the options file the '
                'checkpoint was trained with.'
            ) from error
        raise UserError(f'cannot load checkpoint {ckpt}: {_reason(error)}; {_FIX}.') from error
