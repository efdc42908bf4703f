"""Check a QDR / BasicSR options YAML before anything is built, with one actionable message per mistake.

    opt = check_options_file('options/qdr_denoise.yml')          # raises OptionsError, returns the parsed options

Every problem raises :class:`OptionsError` (a ``ValueError``) with one line of the form

    options error at <key path>: <problem> (got <value!r>). <fix>

e.g. ``options error at train.dfd_opt.laeyr: unknown key 'laeyr' (got 'bottleneck'). Did you mean 'layer'? ...``.
Nothing here reads image data or builds a network: the checks look at the YAML, at the registries basicsr fills on
import (arch / model / dataset / loss / metric names), at constructor signatures (``inspect.signature``) and at the
file system (``dataroot_gt``, ``pretrain_network_g``, ``resume_state``).
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import yaml
from basicsr.models import lr_scheduler
from basicsr.utils.options import ordered_yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

from qdr_plugin.data.bicubic_sr_dataset import COLOR_MODES as SR_COLOR_MODES
from qdr_plugin.data.bicubic_sr_dataset import SCALES as SR_SCALES
from qdr_plugin.data.image_source import IMG_EXTENSIONS
from qdr_plugin.losses.lmr import LMR_TYPES, LearnableMagnitudeReweighting
from qdr_plugin.models.qdr_model import DFD_KEYS, QDRModel
from qdr_plugin.quant.config import QuantConfig

__all__ = ['OptionsError', 'check_options', 'check_options_file']


class _Missing:
    """Stands for a key that is not in the file; shows as ``(got nothing)``."""

    def __repr__(self) -> str:
        return 'nothing'

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


def _plain(value: Any) -> Any:
    """``OrderedDict`` (basicsr's YAML loader) as ``dict``, so messages show ``{'bits': 8}``."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class OptionsError(ValueError):
    """A mistake in an options file: ``key_path``, the ``value`` found there, the ``problem`` and the ``fix``."""

    def __init__(self, key_path: str, problem: str, value: Any = MISSING, fix: str = '') -> None:
        self.key_path, self.problem, self.value, self.fix = key_path, problem, _plain(value), fix
        message = f'options error at {key_path}: {problem} (got {self.value!r}).'
        if fix:
            message += f' {fix}'
        super().__init__(' '.join(message.split()))  # one line, whatever the value's repr holds


# ------------------------------------------------------------------------------------------------- the key sets
OUR_BLOCKS = ('quant', 'network_g', 'datasets', 'train', 'val', 'logger', 'path')
"""Top-level blocks whose misspellings are refused (other unknown top-level keys are the user's own)."""

BASICSR_TOP_LEVEL = (
    'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'dist', 'rank', 'world_size', 'auto_resume',
    'is_train', 'root_path', 'dist_params', 'find_unused_parameters', 'network_d',
)

GAUSSIAN_NOISE_KEYS = (
    'dataroot_gt', 'io_backend', 'in_ch', 'sigma', 'sigma_range', 'gt_size', 'use_hflip', 'use_rot',
    'noise_seed_offset',
)
"""``GaussianNoiseDataset``'s own keys (its docstring), plus basicsr's generic dataset keys below."""

BICUBIC_SR_KEYS = (
    'dataroot_gt', 'dataroot_lq', 'meta_info_file', 'io_backend', 'color', 'gt_size', 'use_hflip', 'use_rot',
)
"""``BicubicSRDataset``'s own keys (its docstring; ``scale`` and ``filename_tmpl`` are generic)."""

GENERIC_DATASET_KEYS = (
    'name', 'type', 'phase', 'num_worker_per_gpu', 'batch_size_per_gpu', 'dataset_enlarge_ratio', 'prefetch_mode',
    'num_prefetch_queue', 'pin_memory', 'persistent_workers', 'use_shuffle', 'filename_tmpl', 'scale',
)

QDR_TRAIN_KEYS = (
    'fp32_warmup_iter', 'total_iter', 'warmup_iter', 'optim_g', 'scheduler', 'pixel_opt', 'dfd_opt',
    'output_kd_opt', 'lmr_opt', 'ema_decay',
)
"""``train:`` keys QDRModel reads; an unknown key close to one of them (``dfd_otp``) is a typo."""

OPTIMIZERS = {'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW, 'SGD': torch.optim.SGD}
SCHEDULERS = {
    'MultiStepLR': lr_scheduler.MultiStepRestartLR,
    'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
    'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR,
}
NOT_A_DISTANCE = ('GANLoss', 'MultiScaleGANLoss', 'PerceptualLoss', 'WeightedTVLoss')
LOSS_REDUCTIONS = ('mean', 'sum')

_TYPO_CUTOFF = 0.75
_FLOAT_HINT = "YAML reads 1e-3 as a string: write 1.0e-3 or !!float 1e-3."


# ----------------------------------------------------------------------------------------------------- helpers
def _join(path: str, key: Any) -> str:
    return f'{path}.{key}' if path else str(key)


def _did_you_mean(word: Any, choices: Iterable[str], cutoff: float = 0.6) -> str:
    choices = sorted(set(choices))
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=cutoff)
    listing = f"Valid: {', '.join(choices)}." if len(choices) <= 25 else ''
    return (f"Did you mean '{close[0]}'? {listing}" if close else listing).strip()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_fix(value: Any, what: str) -> str:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return f'Write {what}.'
        if 'e' in value.lower():
            return f'Write {what}; {_FLOAT_HINT}'
        return f'Write {what} without quotes.'
    return f'Write {what}.'


def _need_int(block: Mapping, path: str, key: str, minimum: int, required: bool = False, example: str = '') -> None:
    value = block.get(key, MISSING)
    if value is MISSING or value is None:
        if required:
            raise OptionsError(_join(path, key), 'required key is missing', value,
                               f'Add {key}: {example or "<integer >= " + str(minimum) + ">"}.')
        return
    if not _is_int(value) or value < minimum:
        bound = 'a positive integer' if minimum == 1 else f'an integer >= {minimum}'
        raise OptionsError(_join(path, key), f'must be {bound}', value,
                           _number_fix(value, f'{key}: {example or minimum}'))


def _need_number(block: Mapping, path: str, key: str, *, positive: bool = False, required: bool = False,
                 example: str = '1.0') -> None:
    value = block.get(key, MISSING)
    if value is MISSING or value is None:
        if required:
            raise OptionsError(_join(path, key), 'required key is missing', value, f'Add {key}: {example}.')
        return
    bad = not _is_number(value) or (value <= 0 if positive else value < 0)
    if bad:
        raise OptionsError(_join(path, key), f'must be a number {"> 0" if positive else ">= 0"}', value,
                           _number_fix(value, f'{key}: {example}'))


def _need_bool(block: Mapping, path: str, key: str) -> None:
    value = block.get(key, MISSING)
    if value is not MISSING and value is not None and not isinstance(value, bool):
        raise OptionsError(_join(path, key), 'must be true or false', value,
                           f'Write {key}: true or {key}: false (unquoted).')


def _need_dict(opt: Mapping, path: str, key: str, required: bool, example: str = '') -> dict | None:
    value = opt.get(key, MISSING)
    if value is MISSING or value is None:
        if required:
            raise OptionsError(_join(path, key), 'required block is missing', value,
                               f'Add a {key}: block{" (" + example + ")" if example else ""}.')
        return None
    if not isinstance(value, Mapping):
        raise OptionsError(_join(path, key), 'must be a block of key: value pairs', value,
                           f'Write {key}: as a mapping{" (" + example + ")" if example else ""}.')
    return dict(value)


def _check_keys(block: Mapping, path: str, valid: Iterable[str]) -> None:
    valid = list(valid)
    for key, value in block.items():
        if key not in valid:
            raise OptionsError(_join(path, key), f'unknown key {key!r}', value,
                               _did_you_mean(key, valid) or 'Remove it.')


def _registry_objects(registry) -> dict[str, Any]:
    return dict(iter(registry))


def _lookup(registry, name: str) -> Any:
    """``registry.get`` without its print: basicsr also finds ``name_basicsr`` (its copies of plugin classes)."""
    objects = _registry_objects(registry)
    return objects.get(name, objects.get(f'{name}_basicsr'))


def _check_registered(block: Mapping, path: str, registry, what: str) -> Any:
    value = block.get('type', MISSING)
    names = [n.removesuffix('_basicsr') for n in _registry_objects(registry)]
    if value is MISSING or value is None:
        raise OptionsError(_join(path, 'type'), f'required key is missing: the {what} name', value,
                           f'Add type: <{what}>. {_did_you_mean("", names)}')
    obj = _lookup(registry, value) if isinstance(value, str) else None
    if obj is None:
        raise OptionsError(_join(path, 'type'), f'no {what} of this name is registered', value,
                           _did_you_mean(value, names) + ' (Plugins register on import: import them first.)')
    return obj


def _signature(obj: Callable) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _check_against_signature(block: Mapping, path: str, obj: Callable, given_by_caller: Iterable[str],
                             ours: Iterable[str] = ()) -> None:
    """Keys of ``block`` (minus ``type`` and ``ours``) must be parameters of ``obj``; required ones present;
    a string where the default is a number or a bool is refused (YAML's ``1e-3`` trap)."""
    sig = _signature(obj)
    if sig is None:
        return
    given_by_caller, ours = set(given_by_caller), set(ours)
    params = {n: p for n, p in sig.parameters.items() if n not in given_by_caller and n != 'self'}
    named = {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    name = getattr(obj, '__name__', str(obj))
    for key, value in block.items():
        if key == 'type' or key in ours:
            continue
        if key not in named:
            if var_kw:
                continue
            raise OptionsError(_join(path, key), f'unknown key {key!r}', value,
                               _did_you_mean(key, ['type', *named, *ours]) + f' ({name} takes no such argument.)')
        default = named[key].default
        if isinstance(value, str) and isinstance(default, (bool, int, float)):
            kind = 'true or false' if isinstance(default, bool) else 'a number'
            raise OptionsError(_join(path, key), f'must be {kind}, not a string', value,
                               _number_fix(value, f'{key}: {default!r}') if kind == 'a number'
                               else f'Write {key}: true or false (unquoted).')
    for key, param in named.items():
        if param.default is inspect.Parameter.empty and key not in block:
            raise OptionsError(_join(path, key), f'required argument of {name} is missing', MISSING,
                               f'Add {key}: <value>.')


def _resolve(value: str, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base_dir / path


def _phase(key: str) -> str:
    return key.split('_')[0]


# ------------------------------------------------------------------------------------------------- the checks
def _check_top_level(opt: Mapping, is_train: bool) -> None:
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
    models = [n.removesuffix('_basicsr') for n in _registry_objects(MODEL_REGISTRY)]
    if not isinstance(model_type, str) or _lookup(MODEL_REGISTRY, model_type) is None:
        raise OptionsError('model_type', 'no model of this name is registered', model_type,
                           _did_you_mean(model_type, models) or 'Use model_type: QDRModel.')
    num_gpu = opt.get('num_gpu', MISSING)
    if num_gpu != 'auto' and (not _is_int(num_gpu) or num_gpu < 0):
        raise OptionsError('num_gpu', "must be an integer >= 0 or 'auto'", num_gpu,
                           "Write num_gpu: 0 for the CPU, or num_gpu: auto (basicsr reads it unconditionally).")
    if _is_int(num_gpu) and num_gpu > 0 and not torch.cuda.is_available():
        raise OptionsError('num_gpu', 'asks for GPUs but torch sees no CUDA device', num_gpu,
                           "Write num_gpu: 0 (CPU) or num_gpu: auto.")
    seed = opt.get('manual_seed')
    if seed is not None and not _is_int(seed):
        raise OptionsError('manual_seed', 'must be an integer', seed, 'Write manual_seed: 0 (or remove it).')


def _check_path(opt: Mapping, base_dir: Path) -> None:
    block = _need_dict(opt, '', 'path', required=True, example='path: {pretrain_network_g: ~, strict_load_g: true}')
    for key, value in block.items():
        if not (isinstance(key, str) and ('pretrain_network' in key or 'resume_state' in key)) or value is None:
            continue
        if not isinstance(value, str):
            raise OptionsError(f'path.{key}', 'must be a file path or ~', value, f'Write {key}: <file> or {key}: ~.')
        if not _resolve(value, base_dir).is_file():
            raise OptionsError(f'path.{key}', f'file not found (looked in {base_dir})', value,
                               f'Fix the path (relative paths start from the working directory) or set {key}: ~.')
    for key in ('strict_load_g',):
        _need_bool(block, 'path', key)


def _check_network(opt: Mapping) -> dict:
    block = _need_dict(opt, '', 'network_g', required=True, example='network_g: {type: EFM, in_ch: 1}')
    arch = _check_registered(block, 'network_g', ARCH_REGISTRY, 'arch')
    _check_against_signature(block, 'network_g', arch, given_by_caller=())
    return block


def _check_quant(opt: Mapping) -> None:
    block = opt.get('quant')
    if block is None:
        return
    if not isinstance(block, Mapping):
        raise OptionsError('quant', 'must be a block of key: value pairs', block, 'Write quant: {bits: 8} or omit it.')
    _check_keys(block, 'quant', [f.name for f in fields(QuantConfig)] + ['bits'])
    if 'percentile' in block and not _is_number(block['percentile']):
        raise OptionsError('quant.percentile', 'must be a number in (50, 100]', block['percentile'],
                           _number_fix(block['percentile'], 'percentile: 99.99'))
    try:
        QuantConfig.from_options(block)
    except (ValueError, TypeError) as err:
        found = re.search(r'quant\.(\w+)', str(err))
        key = found.group(1) if found else None
        if key in ('weight_bits', 'act_bits') and key not in block and 'bits' in block:
            key = 'bits'
        path = f'quant.{key}' if key else 'quant'
        raise OptionsError(path, 'refused by QuantConfig', block.get(key, MISSING) if key else dict(block),
                           str(err)) from err


def _check_loader_keys(block: Mapping, path: str, phase: str) -> None:
    """basicsr's data-loader keys and the flip / rotation switches of the plugin's datasets."""
    for key in ('use_hflip', 'use_rot', 'pin_memory', 'persistent_workers', 'use_shuffle'):
        _need_bool(block, path, key)
    if phase == 'train':
        _need_int(block, path, 'batch_size_per_gpu', 1, required=True, example='8')
        _need_int(block, path, 'num_worker_per_gpu', 0, required=True, example='0')
        _need_number(block, path, 'dataset_enlarge_ratio', positive=True, example='1')
    prefetch = block.get('prefetch_mode')
    if prefetch not in (None, 'cpu', 'cuda'):
        raise OptionsError(f'{path}.prefetch_mode', "must be ~, 'cpu' or 'cuda'", prefetch, 'Write prefetch_mode: ~.')


def _check_image_roots(block: Mapping, path: str, base_dir: Path, roots: Mapping[str, str]) -> None:
    """``io_backend`` and the image folders / LMDBs ``roots`` (``{key: what it holds}``; the first is required and,
    with a ``meta_info_file``, need not hold images itself: the file's lines name them, relative to it)."""
    backend_opt = block.get('io_backend') or {'type': 'disk'}
    if not isinstance(backend_opt, Mapping):
        raise OptionsError(f'{path}.io_backend', 'must be a block', backend_opt, 'Write io_backend: {type: disk}.')
    backend = backend_opt.get('type', 'disk')
    if backend not in ('disk', 'lmdb'):
        raise OptionsError(f'{path}.io_backend.type', "must be 'disk' or 'lmdb'", backend,
                           'Write io_backend: {type: disk} (an image folder) or {type: lmdb}.')
    if backend == 'disk':
        _check_keys(backend_opt, f'{path}.io_backend', ['type'])
    else:
        _check_keys(backend_opt, f'{path}.io_backend', ['type', 'readonly', 'lock', 'readahead', 'map_size',
                                                        'max_readers', 'max_dbs', 'max_spare_txns', 'meminit'])

    for i, (key, what) in enumerate(roots.items()):
        root = block.get(key, MISSING)
        if i > 0 and root in (MISSING, None):
            continue
        if not isinstance(root, str) or not root:
            raise OptionsError(f'{path}.{key}', f'must be the path of the {what} folder', root,
                               f'Add {key}: <folder> (relative paths start from the working directory).')
        folder = _resolve(root, base_dir)
        if not folder.is_dir():
            raise OptionsError(f'{path}.{key}', f'folder not found (looked in {base_dir})', root,
                               'Fix the path: relative paths start from the working directory, as in basicsr.')
        if i == 0 and block.get('meta_info_file') is not None:
            _check_meta_info_file(block, path, base_dir, backend, folder)
        elif backend == 'lmdb':
            missing = [name for name in ('data.mdb', 'meta_info.txt') if not (folder / name).is_file()]
            if missing:
                raise OptionsError(f'{path}.{key}', f'is not a BasicSR LMDB: no {" / ".join(missing)} inside', root,
                                   'Build one with basicsr.utils.lmdb_util.make_lmdb_from_imgs, or use '
                                   'io_backend: {type: disk} for an image folder.')
        else:
            has_images = any(entry.is_file() and not entry.name.startswith('.')
                             and entry.name.lower().endswith(IMG_EXTENSIONS) for entry in os.scandir(folder))
            if not has_images:
                hint = ('It looks like an LMDB: set io_backend: {type: lmdb}.' if (folder / 'meta_info.txt').is_file()
                        else f'Put images ({", ".join(IMG_EXTENSIONS)}) in it; sub-folders are not searched.')
                raise OptionsError(f'{path}.{key}', 'folder holds no images', root, hint)


def _check_meta_info_file(block: Mapping, path: str, base_dir: Path, backend: str, folder: Path) -> None:
    value = block['meta_info_file']
    if backend != 'disk':
        raise OptionsError(f'{path}.meta_info_file', 'is for image folders (an LMDB lists its images itself)', value,
                           'Remove meta_info_file, or use io_backend: {type: disk}.')
    if not isinstance(value, str) or not _resolve(value, base_dir).is_file():
        raise OptionsError(f'{path}.meta_info_file', f'file not found (looked in {base_dir})', value,
                           'Fix the path (relative paths start from the working directory) or remove it.')
    names = [line.split()[0] for line in _resolve(value, base_dir).read_text().splitlines() if line.strip()]
    if not names:
        raise OptionsError(f'{path}.meta_info_file', 'lists no images', value,
                           'Write one image path per line, relative to dataroot_gt.')
    missing = next((name for name in names if not (folder / name).is_file()), None)
    if missing is not None:
        raise OptionsError(f'{path}.meta_info_file', f"lists '{missing}', which is not in dataroot_gt ({folder})",
                           value, 'Fix that line or dataroot_gt: the lines are paths relative to dataroot_gt.')


def _check_gaussian_dataset(block: Mapping, path: str, phase: str, base_dir: Path, net: Mapping) -> None:
    _check_keys(block, path, [*GAUSSIAN_NOISE_KEYS, *GENERIC_DATASET_KEYS])
    in_ch = block.get('in_ch', 1)
    if not _is_int(in_ch) or in_ch not in (1, 3):
        raise OptionsError(f'{path}.in_ch', 'must be 1 (gray) or 3 (colour)', in_ch, 'Write in_ch: 1 or in_ch: 3.')
    arch = _lookup(ARCH_REGISTRY, net.get('type'))
    sig = _signature(arch) if arch is not None else None
    if sig is not None and 'in_ch' in sig.parameters:
        net_in_ch = net.get('in_ch', sig.parameters['in_ch'].default)
        if _is_int(net_in_ch) and net_in_ch != in_ch:
            raise OptionsError(f'{path}.in_ch', f'does not match network_g.in_ch ({net_in_ch})', in_ch,
                               'Give the dataset and the network the same number of channels.')

    sigma, sigma_range = block.get('sigma'), block.get('sigma_range')
    if sigma is not None and sigma_range is not None:
        raise OptionsError(f'{path}.sigma_range', 'sigma and sigma_range are both set', sigma_range,
                           'Keep one: sigma for a fixed noise level, sigma_range: [lo, hi] (train) for a random one.')
    if sigma is None and sigma_range is None:
        raise OptionsError(f'{path}.sigma', 'neither sigma nor sigma_range is set', MISSING,
                           'Add sigma: 25 (noise std on the 0..255 scale), or for training sigma_range: [0, 55].')
    if sigma is not None:
        _need_number(block, path, 'sigma', example='25')
    else:
        if phase != 'train':
            raise OptionsError(f'{path}.sigma_range', f"is for the train dataset only, this one is {phase!r}",
                               sigma_range, 'Validation noise is fixed: set sigma: <value> (one dataset per level).')
        ok = (isinstance(sigma_range, (list, tuple)) and len(sigma_range) == 2
              and all(_is_number(v) for v in sigma_range) and 0 <= sigma_range[0] <= sigma_range[1])
        if not ok:
            raise OptionsError(f'{path}.sigma_range', 'must be [lo, hi] with 0 <= lo <= hi', sigma_range,
                               'Write e.g. sigma_range: [0, 55] (0..255 scale).')
    offset = block.get('noise_seed_offset')
    if offset is not None and not _is_int(offset):
        raise OptionsError(f'{path}.noise_seed_offset', 'must be an integer', offset, 'Write noise_seed_offset: 0.')
    if phase == 'train':
        _need_int(block, path, 'gt_size', 1, required=True, example='64')
    _check_loader_keys(block, path, phase)
    _check_image_roots(block, path, base_dir, {'dataroot_gt': 'clean-image'})


def _check_bicubic_sr_dataset(block: Mapping, path: str, phase: str, base_dir: Path, net: Mapping,
                              top_scale: Any) -> None:
    _check_keys(block, path, [*BICUBIC_SR_KEYS, *GENERIC_DATASET_KEYS])
    scale = block.get('scale', MISSING) if top_scale is MISSING else top_scale  # basicsr copies the top-level one
    if not _is_int(scale) or scale not in SR_SCALES:
        key = f'{path}.scale' if top_scale is MISSING and scale is not MISSING else 'scale'
        raise OptionsError(key, f'BicubicSRDataset needs the upscaling factor, one of {SR_SCALES}', scale,
                           'Write scale: 4 at the top level (basicsr copies it into every dataset).')
    color = block.get('color', 'rgb')
    if color not in SR_COLOR_MODES:
        raise OptionsError(f'{path}.color', f'must be one of {", ".join(SR_COLOR_MODES)}', color,
                           'Write color: rgb (3 channels), y (the Y channel) or gray.')
    arch = _lookup(ARCH_REGISTRY, net.get('type'))
    params = (_signature(arch) or inspect.Signature()).parameters if arch is not None else {}
    upscale = net.get('upscale', params['upscale'].default if 'upscale' in params else None)
    if _is_int(upscale) and upscale != scale:
        raise OptionsError(f'{path}.scale', f'does not match network_g.upscale ({upscale})', scale,
                           'Give the network and the top-level scale the same factor.')
    channels = 3 if color == 'rgb' else 1
    for key in ('num_in_ch', 'in_chans', 'in_ch', 'in_channels'):
        net_ch = net.get(key, params[key].default if key in params else None)
        if _is_int(net_ch) and net_ch != channels:
            raise OptionsError(f'{path}.color', f'gives {channels}-channel images, network_g.{key} is {net_ch}',
                               color, 'Use color: rgb for 3 channels, y or gray for 1, or change the network.')
    tmpl = block.get('filename_tmpl', '{}')
    if not isinstance(tmpl, str) or '{}' not in tmpl:
        raise OptionsError(f'{path}.filename_tmpl', "must be a string with one '{}'", tmpl,
                           "Write e.g. filename_tmpl: '{}x4' (Set5's LR_bicubic/X4/babyx4.png).")
    if phase == 'train':
        _need_int(block, path, 'gt_size', scale, required=True, example=str(16 * scale))
        if block['gt_size'] % scale:
            raise OptionsError(f'{path}.gt_size', f'must be a multiple of scale ({scale})', block['gt_size'],
                               f'Write e.g. gt_size: {16 * scale}.')
    _check_loader_keys(block, path, phase)
    _check_image_roots(block, path, base_dir, {'dataroot_gt': 'HR image', 'dataroot_lq': 'LR image'})


def _check_datasets(opt: Mapping, is_train: bool, base_dir: Path, net: Mapping) -> None:
    block = _need_dict(opt, '', 'datasets', required=True, example='datasets: {train: {...}, val: {...}}')
    if is_train and 'train' not in block:
        raise OptionsError('datasets.train', 'a training run needs a train dataset', MISSING,
                           _did_you_mean('train', [k for k in block if isinstance(k, str)], 0.7)
                           or 'Add datasets: train: {...}.')
    for key, dataset in block.items():
        path = f'datasets.{key}'
        phase = _phase(str(key))
        if is_train and key != 'train' and phase != 'val':
            raise OptionsError(path, "basicsr train accepts only the dataset keys 'train' and 'val*'", key,
                               "Rename it to train, val or val_<something>.")
        if not is_train and phase not in ('train', 'val', 'test'):
            raise OptionsError(path, "the phase (key up to the first '_') must be train, val or test", key,
                               'Rename it to test, test_<something> or val_<something>.')
        if not isinstance(dataset, Mapping):
            raise OptionsError(path, 'must be a block of key: value pairs', dataset, f'Write {key}: {{type: ...}}.')
        cls = _check_registered(dataset, path, DATASET_REGISTRY, 'dataset')
        if not isinstance(dataset.get('name'), str):
            raise OptionsError(f'{path}.name', 'must be a string (basicsr logs it)', dataset.get('name', MISSING),
                               f'Add name: {key}_set.')
        if cls.__name__ == 'GaussianNoiseDataset':
            _check_gaussian_dataset(dataset, path, phase, base_dir, net)
            continue
        if cls.__name__ == 'BicubicSRDataset':
            _check_bicubic_sr_dataset(dataset, path, phase, base_dir, net, opt.get('scale', MISSING))
            continue
        backend_opt = dataset.get('io_backend') or {}
        backend = backend_opt.get('type', 'disk') if isinstance(backend_opt, Mapping) else None
        for root_key in ('dataroot_gt', 'dataroot_lq'):
            root = dataset.get(root_key)
            if backend in ('disk', 'lmdb') and isinstance(root, str) and not _resolve(root, base_dir).exists():
                raise OptionsError(f'{path}.{root_key}', f'not found (looked in {base_dir})', root,
                                   'Fix the path: relative paths start from the working directory.')


def _check_loss(block: Mapping, path: str, ours: Iterable[str] = (), distance: bool = False) -> None:
    loss = _check_registered(block, path, LOSS_REGISTRY, 'loss')
    if distance and loss.__name__ in NOT_A_DISTANCE:
        raise OptionsError(f'{path}.type', 'is not a distance between two tensors', block['type'],
                           'Use L1Loss, MSELoss or CharbonnierLoss.')
    _check_against_signature(block, path, loss, given_by_caller=(), ours=ours)
    _need_number(block, path, 'loss_weight', example='1.0')
    reduction = block.get('reduction', 'mean')
    if 'reduction' in (_signature(loss) or inspect.Signature()).parameters and reduction not in LOSS_REDUCTIONS:
        raise OptionsError(f'{path}.reduction', 'must be mean or sum: the loss must be a scalar',
                           reduction, 'Write reduction: mean.')


def _check_layers(block: Mapping, path: str, key: str) -> None:
    value = block.get(key)
    if value is None:
        return
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise OptionsError(_join(path, key), 'must be a module name or a list of module names', value,
                           f'Write e.g. {key}: bottleneck or {key}: [decoders.0, decoders.1] (names as in '
                           'model.named_modules()).')


def _check_train(opt: Mapping) -> None:
    train = _need_dict(opt, '', 'train', required=True, example='train: {total_iter: ..., optim_g: ..., ...}')
    for key, value in train.items():
        if key in QDR_TRAIN_KEYS or not isinstance(key, str):
            continue
        close = difflib.get_close_matches(key, QDR_TRAIN_KEYS, n=1, cutoff=_TYPO_CUTOFF)
        if close:
            raise OptionsError(f'train.{key}', f'unknown key {key!r}', value,
                               f"Did you mean '{close[0]}'? QDRModel would silently ignore it.")

    _need_int(train, 'train', 'total_iter', 0, required=True, example='2000')
    _need_int(train, 'train', 'fp32_warmup_iter', 0, example='1000')
    total, warmup = train['total_iter'], train.get('fp32_warmup_iter') or 0
    if total == 0 and warmup:
        raise OptionsError('train.total_iter', 'must be > 0 with an FP32 warm-up', total,
                           'Set total_iter above fp32_warmup_iter (total_iter: 0 only for a calibrate-only run with '
                           'fp32_warmup_iter: 0).')
    if warmup and warmup >= total:
        raise OptionsError('train.fp32_warmup_iter', f'must be < train.total_iter ({total}): QAT would never start',
                           warmup, 'Lower fp32_warmup_iter or raise total_iter.')
    warmup_iter = train.get('warmup_iter')
    if warmup_iter is not None and not _is_int(warmup_iter):
        raise OptionsError('train.warmup_iter', 'must be an integer (-1: no warm-up)', warmup_iter,
                           'Write warmup_iter: -1.')
    ema = train.get('ema_decay')
    if ema is not None:
        if not _is_number(ema):
            raise OptionsError('train.ema_decay', 'must be a number', ema, 'Remove ema_decay (QDRModel has no EMA).')
        if ema > 0:
            raise OptionsError('train.ema_decay', 'is not supported by QDRModel', ema,
                               'Remove ema_decay or set it to 0.')

    optim = _need_dict(train, 'train', 'optim_g', required=True, example='optim_g: {type: Adam, lr: 1.0e-3}')
    optim_type = optim.get('type', MISSING)
    if optim_type not in OPTIMIZERS:
        raise OptionsError('train.optim_g.type', 'QDRModel supports only these optimizers', optim_type,
                           _did_you_mean(optim_type, OPTIMIZERS))
    _need_number(optim, 'train.optim_g', 'lr', positive=True, required=True, example='1.0e-3')
    _check_against_signature(optim, 'train.optim_g', OPTIMIZERS[optim_type], given_by_caller=('params',))

    sched = _need_dict(train, 'train', 'scheduler', required=True,
                       example='scheduler: {type: MultiStepLR, milestones: [1000], gamma: 0.5}')
    sched_type = sched.get('type', MISSING)
    if sched_type not in SCHEDULERS:
        raise OptionsError('train.scheduler.type', 'basicsr implements only these schedulers', sched_type,
                           _did_you_mean(sched_type, SCHEDULERS))
    _check_against_signature(sched, 'train.scheduler', SCHEDULERS[sched_type], given_by_caller=('optimizer',))
    steps_key = 'periods' if sched_type == 'CosineAnnealingRestartLR' else 'milestones'
    steps = sched[steps_key]
    if not isinstance(steps, list) or not all(_is_int(v) and v >= (1 if steps_key == 'periods' else 0) for v in steps):
        raise OptionsError(f'train.scheduler.{steps_key}', 'must be a list of iteration counts', steps,
                           f'Write e.g. {steps_key}: [1000, 2000].')
    pairs = (('periods', 'restart_weights'),) if steps_key == 'periods' else (('restarts', 'restart_weights'),)
    for first, second in pairs:
        a, b = sched.get(first, [0]), sched.get(second, [1])
        if isinstance(a, list) and isinstance(b, list) and len(a) != len(b):
            raise OptionsError(f'train.scheduler.{second}', f'needs one entry per {first} entry ({len(a)})', b,
                               f'Give {second} as many entries as {first} (basicsr asserts it).')

    pixel = _need_dict(train, 'train', 'pixel_opt', required=True,
                       example='pixel_opt: {type: L1Loss, loss_weight: 1.0}; QDRModel always uses it')
    _check_loss(pixel, 'train.pixel_opt', distance=True)

    dfd = train.get('dfd_opt')
    if dfd is not None:
        dfd = _need_dict(train, 'train', 'dfd_opt', required=False)
        _check_loss(dfd, 'train.dfd_opt', ours=DFD_KEYS, distance=True)
        _check_layers(dfd, 'train.dfd_opt', 'layer')
        _check_layers(dfd, 'train.dfd_opt', 'decoder_layers')
        _need_bool(dfd, 'train.dfd_opt', 'decoder_stages')
    okd = train.get('output_kd_opt')
    if okd is not None:
        okd = _need_dict(train, 'train', 'output_kd_opt', required=False)
        _check_loss(okd, 'train.output_kd_opt', distance=True)

    lmr = train.get('lmr_opt')
    if lmr is not None:
        lmr = _need_dict(train, 'train', 'lmr_opt', required=False)
        if lmr and not dfd:
            raise OptionsError('train.lmr_opt', 'balances reconstruction against DFD, but train.dfd_opt is not set',
                               dict(lmr), 'Add dfd_opt: {type: L1Loss, loss_weight: 1.0}, or remove lmr_opt.')
        _check_against_signature(lmr, 'train.lmr_opt', LearnableMagnitudeReweighting, given_by_caller=(),
                                 ours=('type',))
        lmr_type = lmr.get('type', 'gradnorm')
        if lmr_type not in LMR_TYPES:
            raise OptionsError('train.lmr_opt.type', f'must be one of {LMR_TYPES}', lmr_type,
                               _did_you_mean(lmr_type, LMR_TYPES))
        examples = {'lr': '0.025', 'target_ratio': '1.0', 'init_kd_weight': '1.0', 'w_min': '1.0e-4',
                    'w_max': '1.0e+4'}
        for key, example in examples.items():
            _need_number(lmr, 'train.lmr_opt', key, positive=True, example=example)
        w_min, w_max = lmr.get('w_min', 1e-4), lmr.get('w_max', 1e4)
        if not w_min < w_max:
            raise OptionsError('train.lmr_opt.w_min', f'must be below w_max ({w_max})', w_min,
                               'Keep 0 < w_min < w_max, e.g. w_min: 1.0e-4, w_max: 1.0e+4.')


def _check_val(opt: Mapping, is_train: bool, model: Any) -> None:
    val = _need_dict(opt, '', 'val', required=not is_train, example='val: {save_img: false, metrics: {...}}')
    if val is None:
        return
    if is_train:
        _need_int(val, 'val', 'val_freq', 1, required=True, example='1000')
    if 'save_img' not in val:
        raise OptionsError('val.save_img', 'required key is missing (basicsr reads it)', MISSING,
                           'Add save_img: false.')
    _need_bool(val, 'val', 'save_img')
    metrics = _need_dict(val, 'val', 'metrics', required=False)
    for name, metric in (metrics or {}).items():
        path = f'val.metrics.{name}'
        if not isinstance(metric, Mapping):
            raise OptionsError(path, 'must be a block', metric, f'Write {name}: {{type: calculate_psnr, '
                                                                 'crop_border: 0}.')
        func = _check_registered(metric, path, METRIC_REGISTRY, 'metric')
        if isinstance(model, type) and issubclass(model, QDRModel) and func.__name__.endswith('_pt'):
            raise OptionsError(f'{path}.type', 'needs tensors, but validation scores numpy images', metric['type'],
                               f"Use {func.__name__.removesuffix('_pt')}.")
        _check_against_signature(metric, path, func, given_by_caller=('img', 'img2'))


def _check_logger(opt: Mapping, is_train: bool) -> None:
    logger = _need_dict(opt, '', 'logger', required=is_train,
                        example='logger: {print_freq: 100, save_checkpoint_freq: 1000, use_tb_logger: true}')
    if logger is None:
        return
    _need_int(logger, 'logger', 'print_freq', 1, required=is_train, example='100')
    _need_int(logger, 'logger', 'save_checkpoint_freq', 1, required=is_train, example='1000')
    _need_bool(logger, 'logger', 'use_tb_logger')


def check_options(opt: dict, is_train: bool, base_dir: Path) -> None:
    """Check parsed options (as basicsr reads them, before it adds its own keys); raise :class:`OptionsError`.

    Args:
        opt: the options mapping read from the YAML.
        is_train: ``True`` for ``basicsr train`` (``train``, ``logger`` and a train dataset are required and the
            ``train:`` block is checked for QDRModel), ``False`` for ``basicsr test``.
        base_dir: the directory relative paths start from (basicsr's: the current working directory).
    """
    if not isinstance(opt, Mapping):
        raise OptionsError('<top level>', 'the options file must be a YAML mapping', opt,
                           'Write key: value pairs (name:, model_type:, network_g:, ...).')
    base_dir = Path(base_dir)
    _check_top_level(opt, is_train)
    model = _lookup(MODEL_REGISTRY, opt['model_type'])
    is_qdr = isinstance(model, type) and issubclass(model, QDRModel)
    _check_path(opt, base_dir)
    net = _check_network(opt)
    _check_quant(opt)
    _check_datasets(opt, is_train, base_dir, net)
    if is_train and is_qdr:
        _check_train(opt)
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
                return _join(path, key), seen[key], line
            seen[key] = line
            found = _duplicate_keys(value_node, _join(path, key))
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
