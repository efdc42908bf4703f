"""Datasets of the mmengine front: an image folder through an mmcv-style pipeline, and any basicsr dataset.

Both give items ``{'lq': C x H x W, 'gt': C x H x W, 'key': name}`` for ``collate_fn=dict(type='default_collate')``.
"""

from __future__ import annotations

import os
from typing import Any

from basicsr.data import build_dataset
from mmengine.dataset import BaseDataset
from torch.utils.data import Dataset

from qdr_plugin.data.image_source import ImageSource

from ..registry import DATASETS

__all__ = ['BasicSRDataset', 'ImageFolderDataset']


@DATASETS.register_module()
class ImageFolderDataset(BaseDataset):
    """The images of ``gt_folder`` (and, for real pairs, the same names in ``lq_folder``), each item the pipeline
    applied to ``{'gt_path', 'lq_path'?, 'key', 'index'}``.

    Args:
        gt_folder: the clean images (relative to ``data_root`` when given).
        lq_folder: the degraded inputs with the same file names; ``None`` for a synthetic degradation in the
            pipeline.
        pipeline: the transforms (:mod:`qdr_plugin.mm.data.transforms`).
    """

    def __init__(self, gt_folder: str, lq_folder: str | None = None, pipeline: list | None = None,
                 data_root: str = '', test_mode: bool = False, **kwargs: Any) -> None:
        self.gt_folder, self.lq_folder = gt_folder, lq_folder
        super().__init__(data_root=data_root, pipeline=pipeline or [], test_mode=test_mode,
                         serialize_data=False, **kwargs)

    def load_data_list(self) -> list[dict[str, Any]]:
        gt_root = os.path.join(self.data_root, self.gt_folder)
        source = ImageSource(gt_root, None, 'ImageFolderDataset', 'gt_folder')
        items = []
        for index, path in enumerate(source.paths):
            name = os.path.basename(path)
            item = {'gt_path': path, 'key': os.path.splitext(name)[0], 'index': index}
            if self.lq_folder is not None:
                item['lq_path'] = os.path.join(self.data_root, self.lq_folder, name)
            items.append(item)
        return items


@DATASETS.register_module()
class BasicSRDataset(Dataset):
    """Any dataset of basicsr's registry (the plugin's included), built from its YAML options ``opt``; calibration
    draws from it exactly as the BasicSR front does (:mod:`qdr_plugin.mm.calibration`).

    Args:
        opt: the options of a ``datasets:`` entry (``type``, ``dataroot_gt``, ...; ``phase`` defaults to ``'train'``
            unless ``test_mode``).
    """

    def __init__(self, opt: dict, test_mode: bool = False) -> None:
        self.opt = {'name': opt.get('type', 'dataset'), 'phase': 'val' if test_mode else 'train', **opt}
        self.dataset = build_dataset(self.opt)
        self.metainfo = {'name': self.opt['name']}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        path = item.get('lq_path') or item.get('gt_path') or str(index)
        return {'lq': item['lq'], 'gt': item['gt'], 'key': os.path.splitext(os.path.basename(path))[0]}
