"""Models of the plugin, registered in basicsr's MODEL_REGISTRY on import."""

from .qdr_model import QDRModel

__all__ = ['QDRModel']
