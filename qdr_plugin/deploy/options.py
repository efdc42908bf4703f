"""Read the parts of an options YAML that the deployment commands need (no training set-up)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from basicsr.utils.options import ordered_yaml

from qdr_plugin.archs.basicsr_defaults import network_input_channels
from qdr_plugin.errors import UserError


def read_options(path: str | Path) -> dict[str, Any]:
    """The options file as a dict (each dataset given its ``phase`` and the top-level ``scale``, as basicsr does); a
    one-line :class:`UserError` if it is missing, not a YAML text file, or has no ``network_g``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f'-opt {path}: the options file does not exist; give the options YAML of the model.')
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.load(f, Loader=ordered_yaml()[0])
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        detail = ' '.join(str(error).split())[:160]
        raise UserError(f'-opt {path}: not a readable YAML options file ({detail}); give the options YAML of the '
                        'model.') from error
    if not isinstance(opt, dict) or 'network_g' not in opt:
        raise UserError(f'-opt {path}: no network_g block; give the options file the checkpoint was trained with.')
    for key, dataset in (opt.get('datasets') or {}).items():  # as basicsr's parse_options: phase, scale
        if isinstance(dataset, dict):
            dataset['phase'] = key.split('_')[0]
            if 'scale' in opt:
                dataset.setdefault('scale', opt['scale'])
    return opt


def input_channels(opt: dict[str, Any]) -> int:
    """Image channels the network takes (``network_g.in_ch`` / ``num_in_ch`` / ``in_chans`` / ``in_channels``,
    default 3)."""
    channels = network_input_channels(opt['network_g'])
    return 3 if channels is None else channels
