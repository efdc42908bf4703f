"""Loss-side pieces of QDR: LMR, the feature-distillation distances PKD and relational KD, and QATIE's loss (all
registered in basicsr's LOSS_REGISTRY; the plain distances are basicsr's L1Loss / MSELoss / CharbonnierLoss)."""

from .feature_kd_loss import PKDLoss, RelationalKDLoss
from .lmr import LMR_TYPES, LearnableMagnitudeReweighting
from .qatie_loss import QATIELoss

__all__ = ['LMR_TYPES', 'LearnableMagnitudeReweighting', 'PKDLoss', 'QATIELoss', 'RelationalKDLoss']
