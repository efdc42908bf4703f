"""Read QDR checkpoints and rebuild their networks outside basicsr's model classes, for tools and benchmarks.

A checkpoint ``QDRModel`` saves is basicsr's ``{'params': student}`` plus ``'params_teacher'`` (the FP32 teacher),
``'params_lmr'`` (LMR's weights) and ``'options'``: the record of the options it was trained with
(:func:`training_record`: ``network_g`` with the arch's defaults filled in, and the ``quant`` settings). Whoever
loads it with other options (:func:`load_networks`, ``QDRModel.load_network``) is refused by name
(:func:`check_training_record`); checkpoints without the record (older ones, published FP32 weights) load as before.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.errors import UserError
from qdr_plugin.prepare import prepare
from qdr_plugin.quant import QuantConfig, fold_batchnorm, is_quantized_state_dict

__all__ = [
    'RECORD_KEY', 'build_teacher', 'check_training_record', 'config_of_checkpoint', 'load_file', 'load_networks',
    'does_not_fit', 'read_checkpoint',
    'state_dict_of', 'training_record', 'why_unreadable',
]

RECORD_KEY = 'options'
"""The checkpoint key of the training record (beside ``params``)."""

GRID_FIELDS = ('weight_bits', 'act_bits', 'act_symmetric', 'unsigned_relu', 'keep_fp32', 'keep_first_last', 'fold_bn',
               'scheme', 'integer_points')
"""The ``quant`` fields that give a quantized checkpoint's step sizes and weights their meaning."""

FINE_TUNABLE_FIELDS = ('unsigned_relu',)
"""``quant`` fields a quantized checkpoint may continue training with changed (``options/qdr_denoise_bsd68_ort.yml``
fine-tunes an EFM to ``unsigned_relu: true``); evaluating or exporting it still needs the recorded value."""

RUN_TIME_KEYS = ('drop_rate', 'attn_drop_rate', 'drop_path_rate', 'use_checkpoint', 'img_size')
"""``network_g`` keys that do not change what a trained network computes (dropout rates, gradient checkpointing,
SwinIR's training patch size): not compared."""

_PLAIN = (bool, int, float, str, type(None))
_TRAINING_STATE_KEYS = ('iter', 'optimizers', 'schedulers')


def _plain(value: Any) -> Any:
    """``value`` as types ``torch.load(..., weights_only=True)`` reads (tuples as lists), or ``None`` if it is not
    made of such types (e.g. a default that is a class)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return items if all(i is not None or v is None for i, v in zip(items, value)) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return None


def _network_record(network_opt: Mapping[str, Any]) -> dict[str, Any]:
    """``network_g`` with the defaults of the arch's constructor filled in (plain values only)."""
    record = {str(k): _plain(v) for k, v in network_opt.items()}
    try:
        arch = ARCH_REGISTRY.get(network_opt['type'])
    except KeyError:
        return record
    for name, parameter in inspect.signature(arch).parameters.items():
        if parameter.default is not inspect.Parameter.empty and name not in record:
            default = _plain(parameter.default)
            if default is not None or parameter.default is None:
                record[name] = default
    return record


def training_record(network_opt: Mapping[str, Any], config: QuantConfig) -> dict[str, dict[str, Any]]:
    """What a checkpoint records of the options it was trained with: ``{'network_g': ..., 'quant': ...}``."""
    return {'network_g': _network_record(network_opt), 'quant': _plain(dataclasses.asdict(config))}


def _quant_differences(recorded: Mapping[str, Any], config: QuantConfig, fields: tuple[str, ...]) -> list[tuple]:
    """``(key path, recorded, options)`` for each of ``fields`` that differs; equal weight and activation bits on
    both sides are named ``quant.bits``."""
    current = dataclasses.asdict(config)
    names = [f for f in fields if f in recorded and _plain(current[f]) != recorded[f]]
    bits = ('weight_bits', 'act_bits')
    if all(b in names for b in bits) and all(len({side[b] for b in bits}) == 1 for side in (recorded, current)):
        names = ['bits', *(n for n in names if n not in bits)]
        recorded, current = {**recorded, 'bits': recorded['act_bits']}, {**current, 'bits': current['act_bits']}
    return [(f'quant.{n}', recorded[n], current[n]) for n in names]


def _network_differences(recorded: Mapping[str, Any], network_opt: Mapping[str, Any]) -> list[tuple]:
    """``(key path, recorded, options)`` for each recorded ``network_g`` key whose value (given or default) differs
    now; a different type alone if the type differs."""
    if recorded.get('type') != network_opt.get('type'):
        return [('network_g.type', recorded.get('type'), network_opt.get('type'))]
    current = _network_record(network_opt)
    missing = '(not set)'
    return [(f'network_g.{k}', value, current.get(k, missing)) for k, value in recorded.items()
            if k not in RUN_TIME_KEYS and current.get(k, missing) != value]


def check_training_record(
    checkpoint: Mapping[str, Any], network_opt: Mapping[str, Any], config: QuantConfig, path: str,
    training: bool = False,
) -> None:
    """Refuse (:class:`UserError`) loading ``checkpoint`` (read from ``path``) with options other than those it
    records: ``network_g`` always, the ``quant`` settings when its network is quantized (``training``: a run that
    continues training it may change :data:`FINE_TUNABLE_FIELDS`). A checkpoint without the record passes."""
    record = checkpoint.get(RECORD_KEY)
    if not isinstance(record, Mapping):
        return
    differences = _network_differences(record.get('network_g') or {}, network_opt)
    if not differences and is_quantized_state_dict(checkpoint.get('params') or {}):
        fields = tuple(f for f in GRID_FIELDS if not (training and f in FINE_TUNABLE_FIELDS))
        differences = _quant_differences(record.get('quant') or {}, config, fields)
    if differences:
        trained = ', '.join(f'{key} {old}' for key, old, _ in differences)
        given = ', '.join(str(new) for _, _, new in differences)
        fix = ', '.join(f'{key}: {old}' for key, old, _ in differences)
        raise UserError(f'checkpoint {path} was trained with {trained}, the options say {given}: use the options '
                        f'it was trained with ({fix}).')


def _one_line(error: BaseException, limit: int = 200) -> str:
    detail = ' '.join(line.strip() for line in str(error).splitlines() if line.strip())
    detail = detail if len(detail) <= limit else detail[: limit - 3] + '...'
    return f'{type(error).__name__}: {detail}'


def why_unreadable(path: str, error: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` raised ``error``, in a few words."""
    if os.path.isdir(path):
        return 'it is a folder'
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return 'the file is empty'
    unsafe = re.search(r'GLOBAL (\S+)', str(error)) if isinstance(error, pickle.UnpicklingError) else None
    if unsafe:
        return f'it refers to {unsafe.group(1)}, which a weights-only load refuses: loading it could run code'
    if _starts_like_a_zip(path) or (isinstance(error, RuntimeError) and 'PytorchStreamReader' in str(error)):
        return 'it is not a complete torch file, truncated or damaged'
    if isinstance(error, EOFError):
        return 'the file is cut short'
    if isinstance(error, pickle.UnpicklingError):
        return 'it is not a torch file, an unreadable pickle'
    return _one_line(error)


def _starts_like_a_zip(path: str) -> bool:
    """Whether ``path`` begins as a zip archive does (torch's file format since 1.6)."""
    try:
        with open(path, 'rb') as f:
            return f.read(4) == b'PK\x03\x04'
    except OSError:
        return False


def load_file(path: str, what: str, map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)``; a file that is missing or cannot be read (truncated, not a torch
    file, a pickle that needs code) is a :class:`UserError` naming it as ``what`` (e.g. ``path.resume_state``)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f'{what} {path} does not exist: give the path of an existing file.') from None
    except Exception as error:  # noqa: BLE001  (torch.load raises many types for a bad file)
        raise UserError(f'{what} {path} cannot be read ({why_unreadable(path, error)}): give a file saved by basicsr '
                        'or this plugin (models/net_g_*.pth, training_states/*.state).') from error


def state_dict_of(checkpoint: Mapping[str, Any], param_key: str | None = 'params') -> Any:
    """The state dict basicsr's ``load_network`` takes from ``checkpoint``: ``checkpoint[param_key]``, else
    ``checkpoint['params']``, else the checkpoint itself when it is a bare state dict (every value a tensor: published
    weights, basicsr's ``param_key_g: ~``), else ``None``; the whole checkpoint for ``param_key`` ``None``."""
    if param_key is None:
        return checkpoint
    if param_key in checkpoint:
        return checkpoint[param_key]
    if 'params' in checkpoint:
        return checkpoint['params']
    bare = checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values())
    return checkpoint if bare else None


def read_checkpoint(path: str, what: str = 'checkpoint', param_key: str | None = 'params') -> dict[str, Any]:
    """A network checkpoint (:func:`state_dict_of` is a state dict) read with :func:`load_file`; a training state
    or anything else is refused by name as ``what``."""
    checkpoint = load_file(path, what)
    if isinstance(checkpoint, Mapping) and all(k in checkpoint for k in _TRAINING_STATE_KEYS):
        raise UserError(f'{what} {path} is a training state, not a network checkpoint: give it as path.resume_state '
                        '(or use --auto_resume), or give the network saved with it (models/net_g_<iter>.pth).')
    state = state_dict_of(checkpoint, param_key) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = list(checkpoint)[:8] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise UserError(f"{what} {path} is not a basicsr network checkpoint (no '{param_key}' state dict; found "
                        f'{keys}): give a models/net_g_*.pth file.')
    return dict(checkpoint)


def build_teacher(network_opt: Mapping[str, Any], state: Mapping[str, torch.Tensor], fold_bn: bool = True) -> nn.Module:
    """The FP32 teacher of a QDR checkpoint (``params_teacher``): a plain network, BatchNorm folded as it was when
    the teacher was snapshotted, in eval mode."""
    teacher = build_network(dict(network_opt))
    if fold_bn:
        fold_batchnorm(teacher)
    teacher.load_state_dict(state)
    return teacher.eval()


def config_of_checkpoint(
    config: QuantConfig, network_opt: Mapping[str, Any], checkpoint: Mapping[str, Any], state: Mapping[str, Any]
) -> QuantConfig:
    """``config`` as the quantized ``checkpoint`` (state dict ``state``) of ``network_opt`` was trained. One saved
    before the integer-kernel quantization points existed (no ``integer_points`` in its record, and its state lacks
    quantizers that ``integer_points: true`` gives this network) gets ``integer_points=False``: it loads as the
    network it is (the convolutions that feed float work stay float in an INT8 export; QAT with
    ``quant.integer_points: true`` makes them integer kernels)."""
    record = checkpoint.get(RECORD_KEY)
    quant = record.get('quant') if isinstance(record, Mapping) else None
    if not config.integer_kernel_points or (isinstance(quant, Mapping) and 'integer_points' in quant):
        return config
    probe = build_network(dict(network_opt))
    prepare(probe, network_opt, config)
    if set(probe.state_dict()) <= set(state):
        return config
    logging.getLogger('basicsr').info(
        'checkpoint without the integer-kernel quantization points: loaded as trained (quant.integer_points: false); '
        'QAT with quant.integer_points: true gives a network whose every convolution runs as an integer kernel.')
    return dataclasses.replace(config, integer_points=False)


def does_not_fit(what: str, path: str, network_opt: Mapping[str, Any], error: RuntimeError) -> UserError:
    """The :class:`UserError` for weights ``load_state_dict`` refused (``error``: missing or unexpected keys, other
    shapes), naming the file (as ``what``) and ``network_g``."""
    return UserError(f"{what} {path} does not fit network_g (type {network_opt['type']}): {_one_line(error)}: "
                     'give a checkpoint of this network_g, or the network_g it was trained with.')


def load_networks(
    network_opt: Mapping[str, Any], quant_opt: Mapping[str, Any] | None, path: str, what: str = 'checkpoint'
) -> tuple[nn.Module, nn.Module | None]:
    """``(student, teacher)`` in eval mode; the student is quantized when the checkpoint is, ``teacher`` is ``None``
    for a plain FP32 checkpoint. A file that cannot be read or is not a network checkpoint (:func:`read_checkpoint`),
    one trained with other ``network_g`` / ``quant`` options than these (:func:`check_training_record`) or one
    whose weights do not fit ``network_g`` (:func:`does_not_fit`) is a :class:`UserError` naming it as ``what``."""
    checkpoint = read_checkpoint(path, what)
    config = QuantConfig.from_options(quant_opt)
    check_training_record(checkpoint, network_opt, config, path)
    student = build_network(dict(network_opt))
    state = state_dict_of(checkpoint)
    if is_quantized_state_dict(state):
        prepare(student, network_opt, config_of_checkpoint(config, network_opt, checkpoint, state))
    try:
        student.load_state_dict(state)
    except RuntimeError as error:
        raise does_not_fit(what, path, network_opt, error) from error
    teacher = None
    if 'params_teacher' in checkpoint:
        teacher = build_teacher(network_opt, checkpoint['params_teacher'], config.fold_bn)
    return student.eval(), teacher
