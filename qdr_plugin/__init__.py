"""qdr-plugin: QDR quantization-aware training for BasicSR.

Importing the package applies the torchvision alias basicsr 1.4.2 needs, then registers the plugin's archs,
datasets, losses and models in basicsr's registries (idempotently: a second import, or one beside Real-ESRGAN or
HAT, does not trip basicsr's duplicate-name assert).
"""

from .compat import apply_torchvision_alias

apply_torchvision_alias()

from . import archs, data, losses, models  # noqa: E402,F401  (registration)

__version__ = '0.1.0'
