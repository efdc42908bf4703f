"""An mmengine checkpoint of :class:`~qdr_plugin.mm.model.QDRRestorer` as a plugin checkpoint, and the options
YAML that goes with it, so that ``basicsr export`` / ``bench`` / ``test`` take it:

    python -m qdr_plugin.mm convert work_dirs/qdr_efm_denoise_demo/iter_2000.pth net_g.pth
    basicsr export -opt net_g.yml --ckpt net_g.pth --out efm_int8.onnx

The checkpoint is ``{'params': student, 'params_teacher': teacher, 'params_lmr': LMR, 'options': record}``
(:mod:`qdr_plugin.core.checkpoint`'s keys; the ``net.`` / ``teacher.`` / ``lmr.`` prefixes of the model's state
dict taken off); the YAML holds ``network_g`` and ``quant`` as recorded in the mmengine checkpoint.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import yaml

from qdr_plugin.core import LMR_KEY, STUDENT_KEY, TEACHER_KEY
from qdr_plugin.errors import UserError
from qdr_plugin.utils.atomic import atomic_torch_save
from qdr_plugin.utils.checkpoint import RECORD_KEY, load_file

__all__ = ['PREFIXES', 'convert_checkpoint']

PREFIXES = {STUDENT_KEY: 'net.', TEACHER_KEY: 'teacher.', LMR_KEY: 'lmr.'}
"""The plugin checkpoint's key for each prefix of the mmengine model's state dict."""


def _split(state: dict[str, torch.Tensor]) -> dict[str, OrderedDict]:
    parts: dict[str, OrderedDict] = {}
    for key, prefix in PREFIXES.items():
        part = OrderedDict((k[len(prefix):], v.cpu()) for k, v in state.items() if k.startswith(prefix))
        if part:
            parts[key] = part
    return parts


def convert_checkpoint(src: str | Path, dst: str | Path) -> tuple[Path, Path]:
    """Write ``dst`` (the plugin checkpoint) and ``dst`` with suffix ``.yml`` (its options); returns both paths.

    Raises :class:`UserError` if ``src`` is not an mmengine checkpoint of ``QDRRestorer`` (no ``state_dict`` with
    ``net.`` keys, or no ``qdr`` record).
    """
    checkpoint: Any = load_file(str(src), 'the mmengine checkpoint')
    state = checkpoint.get('state_dict') if isinstance(checkpoint, dict) else None
    record = (checkpoint.get('qdr') or {}).get('options') if isinstance(checkpoint, dict) else None
    parts = _split(state) if isinstance(state, dict) else {}
    if STUDENT_KEY not in parts or record is None:
        raise UserError(f'{src}: not an mmengine checkpoint of QDRRestorer (it needs state_dict net.* keys and the '
                        "'qdr' record that QATSwitchHook writes); give a work_dirs/<name>/iter_<n>.pth of "
                        'python -m qdr_plugin.mm train.')
    dst = Path(dst)
    atomic_torch_save({**parts, RECORD_KEY: record}, str(dst))
    options = {'name': dst.stem, 'model_type': 'QDRModel', 'network_g': record['network_g'],
               'quant': record['quant']}
    yml = dst.with_suffix('.yml')
    yml.write_text(yaml.safe_dump(options, sort_keys=False))
    return dst, yml
