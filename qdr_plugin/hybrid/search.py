r"""The network search: which units (blocks or stages) of a network to replace by their surrogates.

A candidate :math:`S` is a set of replaced units; with :math:`T(S)` the latency proxy of the transformer blocks it
keeps and :math:`\mathrm{PSNR}(S)` the validation PSNR of the assembled hybrid (no retraining), the search maximises

.. math::

    J(S) = \mathrm{PSNR}(S) - \lambda\, T(S), \qquad T(S) = \sum_{b \text{ kept}} w_b

(``lambda`` in dB per unit of proxy; no profiling in the loop). With ``w_b = 1`` the proxy counts the transformer
blocks kept; with feature-size weights (``w_b`` the block's input elements over their mean across the blocks, so
the weights still sum to the block count) a full-resolution block counts more than one at 1/8 resolution.

Beam search over the number of replaced units: from the teacher (:math:`S = \emptyset`), each level extends every
kept candidate by one more unit, scores the new candidates (each set scored once: a cache by set), keeps the
``beam`` best by :math:`J`, and stops when every unit is replaced or ``max_evals`` candidates are scored. ``beam =
1`` is the greedy search (:math:`u(u+1)/2 + 1` scores for ``u`` units); ``beam = b`` costs at most about ``b`` times
that. It walks away from the teacher one unit at a time, so a hybrid that keeps only units the walk replaced early
(cheap in the proxy, costly in PSNR: the low-resolution stages) may never be scored. Exhaustive search scores every
set, :math:`2^u` hybrids: the true front, affordable at stage granularity (8 stages: 256 scores).

Every scored candidate is kept, and the result has their Pareto front: the candidates that no other beats in both
PSNR (higher) and proxy cost (lower), or in PSNR and measured latency once that is known
(:func:`pareto_front` with another cost).

Plain Python: ``evaluate`` is any function from a tuple of unit names to a PSNR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations


@dataclass(frozen=True)
class Candidate:
    """One scored hybrid: the replaced ``units`` (in unit order), its validation ``psnr``, the transformer blocks
    it ``kept`` and their proxy ``cost`` :math:`T(S)` (the block count when not given)."""

    units: tuple[str, ...]
    psnr: float
    kept: int
    cost: float | None = None

    def __post_init__(self) -> None:
        if self.cost is None:
            object.__setattr__(self, 'cost', float(self.kept))

    def objective(self, lam: float) -> float:
        """``J = psnr - lam * cost``."""
        return self.psnr - lam * self.cost


@dataclass
class SearchResult:
    """What a search found: the ``best`` candidate by ``J`` at ``lam``, every candidate scored in the
    order scored, and their Pareto front (PSNR against the proxy cost, cheapest first)."""

    best: Candidate
    evaluated: list[Candidate]
    front: list[Candidate]
    lam: float
    units: list[str] = field(default_factory=list)


def pareto_front(candidates: Sequence[Candidate], cost: Callable[[Candidate], float] = lambda c: c.cost
                 ) -> list[Candidate]:
    """The candidates no other beats in both PSNR (higher) and ``cost`` (lower; default: the proxy cost),
    cheapest first."""
    front: list[Candidate] = []
    for cand in sorted(candidates, key=lambda c: (cost(c), -c.psnr)):
        if not front or cand.psnr > front[-1].psnr:  # within one cost the best PSNR comes first
            front.append(cand)
    return front


def _scorer(units: Sequence[str], blocks: Sequence[int], evaluate: Callable[[tuple[str, ...]], float],
            costs: Sequence[float] | None) -> tuple[Callable[[tuple[str, ...]], Candidate],
                                                    dict[tuple[str, ...], Candidate]]:
    """``score(units) -> Candidate`` (each set evaluated once) and the dict of every set scored, in order."""
    costs = list(blocks) if costs is None else list(costs)
    if len(units) != len(blocks) or len(units) != len(costs) or len(set(units)) != len(units):
        raise ValueError('units must be distinct names, one block count and one cost each.')
    size, unit_cost = dict(zip(units, blocks)), dict(zip(units, costs))
    all_blocks, all_cost = sum(blocks), sum(costs)
    scored: dict[tuple[str, ...], Candidate] = {}

    def score(chosen: tuple[str, ...]) -> Candidate:
        if chosen not in scored:
            kept = all_blocks - sum(size[u] for u in chosen)
            cost = all_cost - sum(unit_cost[u] for u in chosen)
            scored[chosen] = Candidate(chosen, float(evaluate(chosen)), kept, cost)
        return scored[chosen]

    return score, scored


def _result(scored: dict[tuple[str, ...], Candidate], lam: float, units: Sequence[str]) -> SearchResult:
    evaluated = list(scored.values())
    best = max(evaluated, key=lambda c: c.objective(lam))
    return SearchResult(best, evaluated, pareto_front(evaluated), lam, list(units))


def beam_search(units: Sequence[str], blocks: Sequence[int], evaluate: Callable[[tuple[str, ...]], float],
                lam: float, beam: int = 2, max_evals: int | None = None, costs: Sequence[float] | None = None
                ) -> SearchResult:
    """Beam search of the module docstring.

    Args:
        units: the names of the swappable units, in network order. blocks: the transformer blocks in each unit.
        evaluate: the validation PSNR of the hybrid replacing the given units.
        lam: dB per unit of proxy cost. beam: candidates kept per level (1: greedy).
        max_evals: stop after this many scores (``None``: until every unit is replaced).
        costs: each unit's proxy cost (the sum of its blocks' ``w_b``; ``None``: its block count).
    """
    if beam < 1:
        raise ValueError(f'beam must be >= 1, got {beam}.')
    order = {u: i for i, u in enumerate(units)}
    score, scored = _scorer(units, blocks, evaluate, costs)

    def budget_left() -> bool:
        return max_evals is None or len(scored) < max_evals

    level = [score(())]
    while level and budget_left():
        children = []
        for parent in level:
            for unit in units:
                if unit in parent.units or not budget_left():
                    continue
                chosen = tuple(sorted((*parent.units, unit), key=order.__getitem__))
                if chosen not in {c.units for c in children}:
                    children.append(score(chosen))
        level = sorted(children, key=lambda c: -c.objective(lam))[:beam]
    return _result(scored, lam, units)


MAX_EXHAUSTIVE_UNITS = 12
"""Exhaustive search scores ``2^u`` hybrids; above this many units it is refused."""


def exhaustive_search(units: Sequence[str], blocks: Sequence[int], evaluate: Callable[[tuple[str, ...]], float],
                      lam: float, costs: Sequence[float] | None = None) -> SearchResult:
    """Every set of replaced units scored (fewest replaced first; arguments as :func:`beam_search`)."""
    if len(units) > MAX_EXHAUSTIVE_UNITS:
        raise ValueError(f'exhaustive search of {len(units)} units scores 2^{len(units)} hybrids: at most '
                         f'{MAX_EXHAUSTIVE_UNITS} units (search by stage, or use the beam search).')
    score, scored = _scorer(units, blocks, evaluate, costs)
    for count in range(len(units) + 1):
        for chosen in combinations(units, count):
            score(chosen)
    return _result(scored, lam, units)
