"""Paired restoration dataset for BasicSR: degraded inputs and ground truths in two folders, paired by a name rule.

basicsr's ``PairedImageDataset`` pairs files of the same name (or through a ``meta_info`` file listing both).
Standard test sets pair different names: SOTS-indoor's ``hazy/1400_5.png`` (scene 1400, haze level 5) has the
ground truth ``clear/1400.png``. Here the rule is an option, ``pairing: {lq: '{scene}_{level}', gt: '{scene}'}``:
the ``lq`` pattern is matched against each input's file stem, its ``{fields}`` are read out, and the ``gt`` pattern
filled with them names the ground truth's stem (any image extension).
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from typing import Any

from basicsr.data.transforms import augment
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from qdr_plugin.errors import UserError
from qdr_plugin.option_rules import OptionsError, OptionsPathError, check_keys, need_bool, need_choice, need_int
from qdr_plugin.registry import register

from .dataset_options import check_crop_fits, check_dataset_keys, random_crop, training_phase
from .image_source import ImageSource

__all__ = ['PairedFolderDataset', 'PairingRule', 'pair_paths']

_OWNER = 'PairedFolderDataset'
_SAME_NAME = {'lq': '{name}', 'gt': '{name}'}


class PairingRule:
    """Names the ground truth of an input from its file stem.

    ``lq`` is a pattern of the input's stem with ``{field}`` parts (each matches one or more characters, as few as
    possible, so ``'{scene}_{level}'`` splits ``1400_5`` at its first underscore); ``gt`` is the ground truth's stem
    written with the same fields. ``PairingRule('{scene}_{level}', '{scene}').gt_stem('1400_5') == '1400'``.

    Raises:
        OptionsError: At ``<path>.lq`` / ``<path>.gt`` when a pattern is not a string, has no field, repeats a
            field, or when ``gt`` uses a field that ``lq`` does not define.
    """

    def __init__(self, lq: Any, gt: Any, path: str) -> None:
        self.path = path
        lq_fields = self._fields(lq, f'{path}.lq')
        gt_fields = self._fields(gt, f'{path}.gt')
        if len(set(lq_fields)) != len(lq_fields):
            raise OptionsError(f'{path}.lq', 'repeats a field', lq, "Name each field once, e.g. '{scene}_{level}'.")
        unknown = sorted(set(gt_fields) - set(lq_fields))
        if unknown:
            raise OptionsError(f'{path}.gt', f'uses {", ".join("{" + f + "}" for f in unknown)}, which the lq pattern '
                               'does not define', gt, f'Use only fields of {lq!r}, e.g. gt: '
                               f"'{{{lq_fields[0]}}}'.")
        self.lq, self.gt = lq, gt
        pieces = []
        for literal, field, _, _ in string.Formatter().parse(lq):
            pieces.append(re.escape(literal))
            if field is not None:
                pieces.append(f'(?P<{field}>.+?)')
        self._regex = re.compile(''.join(pieces))

    @staticmethod
    def _fields(pattern: Any, key_path: str) -> list[str]:
        fix = "Write a file-stem pattern with {fields}, e.g. pairing: {lq: '{scene}_{level}', gt: '{scene}'}."
        if not isinstance(pattern, str) or not pattern:
            raise OptionsError(key_path, 'must be a file-stem pattern', pattern, fix)
        try:
            parsed = list(string.Formatter().parse(pattern))
        except ValueError as error:
            raise OptionsError(key_path, f'is not a valid pattern ({error})', pattern, fix) from error
        fields = [field for _, field, spec, conv in parsed if field is not None]
        bad = [field for field in fields if not field.isidentifier()]
        if not fields or bad or any(spec or conv for _, field, spec, conv in parsed if field is not None):
            raise OptionsError(key_path, 'needs at least one {field} named like a Python variable, without format '
                               'specs', pattern, fix)
        return fields

    def gt_stem(self, lq_stem: str) -> str | None:
        """The ground truth's stem for input stem ``lq_stem``; ``None`` when the stem does not match ``lq``."""
        match = self._regex.fullmatch(lq_stem)
        return None if match is None else self.gt.format(**match.groupdict())


def _pairing(opt: Mapping[str, Any], path: str) -> PairingRule:
    block = opt.get('pairing')
    if block is None:
        return PairingRule(_SAME_NAME['lq'], _SAME_NAME['gt'], f'{path}.pairing')
    if not isinstance(block, Mapping):
        raise OptionsError(f'{path}.pairing', 'must be a block with lq and gt patterns', block,
                           "Write pairing: {lq: '{scene}_{level}', gt: '{scene}'}, or remove it to pair equal names.")
    check_keys(block, f'{path}.pairing', ['lq', 'gt'])
    return PairingRule(block.get('lq'), block.get('gt'), f'{path}.pairing')


def pair_paths(lq_source: ImageSource, gt_source: ImageSource, rule: PairingRule) -> list[str]:
    """The ground-truth path of every input of ``lq_source`` (same order), by ``rule``.

    Raises:
        OptionsError: At ``<pairing>.lq`` naming an input whose stem the pattern does not match, or
            :class:`OptionsPathError` at ``<pairing>.gt`` naming an input whose ground truth is not in the folder.
    """
    gt_by_stem = {gt_source.name(path): path for path in gt_source.paths}
    gt_paths = []
    for lq_path in lq_source.paths:
        stem = lq_source.name(lq_path)
        gt_stem = rule.gt_stem(stem)
        if gt_stem is None:
            raise OptionsError(f'{rule.path}.lq', f"does not match input '{lq_source.describe(lq_path)}' (stem "
                               f"'{stem}')", rule.lq, 'Fix the pattern (it must match every file stem of dataroot_lq) '
                               'or remove the file.')
        if gt_stem not in gt_by_stem:
            raise OptionsPathError(f'{rule.path}.gt', f"gives '{gt_stem}' for input '{lq_source.describe(lq_path)}', "
                                   f"and dataroot_gt '{gt_source.root}' has no image of that stem", rule.gt,
                                   'Fix the pairing patterns or add the ground truth.')
        gt_paths.append(gt_by_stem[gt_stem])
    return gt_paths


@register(DATASET_REGISTRY)
class PairedFolderDataset(data.Dataset):
    """Degraded inputs (``lq``) and their ground truths (``gt``) from two image folders, paired by a name rule.

    Options (``opt``, as in a BasicSR ``datasets`` entry; ``phase`` is set by BasicSR):
        dataroot_lq (str): Folder of degraded inputs (not recursive). Required; every image in it is an item.
        dataroot_gt (str): Folder of ground truths. Required; one ground truth may serve several inputs.
        pairing (dict): ``{lq: <stem pattern>, gt: <stem pattern>}`` (see :class:`PairingRule`); default: equal
            stems. SOTS-indoor: ``{lq: '{scene}_{level}', gt: '{scene}'}``.
        in_ch (int): 1 = gray, 3 = colour (RGB tensors). Default 3.
        gt_size (int): Train only, required there: side of the random square crop, taken at the same place in both.
        use_hflip, use_rot (bool): Train only: basicsr ``augment`` flips / rotations, the same for both. Default False.

    Returns per item ``{'lq', 'gt', 'lq_path', 'gt_path'}``: float32 ``C x H x W`` tensors in [0, 1]; whole images
    outside training. Items are the inputs in name order. An input and its ground truth must have the same size;
    images are read as :func:`qdr_plugin.data.image_source.decode_image` reads them.
    """

    OPTION_KEYS = ('dataroot_lq', 'dataroot_gt', 'pairing', 'in_ch', 'gt_size', 'use_hflip', 'use_rot')
    """The dataset's own option keys (besides basicsr's generic ones)."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__()
        self.opt = opt
        checked = self.check_options(opt)
        self.train, self.in_ch, self.gt_size = checked['train'], checked['in_ch'], checked['gt_size']
        self.use_hflip, self.use_rot = checked['use_hflip'], checked['use_rot']
        self.lq_source, self.gt_source = checked['lq_source'], checked['gt_source']
        self.paths, self.gt_paths = self.lq_source.paths, checked['gt_paths']

    @classmethod
    def check_options(cls, opt: Mapping[str, Any], path: str = _OWNER,
                      base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        """The rules of the options (see the class docstring), for the constructor and the pre-flight checker.

        Returns:
            ``train``, ``in_ch``, ``gt_size`` (``None`` outside training), ``use_hflip``, ``use_rot``, the two
            :class:`ImageSource` s ``lq_source`` / ``gt_source`` and ``gt_paths`` (the ground truth of each input).

        Raises:
            OptionsError: At ``<path>.<key>``; a missing folder or ground truth raises :class:`OptionsPathError`.
        """
        check_dataset_keys(opt, path, cls.OPTION_KEYS)
        train = training_phase(opt, path)
        rule = _pairing(opt, path)
        lq_source = ImageSource(opt.get('dataroot_lq'), None, path, key='dataroot_lq', what='degraded inputs',
                                base_dir=base_dir)
        gt_source = ImageSource(opt.get('dataroot_gt'), None, path, key='dataroot_gt', what='ground-truth images',
                                base_dir=base_dir)
        return {
            'train': train,
            'in_ch': need_choice(opt, path, 'in_ch', (1, 3), default=3,
                                 fix='Write in_ch: 3 (colour) or in_ch: 1 (gray).'),
            'gt_size': need_int(opt, path, 'gt_size', 1, required=True, example='128') if train else None,
            'use_hflip': need_bool(opt, path, 'use_hflip', default=False),
            'use_rot': need_bool(opt, path, 'use_rot', default=False),
            'lq_source': lq_source,
            'gt_source': gt_source,
            'gt_paths': pair_paths(lq_source, gt_source, rule),
        }

    @classmethod
    def check_images(cls, opt: Mapping[str, Any], path: str = _OWNER,
                     base_dir: str | os.PathLike | None = None) -> None:
        """Before training: every pair has equal sizes (file headers only) and, for training, every input is at
        least ``gt_size`` on its shorter side; for validation / testing every image also decodes.

        Raises:
            UserError: Naming a pair of different sizes or an unreadable file.
            OptionsError: At ``<path>.gt_size``, naming the smallest input.
        """
        checked = cls.check_options(opt, path, base_dir)
        lq_source, gt_source = checked['lq_source'], checked['gt_source']
        for lq_path, gt_path in zip(lq_source.paths, checked['gt_paths']):
            lq_size, gt_size = lq_source.size(lq_path), gt_source.size(gt_path)
            if lq_size != gt_size:
                raise UserError(_size_mismatch(lq_path, lq_size, gt_path, gt_size))
        if checked['train']:
            check_crop_fits(lq_source, checked['gt_size'], f'{path}.gt_size')
        else:
            lq_source.check_decodable(checked['in_ch'])
            gt_source.check_decodable(checked['in_ch'])

    @classmethod
    def lq_channels(cls, opt: Mapping[str, Any], path: str = _OWNER) -> tuple[str, int]:
        """The option that sets the channel count of ``lq`` (the network's input) and that count."""
        return 'in_ch', need_choice(opt, path, 'in_ch', (1, 3), default=3, fix='Write in_ch: 3 or in_ch: 1.')

    def __getitem__(self, index: int) -> dict[str, Any]:
        lq_path, gt_path = self.paths[index], self.gt_paths[index]
        lq, _ = self.lq_source.read(lq_path, self.in_ch)
        gt, _ = self.gt_source.read(gt_path, self.in_ch)
        if lq.shape != gt.shape:
            raise UserError(_size_mismatch(lq_path, lq.shape[:2], gt_path, gt.shape[:2]))
        if self.train:
            lq, gt = augment(random_crop([lq, gt], self.gt_size, _OWNER, f"input '{lq_path}'"), self.use_hflip,
                             self.use_rot)
        lq, gt = img2tensor([lq, gt], bgr2rgb=False, float32=True)
        return {'lq': lq, 'gt': gt, 'lq_path': lq_path, 'gt_path': gt_path}

    def __len__(self) -> int:
        return len(self.paths)


def _size_mismatch(lq_path: str, lq_size: Any, gt_path: str, gt_size: Any) -> str:
    def shape(size: Any) -> str:
        return 'unknown' if size is None else f'{size[0]}x{size[1]}'
    return (f"{_OWNER}: input '{lq_path}' is {shape(lq_size)} (HxW) but its ground truth '{gt_path}' is "
            f'{shape(gt_size)}; a pair must have the same size: fix the pairing rule or the files.')
