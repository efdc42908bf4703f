"""The QDR training engine both fronts (BasicSR's ``QDRModel``, the mmengine ``QDRRestorer``) call: plain PyTorch,
no training framework.

* :mod:`.qat` -- the switch from FP32 to QAT (teacher snapshot, quantization, calibration) and the optimizer groups;
* :mod:`.step` -- the training step's QDR parts (reconstruction, DFD / relational / output distillation, LMR, the
  step-size projection);
* :mod:`.checkpoint` -- the networks a checkpoint holds and under which keys;
* :mod:`.distributed` -- keeping the ranks of a process group identical;
* :mod:`.feature_capture` -- the named features DFD compares.
"""

from .checkpoint import LMR_KEY, STUDENT_KEY, TEACHER_KEY, bare_state_dict, network_states, refuse_non_finite
from .qat import QATStart, freeze, optimizer_groups, start_qat
from .step import QDRStep, StepLosses

__all__ = ['LMR_KEY', 'STUDENT_KEY', 'TEACHER_KEY', 'QATStart', 'QDRStep', 'StepLosses', 'bare_state_dict', 'freeze',
           'network_states', 'optimizer_groups', 'refuse_non_finite', 'start_qat']
