"""Archs of the plugin, registered in basicsr's ARCH_REGISTRY on import, and the defaults for basicsr's own archs
(:mod:`.basicsr_defaults`, which also registers ECBSR's re-parameterization with ``quantize_model``)."""

from . import basicsr_defaults
from .dncnn_arch import DnCNN
from .efm_arch import EFM

__all__ = ['DnCNN', 'EFM', 'basicsr_defaults']
