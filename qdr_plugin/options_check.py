"""Pre-flight check of a QDR / BasicSR options YAML: one actionable line per mistake, before any data is read.

    opt = check_options_file('options/qdr_denoise.yml')          # raises OptionsError, returns the parsed options

Every problem raises :class:`~qdr_plugin.option_rules.OptionsError` (a ``ValueError``) with one line of the form

    options error at <key path>: <problem> (got <value!r>). <fix>

e.g. ``options error at train.dfd_opt.laeyr: unknown key 'laeyr' (got 'bottleneck'). Did you mean 'layer'? ...``.

This module is a driver: the rules of each block live with the code that reads it, and it calls them --

* ``quant:`` -- :meth:`QuantConfig.from_options <qdr_plugin.quant.config.QuantConfig.check_options>`;
* each ``datasets`` entry -- the registered dataset class's ``check_options(opt, path, base_dir)`` (any dataset
  class that has one; its ``lq_channels(opt, path)``, if any, is compared with ``network_g``'s input channels),
  then, for every dataset, basicsr's data-loader keys (:func:`qdr_plugin.data.dataset_options.check_loader_options`);
* ``train:`` -- the model class's ``check_train_options(train, path)`` (QDRModel's:
  :func:`qdr_plugin.models.train_options.check_train_options`).

Written here are only the rules of the blocks basicsr itself reads (top level, ``path``, ``network_g`` against the
arch's signature, ``val``, ``logger``) and the ones across blocks (a dataset's channels and scale against
``network_g``). Nothing reads image data or builds a network: the checks look at the YAML, at the registries
basicsr fills on import, at signatures (``inspect.signature``) and at the file system (folder listings,
meta-info files, ``pretrain_network_g``, ``resume_state``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from os import path as osp
from pathlib import Path
from typing import Any

import torch
import yaml
from basicsr.utils.options import ordered_yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from qdr_plugin.archs.basicsr_defaults import INPUT_CHANNEL_KEYS
from qdr_plugin.data.dataset_options import check_loader_options
from qdr_plugin.models.qdr_model import QDRModel
from qdr_plugin.option_rules import (
    MISSING,
    OptionsError,
    OptionsPathError,
    check_against_signature,
    check_registered,
    did_you_mean,
    is_int,
    join,
    looked_in,
    lookup,
    need_bool,
    need_dict,
    need_int,
    registered_names,
    resolve,
    signature,
)
from qdr_plugin.quant.config import QuantConfig

__all__ = ['OptionsError', 'check_options', 'check_options_file']

OUR_BLOCKS = ('quant', 'network_g', 'datasets', 'train', 'val', 'logger', 'path')
"""Top-level blocks whose misspellings are refused (other unknown top-level keys are the user's own)."""

BASICSR_TOP_LEVEL = (
    'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'dist', 'rank', 'world_size', 'auto_resume',
    'is_train', 'root_path', 'dist_params', 'find_unused_parameters', 'network_d',
)

COPIED_INTO_DATASETS = ('scale',)
"""Top-level keys basicsr copies into every dataset block; a dataset's problem with one is reported at the top."""

_TYPO_CUTOFF = 0.75


def _phase(key: str) -> str:
    return key.split('_')[0]


# ------------------------------------------------------------------------------------- blocks basicsr reads
def _check_top_level(opt: Mapping) -> type | None:
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
    name = opt.get('name', MISSING)
    if not isinstance(name, str) or not name.strip():
        raise OptionsError('name', 'must be a non-empty string (the experiment name)', name,
                           'Add name: my_experiment (runs go to experiments/<name>/).')
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


def _check_path(opt: Mapping, base_dir: Path) -> None:
    block = need_dict(opt, '', 'path', required=True, example='path: {pretrain_network_g: ~, strict_load_g: true}')
    for key, value in block.items():
        if not (isinstance(key, str) and ('pretrain_network' in key or 'resume_state' in key)) or value is None:
            continue
        if not isinstance(value, str):
            raise OptionsError(f'path.{key}', 'must be a file path or ~', value, f'Write {key}: <file> or {key}: ~.')
        if not osp.isfile(resolve(value, base_dir)):
            raise OptionsPathError(f'path.{key}', f'file not found{looked_in(value, base_dir)}', value,
                                   'Fix the path (relative paths start from the working directory) or set '
                                   f'{key}: ~.')
    need_bool(block, 'path', 'strict_load_g')


def _check_network(opt: Mapping) -> dict:
    """``network_g`` against its arch's signature; returns it with the arch's defaults filled in."""
    block = need_dict(opt, '', 'network_g', required=True, example='network_g: {type: EFM, in_ch: 1}')
    arch = check_registered(block, 'network_g', ARCH_REGISTRY, 'arch')
    check_against_signature(block, 'network_g', arch)
    sig = signature(arch)
    defaults = {n: p.default for n, p in sig.parameters.items() if p.default is not p.empty} if sig else {}
    return {**defaults, **block}


def _check_val(opt: Mapping, is_train: bool, model: type) -> None:
    val = need_dict(opt, '', 'val', required=not is_train, example='val: {save_img: false, metrics: {...}}')
    if val is None:
        return
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
        check_against_signature(metric, path, func, given_by_caller=('img', 'img2'))


def _check_logger(opt: Mapping, is_train: bool) -> None:
    logger = need_dict(opt, '', 'logger', required=is_train,
                       example='logger: {print_freq: 100, save_checkpoint_freq: 1000, use_tb_logger: true}')
    if logger is None:
        return
    need_int(logger, 'logger', 'print_freq', 1, required=is_train, example='100')
    need_int(logger, 'logger', 'save_checkpoint_freq', 1, required=is_train, example='1000')
    need_bool(logger, 'logger', 'use_tb_logger')


# ------------------------------------------------------------------------------------------------- datasets
def _check_datasets(opt: Mapping, is_train: bool, base_dir: Path, network: Mapping) -> None:
    block = need_dict(opt, '', 'datasets', required=True, example='datasets: {train: {...}, val: {...}}')
    if is_train and 'train' not in block:
        raise OptionsError('datasets.train', 'a training run needs a train dataset', MISSING,
                           did_you_mean('train', [k for k in block if isinstance(k, str)], 0.7)
                           or 'Add datasets: train: {...}.')
    for key, dataset in block.items():
        path, phase = f'datasets.{key}', _phase(str(key))
        if is_train and key != 'train' and phase != 'val':
            raise OptionsError(path, "basicsr train accepts only the dataset keys 'train' and 'val*'", key,
                               'Rename it to train, val or val_<something>.')
        if not is_train and phase not in ('train', 'val', 'test'):
            raise OptionsError(path, "the phase (key up to the first '_') must be train, val or test", key,
                               'Rename it to test, test_<something> or val_<something>.')
        if not isinstance(dataset, Mapping):
            raise OptionsError(path, 'must be a block of key: value pairs', dataset, f'Write {key}: {{type: ...}}.')
        cls = check_registered(dataset, path, DATASET_REGISTRY, 'dataset')
        if not isinstance(dataset.get('name'), str):
            raise OptionsError(f'{path}.name', 'must be a string (basicsr logs it)', dataset.get('name', MISSING),
                               f'Add name: {key}_set.')
        given = {**dataset, 'phase': phase, **{k: opt[k] for k in COPIED_INTO_DATASETS if k in opt}}
        if hasattr(cls, 'check_options'):
            _check_own_rules(cls, given, path, base_dir, opt, dataset)
        else:
            _check_roots_exist(given, path, base_dir)
        _check_against_network(cls, given, path, network, opt)
        check_loader_options(given, path, phase)


def _check_own_rules(cls: type, given: Mapping, path: str, base_dir: Path, opt: Mapping, dataset: Mapping) -> None:
    """The dataset class's own rules, on the block as basicsr hands it over (``phase`` set, top-level keys copied
    in); a problem with a copied key is reported where the user writes it."""
    try:
        cls.check_options(given, path, base_dir)
    except OptionsError as err:
        copied = next((k for k in COPIED_INTO_DATASETS if err.key_path == f'{path}.{k}'), None)
        if copied is not None and (copied in opt or copied not in dataset):
            raise err.at(copied) from None
        raise


def _check_roots_exist(dataset: Mapping, path: str, base_dir: Path) -> None:
    """A dataset without rules of its own: its disk / LMDB ``dataroot_gt`` / ``dataroot_lq`` must exist."""
    backend_opt = dataset.get('io_backend') or {}
    backend = backend_opt.get('type', 'disk') if isinstance(backend_opt, Mapping) else None
    for root_key in ('dataroot_gt', 'dataroot_lq'):
        root = dataset.get(root_key)
        if backend in ('disk', 'lmdb') and isinstance(root, str) and not osp.exists(resolve(root, base_dir)):
            raise OptionsPathError(f'{path}.{root_key}', f'not found{looked_in(root, base_dir)}', root,
                                   'Fix the path: relative paths start from the working directory.')


def _check_against_network(cls: type, dataset: Mapping, path: str, network: Mapping, opt: Mapping) -> None:
    """The dataset's ``lq`` channels (``cls.lq_channels``, if it tells them) and its scale against ``network_g``
    (``network``: with the arch's defaults)."""
    if hasattr(cls, 'lq_channels'):
        key, channels = cls.lq_channels(dataset, path)
        net_key = next((k for k in INPUT_CHANNEL_KEYS if network.get(k) is not None), None)
        if net_key is not None and is_int(network[net_key]) and network[net_key] != channels:
            raise OptionsError(f'{path}.{key}', f'gives {channels}-channel images, network_g.{net_key} is '
                               f'{network[net_key]}', dataset.get(key, MISSING),
                               'Give the dataset and the network the same number of channels.')
    scale, upscale = dataset.get('scale'), network.get('upscale')
    if is_int(scale) and is_int(upscale) and scale != upscale:
        raise OptionsError('scale' if 'scale' in opt else f'{path}.scale',
                           f'does not match network_g.upscale ({upscale})', scale,
                           'Give the network and the top-level scale the same factor.')


# ------------------------------------------------------------------------------------------------- the driver
def check_options(opt: dict, is_train: bool, base_dir: Path) -> None:
    """Check parsed options (as basicsr reads them, before it adds its own keys); raise :class:`OptionsError`.

    Args:
        opt: the options mapping read from the YAML.
        is_train: ``True`` for ``basicsr train`` (``train``, ``logger`` and a train dataset are required and the
            ``train:`` block goes to the model's ``check_train_options``), ``False`` for ``basicsr test``.
        base_dir: the directory relative paths start from (basicsr's: the current working directory).
    """
    if not isinstance(opt, Mapping):
        raise OptionsError('<top level>', 'the options file must be a YAML mapping', opt,
                           'Write key: value pairs (name:, model_type:, network_g:, ...).')
    base_dir = Path(base_dir)
    model = _check_top_level(opt)
    _check_path(opt, base_dir)
    network = _check_network(opt)
    QuantConfig.from_options(opt.get('quant'))
    _check_datasets(opt, is_train, base_dir, network)
    if is_train and hasattr(model, 'check_train_options'):
        train = need_dict(opt, '', 'train', required=True, example='train: {total_iter: ..., optim_g: ..., ...}')
        model.check_train_options(train, 'train')
    _check_val(opt, is_train, model)
    _check_logger(opt, is_train)


def _duplicate_keys(node: yaml.Node, path: str = '') -> tuple[str, int, int] | None:
    """The first key that a mapping repeats (PyYAML silently keeps the last): ``(key path, line, line)``."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                return join(path, key), seen[key], line
            seen[key] = line
            found = _duplicate_keys(value_node, join(path, key))
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_keys(item, f'{path}[{i}]')
            if found:
                return found
    return None


def check_options_file(path: str, is_train: bool = True) -> dict:
    """Read an options YAML as basicsr does and check it (relative paths against the current directory).

    Returns the parsed options; raises :class:`OptionsError` with one line naming the key path.
    """
    file = Path(path)
    if not file.is_file():
        raise OptionsError('-opt', 'options file not found', str(path),
                           f'Check the path (relative to the working directory {Path.cwd()}).')
    text = file.read_text(encoding='utf-8')
    try:
        opt = yaml.load(text, Loader=ordered_yaml()[0])
        duplicate = _duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as err:
        mark = getattr(err, 'problem_mark', None)
        where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark is not None else ''
        problem = getattr(err, 'problem', None) or str(err)
        raise OptionsError('-opt', f'not valid YAML{where}: {problem}', str(path),
                           'Fix the indentation / quoting there.') from err
    if duplicate is not None:
        key_path, first, second = duplicate
        raise OptionsError(key_path, f'appears twice (lines {first} and {second}); YAML keeps only the last',
                           key_path.rsplit('.', 1)[-1], 'Merge the two into one.')
    check_options(opt, is_train, Path.cwd())
    return opt
