"""Archs of the plugin, registered in basicsr's ARCH_REGISTRY on import."""

from .efm_arch import EFM

__all__ = ['EFM']
