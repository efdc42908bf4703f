"""Pre-flight check of a QDR / BasicSR options YAML: one actionable line per mistake, before any training starts.

    opt = check_options_file('options/qdr_denoise.yml')          # raises OptionsError, returns the parsed options
    opt = check_options_file('x.yml', force_yml=['train:total_iter=100'])   # basicsr's --force_yml applied first

Every problem in the options raises :class:`~qdr_plugin.option_rules.OptionsError` (a
:class:`~qdr_plugin.errors.UserError`) with one line of the form

    options error at <key path>: <problem> (got <value!r>). <fix>

e.g. ``options error at train.dfd_opt.laeyr: unknown key 'laeyr' (got 'bottleneck'). Did you mean 'layer'? ...``;
an image that cannot be read raises a :class:`~qdr_plugin.errors.UserError` naming the file.

This module is a driver: the rules of each block live with the code that reads it, and it calls them --

* top level and ``name``, ``path``, ``network_g`` against the arch's signature, ``val``, ``logger`` (the blocks
  basicsr itself reads: basicsr 1.4.2's own keys, any other refused with the closest one) --
  :mod:`qdr_plugin.basicsr_options`; ``network_g`` then goes to the arch class's own ``check_options(opt, path)``
  if it has one (EFM, DnCNN);
* ``quant:`` -- :meth:`QuantConfig.from_options <qdr_plugin.quant.config.QuantConfig.check_options>`;
* each ``datasets`` entry -- the registered dataset class's ``check_options(opt, path, base_dir)`` (any dataset
  class that has one; its ``lq_channels(opt, path)``, if any, is compared with ``network_g``'s input channels),
  then, for every dataset, basicsr's data-loader keys (:func:`qdr_plugin.data.dataset_options.check_loader_options`);
* ``train:`` -- the model class's ``check_train_options(train, path)`` (QDRModel's:
  :func:`qdr_plugin.models.train_options.check_train_options`);
* ``--force_yml`` entries, applied to the parsed options before the check -- :mod:`qdr_plugin.force_yml`.

Written here are the rules across blocks (a dataset's channels and scale against ``network_g``, ``total_iter: 0``
without a network to start from). Then come the checks that look past the YAML, in this order:

1. the images (:func:`_check_images`): each dataset class's ``check_images(opt, path, base_dir)`` -- file headers
   of training images against ``gt_size`` (and ``quant.calib_size``), every validation image decoded once;
2. the network (:func:`qdr_plugin.network_check.check_network_built`), built once on the ``meta`` device (no
   memory, no compute): ``train.dfd_opt`` layers the network does not have, the memory a training step needs against
   the memory available (:func:`qdr_plugin.utils.complexity.estimate_training_memory`; ``train.memory_check: false``
   turns it off), and, with the quantizer rewrites applied, ``quant.keep_fp32`` patterns that match no quantizable
   layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from os import path as osp
from pathlib import Path
from typing import Any

import yaml
from basicsr.utils.options import ordered_yaml
from basicsr.utils.registry import DATASET_REGISTRY

from qdr_plugin.archs.basicsr_defaults import INPUT_CHANNEL_KEYS
from qdr_plugin.basicsr_options import check_logger, check_network, check_path, check_top_level, check_val
from qdr_plugin.data.dataset_options import check_loader_options
from qdr_plugin.force_yml import apply_force_yml, from_force_yml
from qdr_plugin.network_check import check_network_built, is_qdr
from qdr_plugin.option_rules import (
    MISSING,
    OptionsError,
    OptionsPathError,
    check_registered,
    did_you_mean,
    is_int,
    join,
    looked_in,
    lookup,
    need_dict,
    resolve,
)
from qdr_plugin.quant.config import QuantConfig

__all__ = ['OptionsError', 'apply_force_yml', 'check_options', 'check_options_file']

COPIED_INTO_DATASETS = ('scale',)
"""Top-level keys basicsr copies into every dataset block; a dataset's problem with one is reported at the top."""


def _phase(key: str) -> str:
    return key.split('_')[0]


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
        given = _as_basicsr_gives(opt, key, dataset)
        if hasattr(cls, 'check_options'):
            _check_own_rules(cls, given, path, base_dir, opt, dataset)
        else:
            _check_roots_exist(given, path, base_dir)
        _check_against_network(cls, given, path, network, opt)
        check_loader_options(given, path, phase)


def _as_basicsr_gives(opt: Mapping, key: Any, dataset: Mapping) -> dict:
    """A ``datasets`` entry as basicsr hands it to the dataset class: ``phase`` set, top-level keys copied in."""
    return {**dataset, 'phase': _phase(str(key)), **{k: opt[k] for k in COPIED_INTO_DATASETS if k in opt}}


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


def _check_training_happens(opt: Mapping) -> None:
    """``total_iter: 0`` trains nothing: only with ``path.pretrain_network_g`` is the saved network more than its
    random initialisation (QDRModel then calibrates its quantizers: a PTQ-style start)."""
    train, paths = opt.get('train') or {}, opt.get('path') or {}
    if train.get('total_iter') == 0 and not paths.get('pretrain_network_g'):
        raise OptionsError('train.total_iter', 'is 0 and path.pretrain_network_g is not set: the run would save an '
                           'untrained, randomly initialised network', 0,
                           'Raise total_iter, or set pretrain_network_g (total_iter: 0 then only calibrates its '
                           'quantizers).')


# --------------------------------------------------------------------------------------------------- images
def _check_images(opt: Mapping, is_train: bool, base_dir: Path, model: Any) -> None:
    """Each dataset class's ``check_images`` (the images against the options, before any training time is spent);
    for QDR training with ``quant.calib_size``, the calibration crops too."""
    for key, dataset in opt['datasets'].items():
        cls = lookup(DATASET_REGISTRY, dataset['type'])
        if hasattr(cls, 'check_images'):
            cls.check_images(_as_basicsr_gives(opt, key, dataset), f'datasets.{key}', base_dir)
    calib_size = (opt.get('quant') or {}).get('calib_size')
    if is_train and calib_size is not None and is_qdr(model):
        _check_calibration_crop(opt, base_dir, calib_size)


def _check_calibration_crop(opt: Mapping, base_dir: Path, size: int) -> None:
    """Calibration crops the training images to ``quant.calib_size``: the train dataset's rules and images with
    that ``gt_size``, a problem with it reported at ``quant.calib_size``."""
    dataset = opt['datasets']['train']
    cls = lookup(DATASET_REGISTRY, dataset['type'])
    given, path = {**_as_basicsr_gives(opt, 'train', dataset), 'gt_size': size}, 'datasets.train'
    try:
        for rule in ('check_options', 'check_images'):
            if hasattr(cls, rule):
                getattr(cls, rule)(given, path, base_dir)
    except OptionsError as err:
        if err.key_path != f'{path}.gt_size':
            raise
        raise OptionsError('quant.calib_size', f'{err.problem} (calibration crops the training images to it)', size,
                           err.fix) from None


# ------------------------------------------------------------------------------------------------- the driver
def check_options(opt: dict, is_train: bool, base_dir: Path) -> None:
    """Check parsed options (as basicsr reads them, before it adds its own keys); raise :class:`OptionsError`.

    Args:
        opt: the options mapping read from the YAML.
        is_train: ``True`` for ``basicsr train`` (``train``, ``logger`` and a train dataset are required, the
            ``train:`` block goes to the model's ``check_train_options`` and the memory of training is estimated),
            ``False`` for ``basicsr test``.
        base_dir: the directory relative paths start from (basicsr's: the current working directory).
    """
    if not isinstance(opt, Mapping):
        raise OptionsError('<top level>', 'the options file must be a YAML mapping', opt,
                           'Write key: value pairs (name:, model_type:, network_g:, ...).')
    base_dir = Path(base_dir)
    model = check_top_level(opt)
    check_path(opt, base_dir)
    network = check_network(opt)
    QuantConfig.from_options(opt.get('quant'))
    _check_datasets(opt, is_train, base_dir, network)
    if is_train and hasattr(model, 'check_train_options'):
        train = need_dict(opt, '', 'train', required=True, example='train: {total_iter: ..., optim_g: ..., ...}')
        model.check_train_options(train, 'train')
    if is_train:
        _check_training_happens(opt)
    check_val(opt, is_train, model)
    check_logger(opt, is_train)
    _check_images(opt, is_train, base_dir, model)
    check_network_built(opt, is_train, model)


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


def check_options_file(path: str, is_train: bool = True, force_yml: Iterable[str] | None = None) -> dict:
    """Read an options YAML as basicsr does, apply ``--force_yml`` entries (:func:`apply_force_yml`) and check the
    result (relative paths against the current directory).

    Returns the parsed options (the entries applied); raises :class:`OptionsError` with one line naming the key
    path (a problem with a value an entry set says so).
    """
    text = _read_text(Path(path), str(path))
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
    applied = apply_force_yml(opt, force_yml) if force_yml and isinstance(opt, dict) else {}
    try:
        check_options(opt, is_train, Path.cwd())
    except OptionsError as err:
        entry = next((e for key, e in applied.items() if err.key_path == key or err.key_path.startswith(f'{key}.')),
                     None)
        if entry is None:
            raise
        raise from_force_yml(err, entry) from None
    return opt


def _read_text(file: Path, given: str) -> str:
    """The options file's text; a missing file, a folder or binary data is refused."""
    if file.is_dir():
        raise OptionsError('-opt', 'is a folder, not an options file', given, 'Give the path of the options .yml file.')
    if not file.is_file():
        raise OptionsError('-opt', 'options file not found', given,
                           f'Check the path (relative to the working directory {Path.cwd()}).')
    data = file.read_bytes()
    if b'\0' not in data:
        try:
            return data.decode('utf-8')
        except UnicodeDecodeError:
            pass  # binary data: refused below
    raise OptionsError('-opt', 'is a binary file, not an options YAML', given,
                       'Give the options .yml file (e.g. options/qdr_denoise.yml), not a checkpoint, image or archive.')
