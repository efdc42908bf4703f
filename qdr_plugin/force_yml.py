"""basicsr's ``--force_yml`` semantics, applied to the parsed options before the check."""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from basicsr.utils.options import _postprocess_yml_value

from qdr_plugin.option_rules import OptionsError, did_you_mean


def apply_force_yml(opt: dict, entries: Iterable[str]) -> dict[str, str]:
    """Apply basicsr's ``--force_yml`` entries (``key:sub=value``) to ``opt`` in place, as its ``parse_options``
    does; returns the key path each entry set (``key.sub``), mapped to the entry.

    basicsr's reading: one ``=`` per entry; the ``:``-separated keys lead through existing blocks (the last one may
    be new, unless it looks like a misspelling of a key already there); the value is converted by basicsr's own
    rules (``~`` / ``none``, ``true`` / ``false``, ``!!float<number>``, unsigned integers and decimals, ``[...]``
    lists; anything else stays a string, ``-1`` and ``1e-3`` too). Where basicsr would crash, or silently write a
    misspelt key, raises :class:`OptionsError` at ``--force_yml``.
    """
    applied = {}
    for entry in entries:
        keys, value = _split_force_yml(entry)
        block = opt
        for depth, key in enumerate(keys[:-1]):
            block = _force_yml_block(block, key, keys[:depth], entry)
        last = keys[-1]
        if not isinstance(block, Mapping):
            raise OptionsError('--force_yml', f"{':'.join(keys[:-1])} is not a block", entry,
                               'Point the keys at a block of key: value pairs.')
        close = difflib.get_close_matches(last, [str(k) for k in block], n=1, cutoff=0.8)
        if last not in block and close:
            raise OptionsError('--force_yml', f'{last!r} is not a key of {":".join(keys[:-1]) or "the top level"}, '
                               'basicsr would add it as a new key', entry, f"Did you mean '{close[0]}'?")
        block[last] = _force_yml_value(value, entry)
        applied['.'.join(keys)] = entry
    return applied


def _split_force_yml(entry: str) -> tuple[list[str], str]:
    """``'a:b=v'`` as basicsr splits it: ``(['a', 'b'], 'v')``."""
    parts = entry.split('=')
    if len(parts) != 2:
        problem = "has no '='" if len(parts) == 1 else "has more than one '=' (basicsr splits at every '=')"
        raise OptionsError('--force_yml', f'the entry {problem}', entry,
                           'Write key:sub=value, e.g. --force_yml train:total_iter=1000.')
    keys = [key for key in parts[0].strip().split(':')]
    if not all(keys) or any('"' in key or '\\' in key for key in keys):
        raise OptionsError('--force_yml', "the key path must be key names separated by ':'", entry,
                           'Write key:sub=value, e.g. --force_yml train:optim_g:lr=!!float2e-4.')
    return keys, parts[1].strip()


def _force_yml_block(block: Any, key: str, above: list[str], entry: str) -> Any:
    """The block ``block[key]`` on the way to the key an entry sets (basicsr would raise ``KeyError`` without it)."""
    where = ':'.join(above) or 'the top level'
    if not isinstance(block, Mapping):
        raise OptionsError('--force_yml', f'{where} is not a block', entry, 'Point the keys at a block.')
    if key not in block:
        raise OptionsError('--force_yml', f'{where} has no key {key!r}', entry,
                           did_you_mean(key, [str(k) for k in block]) or 'Check the key path.')
    return block[key]


def _force_yml_value(value: str, entry: str) -> Any:
    """basicsr's conversion of a ``--force_yml`` value (``_postprocess_yml_value``), its lists read as literals."""
    if value.startswith('['):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise OptionsError('--force_yml', 'the value is not a list basicsr can read', entry,
                               'Write e.g. train:scheduler:milestones=[1000,2000] (quote the entry if it has '
                               'spaces).') from None
    try:
        return _postprocess_yml_value(value)
    except ValueError:
        raise OptionsError('--force_yml', 'the value after !!float is not a number', entry,
                           'Write e.g. train:optim_g:lr=!!float2e-4.') from None


def from_force_yml(error: OptionsError, entry: str) -> OptionsError:
    """``error`` about a value a ``--force_yml`` entry set, saying so (and why a number may have arrived as a
    string)."""
    fix = error.fix
    value = entry.split('=', 1)[1].strip()
    if isinstance(error.value, str) and _looks_numeric(value):
        fix = (f'--force_yml hands {value!r} over as a string (basicsr converts only unsigned numbers): write '
               f'!!float{value} for a float, or set it in the options file.')
    return type(error)(error.key_path, f'{error.problem} (set by --force_yml {entry})', error.value, fix)


def _looks_numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
