"""Rules of the options blocks basicsr itself reads: top level, ``name``, ``path``, ``network_g`` against the arch's
signature, ``val``, ``logger``."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from os import path as osp
from pathlib import Path
from typing import Any

import torch
from basicsr.utils.registry import ARCH_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from qdr_plugin.models.qdr_model import QDRModel
from qdr_plugin.option_rules import (
    MISSING,
    OptionsError,
    OptionsPathError,
    check_against_signature,
    check_keys,
    check_registered,
    did_you_mean,
    is_int,
    looked_in,
    lookup,
    need_bool,
    need_choice,
    need_dict,
    need_int,
    registered_names,
    resolve,
    signature,
)

OUR_BLOCKS = ('quant', 'network_g', 'datasets', 'train', 'val', 'logger', 'path')
"""Top-level blocks whose misspellings are refused (other unknown top-level keys are the user's own)."""

BASICSR_TOP_LEVEL = (
    'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'dist', 'rank', 'world_size', 'auto_resume',
    'is_train', 'root_path', 'dist_params', 'find_unused_parameters', 'network_d',
)


PATH_KEYS = ('pretrain_network_g', 'strict_load_g', 'param_key_g', 'resume_state', 'ignore_resume_networks')
"""``path:`` keys basicsr 1.4.2 reads; ``pretrain_network_<x>``, ``strict_load_<x>`` and ``param_key_<x>`` are also
valid for every other ``network_<x>`` block of the file."""

PATH_KEYS_SET_BY_BASICSR = ('experiments_root', 'models', 'training_states', 'log', 'visualization', 'results_root')
"""``path:`` keys basicsr's ``parse_options`` sets itself (a value given in the file is overwritten)."""

VAL_KEYS = ('val_freq', 'save_img', 'suffix', 'pbar', 'metrics', 'num_val_samples', 'flip_seq', 'center_frame_only')
"""``val:`` keys basicsr 1.4.2's models read."""

LOGGER_KEYS = ('print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb')
"""``logger:`` keys basicsr 1.4.2 reads."""

WANDB_KEYS = ('project', 'resume_id')
"""``logger.wandb:`` keys basicsr 1.4.2 reads."""

_TYPO_CUTOFF = 0.75
_NAME_FIX = ('Write a plain folder name, e.g. name: my_experiment (runs go to experiments/<name>/, tests to '
             'results/<name>/).')
_NOT_IN_NAMES = set('<>:"|?*')  # not allowed in Windows folder names; '/' and '\\' make a path


def check_top_level(opt: Mapping) -> type | None:
    """The top-level keys; returns the model class ``model_type`` names."""
    for key in opt:
        if key in OUR_BLOCKS or key in BASICSR_TOP_LEVEL or not isinstance(key, str):
            continue
        if re.fullmatch(r'network_[a-z0-9]+', key) and key != 'network_g':
            continue  # other networks (network_d, a teacher, ...) of other models
        close = difflib.get_close_matches(key, OUR_BLOCKS, n=1, cutoff=_TYPO_CUTOFF)
        if close:
            raise OptionsError(key, f'unknown top-level key {key!r}, a misspelt block?', opt[key],
                               f"Did you mean '{close[0]}'? Rename it (basicsr would silently ignore it).")
    _check_name(opt.get('name', MISSING))
    model_type = opt.get('model_type', MISSING)
    model = lookup(MODEL_REGISTRY, model_type)
    if model is None:
        raise OptionsError('model_type', 'no model of this name is registered', model_type,
                           did_you_mean(model_type, registered_names(MODEL_REGISTRY)) or 'Use model_type: QDRModel.')
    num_gpu = opt.get('num_gpu', MISSING)
    if num_gpu != 'auto' and (not is_int(num_gpu) or num_gpu < 0):
        raise OptionsError('num_gpu', "must be an integer >= 0 or 'auto'", num_gpu,
                           'Write num_gpu: 0 for the CPU, or num_gpu: auto (basicsr reads it unconditionally).')
    if is_int(num_gpu) and num_gpu > 0 and not torch.cuda.is_available():
        raise OptionsError('num_gpu', 'asks for GPUs but torch sees no CUDA device', num_gpu,
                           'Write num_gpu: 0 (CPU) or num_gpu: auto.')
    seed = opt.get('manual_seed')
    if seed is not None and not is_int(seed):
        raise OptionsError('manual_seed', 'must be an integer', seed, 'Write manual_seed: 0 (or remove it).')
    return model


def _check_name(name: Any) -> None:
    """``name`` becomes the folder ``experiments/<name>`` (``results/<name>``): a folder name, not a path."""
    if not isinstance(name, str) or not name.strip():
        raise OptionsError('name', 'must be a non-empty string (the experiment name)', name,
                           'Add name: my_experiment (runs go to experiments/<name>/).')
    bad = next((c for c in name if c in _NOT_IN_NAMES or ord(c) < 32 or ord(c) == 127), None)
    if name in ('.', '..'):
        problem = 'names an existing folder (the experiments folder or its parent), not a new one'
    elif '/' in name or '\\' in name:
        problem = 'is a path; it must be a folder name (basicsr makes experiments/<name>/ and moves an existing one)'
    elif name.startswith('-'):
        problem = "starts with '-', which commands read as an option"
    elif bad is not None:
        problem = f'holds {bad!r}, which is not allowed in folder names'
    elif name != name.strip() or name.endswith('.'):
        problem = 'starts or ends with a space, or ends with a dot'
    elif len(name.encode()) > 200:
        problem = 'is longer than 200 bytes (log files add their date to it)'
    else:
        return
    raise OptionsError('name', problem, name, _NAME_FIX)


def _path_keys(opt: Mapping) -> list[str]:
    """The ``path:`` keys valid in ``opt``: basicsr's (:data:`PATH_KEYS`, :data:`PATH_KEYS_SET_BY_BASICSR`) and the
    loading keys of its other ``network_<x>`` blocks."""
    others = [key.removeprefix('network_') for key in opt
              if isinstance(key, str) and re.fullmatch(r'network_\w+', key) and key != 'network_g']
    per_network = [f'{prefix}_{net}' for net in others for prefix in ('pretrain_network', 'strict_load', 'param_key')]
    return [*PATH_KEYS, *PATH_KEYS_SET_BY_BASICSR, *per_network]


def check_path(opt: Mapping, base_dir: Path) -> None:
    block = need_dict(opt, '', 'path', required=True, example='path: {pretrain_network_g: ~, strict_load_g: true}')
    valid = _path_keys(opt)
    for key, value in block.items():
        if key not in valid:
            raise OptionsError(f'path.{key}', f'unknown key {key!r}', value,
                               f'{did_you_mean(key, valid)} (basicsr would silently ignore it.)')
        if isinstance(key, str) and key.startswith('strict_load_'):
            need_bool(block, 'path', key)
        if isinstance(key, str) and key.startswith('param_key_') and value is not None and not isinstance(value, str):
            raise OptionsError(f'path.{key}', 'must be the checkpoint key to load', value, f'Write {key}: params.')
    ignored = block.get('ignore_resume_networks')
    if ignored is not None and not (isinstance(ignored, list) and all(isinstance(n, str) for n in ignored)):
        raise OptionsError('path.ignore_resume_networks', 'must be a list of network names', ignored,
                           'Write ignore_resume_networks: [network_g] or remove it.')
    for key, value in block.items():
        if not (isinstance(key, str) and ('pretrain_network' in key or 'resume_state' in key)) or value is None:
            continue
        if not isinstance(value, str):
            raise OptionsError(f'path.{key}', 'must be a file path or ~', value, f'Write {key}: <file> or {key}: ~.')
        if not osp.isfile(resolve(value, base_dir)):
            raise OptionsPathError(f'path.{key}', f'file not found{looked_in(value, base_dir)}', value,
                                   'Fix the path (relative paths start from the working directory) or set '
                                   f'{key}: ~.')


def check_network(opt: Mapping) -> dict:
    """``network_g`` against its arch's signature; returns it with the arch's defaults filled in."""
    block = need_dict(opt, '', 'network_g', required=True, example='network_g: {type: EFM, in_ch: 1}')
    arch = check_registered(block, 'network_g', ARCH_REGISTRY, 'arch')
    check_against_signature(block, 'network_g', arch)
    if hasattr(arch, 'check_options'):
        arch.check_options(block, 'network_g')
    sig = signature(arch)
    defaults = {n: p.default for n, p in sig.parameters.items() if p.default is not p.empty} if sig else {}
    return {**defaults, **block}


def check_val(opt: Mapping, is_train: bool, model: type) -> None:
    val = need_dict(opt, '', 'val', required=not is_train, example='val: {save_img: false, metrics: {...}}')
    if val is None:
        return
    check_keys(val, 'val', VAL_KEYS)
    need_bool(val, 'val', 'pbar')
    if val.get('suffix') is not None and not isinstance(val['suffix'], str):
        raise OptionsError('val.suffix', 'must be a string (added to saved image names) or ~', val['suffix'],
                           'Write suffix: ~ or e.g. suffix: int8.')
    if is_train:
        need_int(val, 'val', 'val_freq', 1, required=True, example='1000')
    if 'save_img' not in val:
        raise OptionsError('val.save_img', 'required key is missing (basicsr reads it)', MISSING,
                           'Add save_img: false.')
    need_bool(val, 'val', 'save_img')
    for name, metric in (need_dict(val, 'val', 'metrics') or {}).items():
        path = f'val.metrics.{name}'
        if not isinstance(metric, Mapping):
            raise OptionsError(path, 'must be a block', metric,
                               f'Write {name}: {{type: calculate_psnr, crop_border: 0}}.')
        func = check_registered(metric, path, METRIC_REGISTRY, 'metric')
        if isinstance(model, type) and issubclass(model, QDRModel) and func.__name__.endswith('_pt'):
            raise OptionsError(f'{path}.type', 'needs tensors, but validation scores numpy images', metric['type'],
                               f"Use {func.__name__.removesuffix('_pt')}.")
        _check_metric(metric, path, func)


def _check_metric(metric: Mapping, path: str, func: Any) -> None:
    """A metric's keys: the function's arguments (its ``**kwargs`` swallow anything else, silently) and basicsr's
    ``better``; ``crop_border`` an integer >= 0."""
    check_against_signature(metric, path, func, given_by_caller=('img', 'img2'), ours=('better',))
    sig = signature(func)
    if sig is not None:
        named = [n for n, p in sig.parameters.items()
                 if n not in ('img', 'img2') and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        check_keys(metric, path, ['type', 'better', *named])
    border = metric.get('crop_border')
    need_int(metric, path, 'crop_border', 0, example=border if isinstance(border, str) and border.isdigit() else '0')
    need_bool(metric, path, 'test_y_channel')
    need_choice(metric, path, 'better', ('higher', 'lower'))


def check_logger(opt: Mapping, is_train: bool) -> None:
    logger = need_dict(opt, '', 'logger', required=is_train,
                       example='logger: {print_freq: 100, save_checkpoint_freq: 1000, use_tb_logger: true}')
    if logger is None:
        return
    check_keys(logger, 'logger', LOGGER_KEYS)
    need_int(logger, 'logger', 'print_freq', 1, required=is_train, example='100')
    need_int(logger, 'logger', 'save_checkpoint_freq', 1, required=is_train, example='1000')
    need_bool(logger, 'logger', 'use_tb_logger')
    wandb = need_dict(logger, 'logger', 'wandb', example='wandb: {project: ~, resume_id: ~}')
    if wandb:
        check_keys(wandb, 'logger.wandb', WANDB_KEYS)
        if wandb.get('project') is not None and logger.get('use_tb_logger') is not True:
            raise OptionsError('logger.use_tb_logger', 'must be true with logger.wandb.project (basicsr syncs wandb '
                               'from the tensorboard log)', logger.get('use_tb_logger', MISSING),
                               'Write use_tb_logger: true, or project: ~.')
