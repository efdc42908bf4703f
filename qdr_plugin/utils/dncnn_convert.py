"""Read the published DnCNN checkpoint (a whole pickled module) without running arbitrary pickled code.

``cszn/DnCNN``'s ``model.pth`` was written with ``torch.save(model)`` from a script whose class was
``__main__.DnCNN``; loading it the usual way needs ``weights_only=False``, i.e. trusting the file to import and call
anything. :func:`load_dncnn_module_state` instead unpickles it with :class:`RestrictedUnpickler`, which resolves only
the globals such a file needs:

- tensor rebuilding: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``, ``torch.nn.parameter.Parameter``,
  the typed storage classes ``torch.FloatStorage`` ..., ``collections.OrderedDict`` (and ``set``: a module saved by
  a newer PyTorch pickles its ``_non_persistent_buffers_set``);
- the layers of the model: ``torch.nn.modules.*`` ``Sequential``, ``Conv2d``, ``BatchNorm2d``, ``ReLU``;
- ``__main__.DnCNN``, mapped to the empty stand-in :class:`DnCNNStandIn`, and the PyTorch 0.4 ``_backend`` getter
  ``torch.nn.backends.thnn._get_thnn_function_backend``, mapped to a function that returns ``None``.

Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) raises ``pickle.UnpicklingError``
before anything is called. The parameters and buffers are then read from the modules' ``_parameters`` /
``_buffers`` dictionaries directly (no method of the unpickled objects runs, hooks included).
"""

from __future__ import annotations

import pickle
import types
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

_NOT_DNCNN = 'the file is not the expected DnCNN checkpoint (a torch.save(model) of cszn/DnCNN)'


class DnCNNStandIn(nn.Module):
    """What ``__main__.DnCNN`` unpickles to: an empty module that only holds the unpickled attributes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError('DnCNNStandIn only carries weights; build qdr_plugin.archs.DnCNN and load them into it.')


def _no_backend() -> None:
    """Stand-in for PyTorch 0.4's ``torch.nn.backends.thnn._get_thnn_function_backend``."""
    return None


_STORAGES = (
    'FloatStorage', 'DoubleStorage', 'HalfStorage', 'BFloat16Storage', 'LongStorage', 'IntStorage',
    'ShortStorage', 'CharStorage', 'ByteStorage', 'BoolStorage',
)

ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ('torch._utils', '_rebuild_tensor_v2'): torch._utils._rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): torch._utils._rebuild_parameter,
    ('torch.nn.parameter', 'Parameter'): nn.Parameter,
    ('collections', 'OrderedDict'): OrderedDict,
    ('builtins', 'set'): set,
    ('__builtin__', 'set'): set,
    ('torch.nn.modules.container', 'Sequential'): nn.Sequential,
    ('torch.nn.modules.conv', 'Conv2d'): nn.Conv2d,
    ('torch.nn.modules.batchnorm', 'BatchNorm2d'): nn.BatchNorm2d,
    ('torch.nn.modules.activation', 'ReLU'): nn.ReLU,
    ('torch.nn.backends.thnn', '_get_thnn_function_backend'): _no_backend,
    ('__main__', 'DnCNN'): DnCNNStandIn,
    **{('torch', name): getattr(torch, name) for name in _STORAGES},
}
"""``(module, name)`` of every global the unpickler resolves, and what it resolves to."""

_ALIASES = {'posix': 'os', 'nt': 'os', '__builtin__': 'builtins'}  # os.system pickles as posix.system


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS` and refuses every other global."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            pass
        alias = _ALIASES.get(module)
        shown = f'{module}.{name}' + (f' ({alias}.{name})' if alias else '')
        raise pickle.UnpicklingError(f'refused to load global {shown}: {_NOT_DNCNN}.')


def _restricted_load(file, **kwargs) -> object:
    return RestrictedUnpickler(file, **kwargs).load()


# What torch.load needs of a ``pickle_module``: ``Unpickler`` (it subclasses it), ``load`` (the legacy format's
# header records) and ``__name__``.
restricted_pickle = types.SimpleNamespace(__name__=__name__ + '.restricted_pickle', Unpickler=RestrictedUnpickler,
                                          load=_restricted_load)


def _collect(module: nn.Module, prefix: str, out: dict[str, torch.Tensor]) -> None:
    attrs = vars(module)
    skipped = attrs.get('_non_persistent_buffers_set') or set()
    for kind in ('_parameters', '_buffers'):
        for name, value in (attrs.get(kind) or {}).items():
            if value is None or (kind == '_buffers' and name in skipped):
                continue
            if not isinstance(value, torch.Tensor):
                raise ValueError(f'{prefix}{name} is a {type(value).__name__}, not a tensor: {_NOT_DNCNN}.')
            out[prefix + name] = value.detach().clone()
    for name, child in (attrs.get('_modules') or {}).items():
        if child is not None:
            _collect(child, f'{prefix}{name}.', out)


def load_dncnn_module_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict (``dncnn.0.weight``, ``dncnn.0.bias``, ...) of a DnCNN module pickled whole by ``torch.save``.

    Reads the legacy and the zip format on CPU through :class:`RestrictedUnpickler`; the keys match
    :class:`qdr_plugin.archs.DnCNN`. Raises ``pickle.UnpicklingError`` naming the global when the file references
    anything outside :data:`ALLOWED_GLOBALS` (nothing in the file is executed), and ``ValueError`` when it unpickles
    to something other than a DnCNN module.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(n.endswith('constants.pkl') for n in archive.namelist()):  # torch.load would run torch.jit.load
                raise ValueError(f'{path} is a TorchScript archive: {_NOT_DNCNN}.')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.serialization.SourceChangeWarning)
        obj = torch.load(path, map_location='cpu', pickle_module=restricted_pickle, weights_only=False)
    if not isinstance(obj, DnCNNStandIn):
        raise ValueError(f'{path} unpickles to a {type(obj).__name__}, not a __main__.DnCNN module: {_NOT_DNCNN}.')
    state: dict[str, torch.Tensor] = {}
    _collect(obj, '', state)
    if not state or not all(k.startswith('dncnn.') for k in state):
        raise ValueError(f'{path}: unexpected keys {sorted(state)[:5]}...: {_NOT_DNCNN}.')
    return state
