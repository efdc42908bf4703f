"""Loss-side pieces of QDR (the distances themselves are basicsr's L1Loss / MSELoss / CharbonnierLoss)."""

from .lmr import LMR_TYPES, LearnableMagnitudeReweighting

__all__ = ['LMR_TYPES', 'LearnableMagnitudeReweighting']
