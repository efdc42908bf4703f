"""The pre-flight check of an mmengine config, before the Runner is built: one line per mistake, as for the YAML.

The blocks that hold the YAML's blocks go to the same rules (:mod:`qdr_plugin.options_check`'s callees), with the
key path of the config:

* ``model`` -- ``type='QDRRestorer'``, its keys against the constructor; ``model.network_g``
  (:func:`qdr_plugin.basicsr_options.check_network`), ``model.quant`` (``QuantConfig.check_options``),
  ``model.train`` (:func:`qdr_plugin.models.train_options.check_train_options`; its ``total_iter`` is
  ``train_cfg.max_iters``, its ``optim_g`` is ``optim_wrapper.optimizer``), then the network-level rules
  (:func:`qdr_plugin.network_check.check_network_built`: DFD layers, memory, ``keep_fp32`` patterns);
* each ``*_dataloader.dataset`` -- a ``BasicSRDataset``'s ``opt`` by its basicsr dataset class's own rules and
  images, an ``ImageFolderDataset``'s folders must exist;
* ``train_dataloader`` with basicsr's ``EnlargedSampler``: ``ratio`` a positive integer and ``drop_last=True``, as
  basicsr's training loader (:mod:`qdr_plugin.mm.data.basicsr_order`);
* ``load_from`` must exist; ``train.curriculum`` is refused (the BasicSR front has it).

A problem raises :class:`~qdr_plugin.option_rules.OptionsError`: ``options error at model.train.dfd_opt.laeyr:
unknown key 'laeyr' ... Did you mean 'layer'?``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from basicsr.utils.registry import DATASET_REGISTRY

from qdr_plugin.basicsr_options import check_network
from qdr_plugin.models import QDRModel
from qdr_plugin.models.train_options import check_train_options
from qdr_plugin.network_check import check_network_built
from qdr_plugin.option_rules import (
    MISSING,
    OptionsError,
    OptionsPathError,
    check_against_signature,
    check_registered,
    looked_in,
    need_dict,
    need_int,
    resolve,
)
from qdr_plugin.quant.config import QuantConfig

from .model import QDRRestorer

__all__ = ['check_config']

MOVED = {'train.total_iter': 'train_cfg.max_iters', 'train.optim_g': 'optim_wrapper.optimizer',
         'train.scheduler': 'param_scheduler'}
"""Keys of the YAML's ``train:`` that the config holds elsewhere: where a problem with them is reported."""

MODEL_TYPES = ('QDRRestorer', 'qdr_plugin.QDRRestorer')


def _at_model(err: OptionsError) -> OptionsError:
    """A rule's error on a YAML key path (``train.dfd_opt``), reported at the config's (``model.train.dfd_opt``)."""
    for yaml_key, cfg_key in MOVED.items():
        if err.key_path == yaml_key or err.key_path.startswith(f'{yaml_key}.'):
            return err.at(cfg_key + err.key_path[len(yaml_key):])
    return err.at(f'model.{err.key_path}')


def _yaml_view(cfg: Mapping, model: Mapping) -> dict[str, Any]:
    """The options the YAML front would read for this config (``network_g``, ``quant``, ``train``)."""
    train = dict(model.get('train') or {})
    train_cfg = cfg.get('train_cfg') or {}
    if 'max_iters' in train_cfg:
        train['total_iter'] = train_cfg['max_iters']
    optimizer = (cfg.get('optim_wrapper') or {}).get('optimizer')
    if optimizer is not None:
        train['optim_g'] = dict(optimizer)
    scheduler = cfg.get('param_scheduler')
    if isinstance(scheduler, Mapping) and scheduler.get('type') == 'MultiStepLR':  # the one both fronts share
        train['scheduler'] = {'type': 'MultiStepLR', 'milestones': scheduler.get('milestones'),
                              'gamma': scheduler.get('gamma', 0.1)}
    return {'network_g': dict(model['network_g']), 'quant': model.get('quant'), 'train': train,
            'datasets': {'train': _train_batch_view(cfg)}}


def _train_batch_view(cfg: Mapping) -> dict[str, Any]:
    """The training batch as the YAML would give it (``batch_size_per_gpu``, ``gt_size``), for the memory check."""
    loader = cfg.get('train_dataloader')
    if not isinstance(loader, Mapping):
        return {}
    dataset = loader.get('dataset') or {}
    while isinstance(dataset, Mapping) and dataset.get('type') == 'RepeatDataset':
        dataset = dataset.get('dataset') or {}
    view = {'batch_size_per_gpu': loader.get('batch_size')}
    if dataset.get('type') == 'BasicSRDataset':
        view['gt_size'] = (dataset.get('opt') or {}).get('gt_size')
    for step in dataset.get('pipeline') or []:
        if isinstance(step, Mapping) and step.get('type') == 'PairedRandomCrop':
            view['gt_size'] = step.get('gt_size')
    return view


def _check_model(cfg: Mapping, is_train: bool) -> None:
    model = need_dict(cfg, '', 'model', required=True, example="model = dict(type='QDRRestorer', network_g=...)")
    if model.get('type') not in MODEL_TYPES:
        raise OptionsError('model.type', 'the mmengine front trains QDRRestorer', model.get('type', MISSING),
                           "Write model = dict(type='QDRRestorer', network_g=..., quant=..., train=...).")
    check_against_signature(model, 'model', QDRRestorer)
    opt = _yaml_view(cfg, model)
    try:
        check_network(opt)
        QuantConfig.check_options(opt['quant'])
        if is_train:
            if 'curriculum' in opt['train']:
                raise OptionsError('train.curriculum', 'is not supported by the mmengine front', opt['train'],
                                   'Train the curriculum with basicsr train -opt <yml>, or remove it.')
            check_train_options(opt['train'], 'train', scheduler_required=False)
        check_network_built(opt, is_train, QDRModel)
    except OptionsError as err:
        raise _at_model(err) from None


def _datasets(cfg: Mapping, is_train: bool) -> list[tuple[str, Mapping]]:
    """``(key path, dataset block)`` of each data loader the run uses (a ``RepeatDataset`` unwrapped)."""
    loaders = ['train_dataloader', 'val_dataloader'] if is_train else ['test_dataloader']
    found = []
    for name in loaders:
        loader = cfg.get(name)
        if not isinstance(loader, Mapping):
            if name == loaders[0]:
                raise OptionsError(name, 'required block is missing', loader if loader is not None else MISSING,
                                   f'Add {name} = dict(dataset=..., batch_size=..., ...) (see configs/_base_).')
            continue
        path, dataset = f'{name}.dataset', need_dict(loader, name, 'dataset', required=True)
        while dataset.get('type') == 'RepeatDataset':
            path, dataset = f'{path}.dataset', need_dict(dataset, path, 'dataset', required=True)
        found.append((path, dataset))
    return found


def _check_dataset(path: str, dataset: Mapping, base_dir: Path, is_train_set: bool) -> None:
    kind = dataset.get('type')
    if kind == 'BasicSRDataset':
        opt = need_dict(dataset, path, 'opt', required=True, example="opt=dict(type='GaussianNoiseDataset', ...)")
        given = {'name': opt.get('type', 'dataset'), 'phase': 'train' if is_train_set else 'val', **opt}
        cls = check_registered(opt, f'{path}.opt', DATASET_REGISTRY, 'dataset')
        for rule in ('check_options', 'check_images'):
            if hasattr(cls, rule):
                getattr(cls, rule)(given, f'{path}.opt', base_dir)
    elif kind == 'ImageFolderDataset':
        root = dataset.get('data_root', '')
        for key in ('gt_folder', 'lq_folder'):
            folder = dataset.get(key)
            if key == 'gt_folder' and not isinstance(folder, str):
                raise OptionsError(f'{path}.gt_folder', 'must be the folder of the clean images', folder or MISSING,
                                   "Write gt_folder='datasets/demo/train'.")
            full = str(Path(root) / folder) if isinstance(folder, str) else None
            if full is not None and not Path(resolve(full, base_dir)).is_dir():
                raise OptionsPathError(f'{path}.{key}', f'folder not found{looked_in(full, base_dir)}', folder,
                                       'Fix the path: relative paths start from the working directory.')


def _check_basicsr_order(loader: Mapping) -> None:
    """The training loader of basicsr's data order: ``EnlargedSampler(ratio)`` and ``drop_last=True``."""
    sampler = loader.get('sampler')
    if not isinstance(sampler, Mapping) or sampler.get('type') != 'EnlargedSampler':
        return
    need_int(sampler, 'train_dataloader.sampler', 'ratio', 1, example='50')
    if loader.get('drop_last') is not True:
        raise OptionsError('train_dataloader.drop_last', 'must be True with EnlargedSampler (basicsr drops the last '
                           'incomplete batch of each epoch)', loader.get('drop_last', MISSING),
                           'Write drop_last=True in train_dataloader.')


def check_config(cfg: Mapping, is_train: bool, base_dir: str | Path) -> None:
    """Check an mmengine config (:class:`mmengine.Config` or a mapping) of the QDR front; raise
    :class:`OptionsError` naming the key path, the value, the problem and the fix."""
    base_dir = Path(base_dir)
    _check_model(cfg, is_train)
    for i, (path, dataset) in enumerate(_datasets(cfg, is_train)):
        _check_dataset(path, dataset, base_dir, is_train and i == 0)
    if is_train:
        _check_basicsr_order(cfg['train_dataloader'])
    load_from = cfg.get('load_from')
    if load_from and not Path(resolve(str(load_from), base_dir)).is_file():
        raise OptionsPathError('load_from', f'checkpoint not found{looked_in(str(load_from), base_dir)}', load_from,
                               'Give an existing mmengine checkpoint (work_dirs/<name>/iter_<n>.pth) or None.')
