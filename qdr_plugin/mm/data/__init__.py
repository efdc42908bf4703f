"""Data of the mmengine front: :mod:`.transforms` (mmcv-style), :mod:`.datasets`, and basicsr's data order
(:mod:`.basicsr_order`)."""

from . import basicsr_order, datasets, transforms

__all__ = ['basicsr_order', 'datasets', 'transforms']
