"""Archs of the plugin, registered in basicsr's ARCH_REGISTRY on import."""

from .dncnn_arch import DnCNN
from .efm_arch import EFM

__all__ = ['DnCNN', 'EFM']
