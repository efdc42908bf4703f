"""The rules of the ``hybrid:`` block of an options file (``basicsr hybrid distill / search``).

    hybrid:
      surrogate: {ssm_expand: 1.0, scan_steps: 8}
      distill: {total_iter: 2000, lr: 1.0e-3, distance: mse, normalize: true, print_freq: 100}
      search: {lambda: 0.02, proxy: blocks, granularity: stage, strategy: beam, beam: 2, max_evals: ~, val_images: 8,
               finetune: 3, finetune_at: ~}
      latency: {size: 256, rounds: 20, threads: 1}

Every key has a default; an unknown key, a value of the wrong type or out of range is an
:class:`~qdr_plugin.option_rules.OptionsError` at its key path. ``hybrid.surrogate`` holds the surrogate keys of
``RestormerHybrid`` (``ssm_expand``, ``scan_steps``), checked by that arch's rules. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qdr_plugin.option_rules import (
    OptionsError,
    check_keys,
    is_number,
    need_bool,
    need_choice,
    need_dict,
    need_int,
    need_number,
)

DEFAULTS: dict[str, dict[str, Any]] = {
    'surrogate': {'ssm_expand': 1.0, 'scan_steps': 8},
    'distill': {'total_iter': 2000, 'lr': 1e-3, 'distance': 'mse', 'normalize': True, 'print_freq': 100},
    'search': {'lambda': 0.02, 'proxy': 'blocks', 'granularity': 'stage', 'strategy': 'beam', 'beam': 2,
               'max_evals': None, 'val_images': 8, 'finetune': 3, 'finetune_at': None},
    'latency': {'size': 256, 'rounds': 20, 'threads': 1},
}
"""Each sub-block's keys and their defaults."""


def hybrid_options(opt: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``hybrid:`` block of ``opt`` checked, with the defaults filled in."""
    block = need_dict(opt, '', 'hybrid', example='hybrid: {distill: {...}, search: {...}}') or {}
    check_keys(block, 'hybrid', DEFAULTS)
    out = {}
    for name, defaults in DEFAULTS.items():
        given = need_dict(block, 'hybrid', name) or {}
        check_keys(given, f'hybrid.{name}', defaults)
        out[name] = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    d, q, t = (out[k] for k in ('distill', 'search', 'latency'))
    need_int(d, 'hybrid.distill', 'total_iter', 1, example='2000')
    need_number(d, 'hybrid.distill', 'lr', above=True, example='1.0e-3')
    need_choice(d, 'hybrid.distill', 'distance', ('mse', 'l1'))
    need_bool(d, 'hybrid.distill', 'normalize')
    need_int(d, 'hybrid.distill', 'print_freq', 1, example='100')
    need_number(q, 'hybrid.search', 'lambda', example='0.02')
    need_choice(q, 'hybrid.search', 'proxy', ('blocks', 'feature_size'))
    need_choice(q, 'hybrid.search', 'granularity', ('stage', 'block'))
    need_choice(q, 'hybrid.search', 'strategy', ('beam', 'exhaustive'))
    need_int(q, 'hybrid.search', 'beam', 1, example='2')
    need_int(q, 'hybrid.search', 'max_evals', 1, example='40')
    need_int(q, 'hybrid.search', 'val_images', 1, example='8')
    need_int(q, 'hybrid.search', 'finetune', 0, example='3')
    at = q['finetune_at']
    if at is not None and not (isinstance(at, list) and at and all(is_number(c) and c >= 0 for c in at)):
        raise OptionsError('hybrid.search.finetune_at', 'must be a list of proxy costs >= 0', at,
                           'Write e.g. finetune_at: [0, 2.5, 6], or ~ to spread search.finetune points.')
    need_int(t, 'hybrid.latency', 'size', 8, example='256')
    need_int(t, 'hybrid.latency', 'rounds', 1, example='20')
    need_int(t, 'hybrid.latency', 'threads', 1, example='1')
    return out
