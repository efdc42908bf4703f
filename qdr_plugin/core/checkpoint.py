"""What a QDR checkpoint holds: the student under ``params``, its FP32 teacher under ``params_teacher`` and LMR's
weights under ``params_lmr`` (the last two once they exist), each a CPU state dict without DDP's ``module.`` prefix.

Both fronts write this layout (the BasicSR front directly, the mmengine front through its converter), so
``basicsr export`` / ``bench`` / ``test`` read either. The training record (``options``) is added by the caller.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from qdr_plugin.errors import UserError

__all__ = ['LMR_KEY', 'STUDENT_KEY', 'TEACHER_KEY', 'bare_state_dict', 'network_states', 'refuse_non_finite']

STUDENT_KEY, TEACHER_KEY, LMR_KEY = 'params', 'params_teacher', 'params_lmr'
"""The checkpoint keys of the student, its FP32 teacher and LMR's weights."""


def bare_state_dict(net: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """``net``'s state dict (of its ``.module`` when wrapped) on the CPU, keys without ``module.``, with the
    ``_metadata`` that ``load_state_dict`` reads versions from."""
    net = getattr(net, 'module', net)
    state = net.state_dict()
    bare = OrderedDict((k[7:] if k.startswith('module.') else k, v.cpu()) for k, v in state.items())
    bare._metadata = getattr(state, '_metadata', OrderedDict())
    return bare


def network_states(student: nn.Module, teacher: nn.Module | None, lmr: nn.Module | None) -> dict[str, nn.Module]:
    """The networks of a checkpoint by key: ``params`` (the student), ``params_teacher``, ``params_lmr``."""
    nets = {STUDENT_KEY: student}
    if teacher is not None:
        nets[TEACHER_KEY] = teacher
    if lmr is not None:
        nets[LMR_KEY] = lmr
    return nets


def refuse_non_finite(state: dict[str, torch.Tensor], key: str, file_name: str, who: str, fix: str) -> None:
    """Raise :class:`UserError` if a floating tensor of ``state`` (to be saved as ``key`` in ``file_name``) holds a
    NaN or an infinity: such a network would only resume into the same failure."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f'{who}: the network is not finite ({key}.{name} holds NaN or inf), so '
                            f'{file_name} is not written; {fix}')
