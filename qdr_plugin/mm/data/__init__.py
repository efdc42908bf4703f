"""Data of the mmengine front: :mod:`.transforms` (mmcv-style) and :mod:`.datasets`."""

from . import datasets, transforms

__all__ = ['datasets', 'transforms']
