"""Archs of the plugin, registered in basicsr's ARCH_REGISTRY on import, and the defaults for basicsr's own archs
(:mod:`.basicsr_defaults`, which also registers ECBSR's re-parameterization with ``quantize_model``), and the
quantization points of basicsr's residual blocks (:mod:`.basicsr_points`)."""

from . import basicsr_defaults, basicsr_points
from .aodnet_arch import AODNet
from .dncnn_arch import DnCNN
from .efm_arch import EFM
from .gcanet_arch import GCANet
from .hybridmix_arch import HybridMixUNet
from .iat_arch import IAT
from .prenet_arch import PReNet
from .restormer_arch import Restormer
from .ssm_hybrid_arch import RestormerHybrid

__all__ = ['AODNet', 'DnCNN', 'EFM', 'GCANet', 'HybridMixUNet', 'IAT', 'PReNet', 'Restormer', 'RestormerHybrid',
           'basicsr_defaults', 'basicsr_points']
