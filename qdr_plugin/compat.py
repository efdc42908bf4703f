"""Compatibility shims that must run before the first ``import basicsr``.

basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, a module that torchvision removed in 0.17.
Every function basicsr takes from it (``rgb_to_grayscale``) lives in ``torchvision.transforms.functional`` with
the same signature, so the old module name is aliased to the new one.
"""

import sys


def apply_torchvision_alias() -> None:
    """Alias ``torchvision.transforms.functional_tensor`` to ``torchvision.transforms.functional`` if it is gone."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ImportError:
        import torchvision.transforms.functional as functional

        sys.modules[name] = functional
