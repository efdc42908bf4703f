"""The plugin's mmengine registries: for every root registry of mmengine a child with the scope ``qdr_plugin``.

A config with ``default_scope = 'qdr_plugin'`` builds every ``type=`` through these children: the plugin's own
classes first, then mmengine's (the parent), and ``type='mmagic.X'`` from an installed, importable mmagic.
"""

from __future__ import annotations

from mmengine import registry as root
from mmengine.registry import Registry

SCOPE = 'qdr_plugin'
"""The registry scope: the package name, as mmengine infers it from a module's package."""

_LOCATIONS = {
    'model': ['qdr_plugin.mm.model', 'qdr_plugin.mm.ddp'],
    'model_wrapper': ['qdr_plugin.mm.ddp'],
    'hook': ['qdr_plugin.mm.hooks'],
    'metric': ['qdr_plugin.mm.metric'],
    'loop': ['qdr_plugin.mm.loops'],
    'optimizer wrapper constructor': ['qdr_plugin.mm.optim'],
    'dataset': ['qdr_plugin.mm.data.datasets'],
    'data sampler': ['qdr_plugin.mm.data.basicsr_order'],
    'transform': ['qdr_plugin.mm.data.transforms'],
}


def _child(parent: Registry) -> Registry:
    return Registry(parent.name, parent=parent, scope=SCOPE, locations=_LOCATIONS.get(parent.name, []))


ROOT_REGISTRIES = {name: value for name, value in vars(root).items() if isinstance(value, Registry)}
"""mmengine's root registries by variable name (``MODELS``, ``HOOKS``, ...)."""

CHILDREN = {name: _child(parent) for name, parent in ROOT_REGISTRIES.items()}

MODELS = CHILDREN['MODELS']
MODEL_WRAPPERS = CHILDREN['MODEL_WRAPPERS']
HOOKS = CHILDREN['HOOKS']
METRICS = CHILDREN['METRICS']
LOOPS = CHILDREN['LOOPS']
OPTIM_WRAPPER_CONSTRUCTORS = CHILDREN['OPTIM_WRAPPER_CONSTRUCTORS']
DATASETS = CHILDREN['DATASETS']
DATA_SAMPLERS = CHILDREN['DATA_SAMPLERS']
TRANSFORMS = CHILDREN['TRANSFORMS']
