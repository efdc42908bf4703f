"""Hybrid restorers: state-space surrogates distilled from a Restormer's transformer blocks, and the search that
picks which blocks to replace (docs/hybrid.md).

The engine is plain PyTorch: :mod:`.distill` (surrogate distillation on the teacher's own block inputs),
:mod:`.assemble` (blocks swapped by name, state dicts merged), :mod:`.search` (beam or exhaustive search of
``PSNR - lambda x blocks kept``, Pareto front), :mod:`.scoring` (8-bit PSNR), :mod:`.latency` (interleaved ONNX
Runtime latency, Spearman). :mod:`.options` holds the ``hybrid:`` rules, :mod:`.cli` the ``basicsr hybrid`` command.
"""

from .assemble import hybrid_state_dict, swapped
from .distill import SurrogateDistiller, block_io, distillation_loss
from .latency import interleaved_latency, spearman
from .search import Candidate, SearchResult, beam_search, exhaustive_search, pareto_front

__all__ = ['Candidate', 'SearchResult', 'SurrogateDistiller', 'beam_search', 'block_io', 'distillation_loss',
           'exhaustive_search', 'hybrid_state_dict', 'interleaved_latency', 'pareto_front', 'spearman', 'swapped']
